"""spgnet export: ONNX (onnxruntime) and torch.export programs agree with PyTorch on two input sizes."""

from __future__ import annotations

import pytest
import torch

import spgnet
from spgnet import cli
from spgnet.serving.export import check_sizes, export, min_side


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("SPGNET_TRACKING", "0")


@pytest.mark.parametrize("fmt,suffix", [pytest.param("onnx", "onnx", marks=pytest.mark.slow), ("exported-program", "pt2")])
def test_export_cli_checks_two_sizes(fmt, suffix, tiny_project, tmp_path, capsys, one_thread):
    out = tmp_path / f"model.{suffix}"
    status = cli.main(["export", "t3-1stage", "--checkpoint", str(tiny_project / "checkpoint.pt"),
                       "--format", fmt, "--out", str(out)])
    assert status == 0 and out.is_file()
    line = capsys.readouterr().out
    assert "max |logit difference| against PyTorch" in line and "97x97" in line
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_exported_graphs_match_pytorch_below_1e_3(tiny_project, tmp_path, one_thread):
    model = spgnet.load_model("t3-1stage", tiny_project / "checkpoint.pt", device="cpu")
    side = min_side("AP", model.spgnet_settings.crop)
    sizes = check_sizes((side, side))
    assert len(set(sizes)) == 2 and sizes[1][0] != sizes[1][1]
    for fmt in ("onnx", "exported-program"):
        differences = export(model, fmt, tmp_path / f"m-{fmt}", size=(side, side))
        assert len(differences) == 2 and max(differences) < 1e-3, (fmt, differences)

    # reloaded by the standard readers, the graphs run at a third size too
    import numpy as np
    import onnxruntime

    from spgnet.serving.export import LogitsModel

    x = torch.randn(1, 3, side + 32, side + 3)
    with torch.inference_mode():
        expected = LogitsModel(model)(x).numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "m-onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-3
    with open(tmp_path / "m-exported-program", "rb") as handle:
        program = torch.export.load(handle).module()
    assert torch.allclose(program(x), torch.from_numpy(expected), atol=1e-3)


def test_export_refuses_a_graph_that_disagrees(tmp_path, monkeypatch):
    from spgnet.serving import export as export_module
    from spgnet.errors import SpgnetError

    model = torch.nn.Conv2d(3, 4, 3, padding=1).eval()  # any network giving logits
    real = export_module.program_runner
    assert max(export(model, "exported-program", tmp_path / "good.pt2", size=(8, 9))) < 1e-6
    monkeypatch.setattr(export_module, "program_runner", lambda path: (lambda x: real(path)(x) + 0.01))
    with pytest.raises(SpgnetError, match="differs from PyTorch"):
        export(model, "exported-program", tmp_path / "bad.pt2", size=(8, 9))
    assert [p.name for p in tmp_path.iterdir()] == ["good.pt2"]
