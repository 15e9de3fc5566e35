"""spgnet predict, spgnet.load_model / spgnet.predict, hubconf.py, and evaluate's macc/aacc/confusion files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import spgnet
from spgnet import cli
from spgnet.data.labels import trainid_to_labelid
from spgnet.engine.evaluation.metrics import class_accuracy, pixel_accuracy
from spgnet.serving.predict_files import palette

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("SPGNET_TRACKING", "0")


@pytest.fixture(scope="module")
def model(tiny_project, one_thread):
    return spgnet.load_model("t3-1stage", tiny_project / "checkpoint.pt")


def _val_images(root: Path) -> list[Path]:
    return sorted((root / "data/synthetic-smoke/cityscapes/leftImg8bit/val").rglob("*.png"))


@pytest.fixture(scope="module")
def evaluated(tiny_project, one_thread, tmp_path_factory):
    """``spgnet evaluate --predictions`` and ``spgnet predict`` on the same two val images."""
    from spgnet.config import paths as config

    out = tmp_path_factory.mktemp("evaluated")
    mp = pytest.MonkeyPatch()
    mp.setenv("SPGNET_TRACKING", "0")
    mp.setattr(config, "PROJECT_ROOT", tiny_project)  # the smoke profile's data root is relative to it
    try:
        status = cli.main(["evaluate", "t3-1stage", "--profile", "smoke", "--checkpoint",
                           str(tiny_project / "checkpoint.pt"), "--out", str(out / "ss.json"),
                           "--predictions", str(out / "evaluate")])
    finally:
        mp.undo()
    assert status == 0
    status = cli.main(["predict", "t3-1stage", "--checkpoint", str(tiny_project / "checkpoint.pt"),
                       "--input", str(tiny_project / "data/synthetic-smoke/cityscapes/leftImg8bit/val"),
                       "--out", str(out / "predict"), "--overlay", "--opacity", "0.4"])
    assert status == 0
    return out


def test_predict_labelids_are_byte_identical_to_evaluate_predictions(evaluated, tiny_project):
    images = _val_images(tiny_project)
    assert len(images) == 2
    distinct = set()
    for image in images:
        evaluated_png = evaluated / "evaluate" / image.name
        predicted_png = evaluated / "predict" / image.parent.name / f"{image.stem}_labelIds.png"
        assert predicted_png.read_bytes() == evaluated_png.read_bytes()
        distinct |= set(np.unique(np.array(Image.open(predicted_png))).tolist())
    assert len(distinct) > 1  # the comparison is not between two constant maps


def test_predict_writes_colours_and_overlay_of_the_same_classes(evaluated, tiny_project, model):
    image = _val_images(tiny_project)[0]
    folder = evaluated / "predict" / image.parent.name
    ids = spgnet.predict(model, image)
    label_ids = np.array(Image.open(folder / f"{image.stem}_labelIds.png"))
    assert np.array_equal(label_ids, trainid_to_labelid(ids))
    color = Image.open(folder / f"{image.stem}_color.png")
    assert color.mode == "P"
    colours = np.array(color.convert("RGB"))
    assert np.array_equal(colours, palette("cityscapes")[ids])
    road = palette("cityscapes")[0]
    assert road.tolist() == [128, 64, 128]  # cityscapesscripts' road colour
    overlay = np.array(Image.open(folder / f"{image.stem}_overlay.png"), dtype=np.float64)
    picture = np.array(Image.open(image).convert("RGB"), dtype=np.float64)
    expected = picture * 0.6 + colours * 0.4
    assert np.abs(overlay - expected).max() <= 1.0
    leftovers = [p for p in (evaluated / "predict").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_evaluate_writes_macc_aacc_and_the_confusion_matrix(evaluated, tiny_project):
    metrics = json.loads((evaluated / "ss.json").read_text())
    confusion = json.loads((evaluated / "ss.confusion.json").read_text())
    matrix = np.array(confusion["matrix"])
    assert matrix.shape == (19, 20) and confusion["columns"][-1] == "void"
    assert confusion["rows"] == list(metrics["per_class"])
    gt = matrix.sum(axis=1)
    present = gt > 0
    assert metrics["aacc"] == pytest.approx(100.0 * np.trace(matrix[:, :19]) / matrix.sum())
    assert metrics["macc"] == pytest.approx(100.0 * np.mean(np.diag(matrix)[present] / gt[present]))
    assert metrics["aacc"] == pytest.approx(100.0 * pixel_accuracy(matrix))
    from spgnet.data.labels import labelid_to_trainid

    labels = sorted((tiny_project / "data/synthetic-smoke/cityscapes/gtFine/val").rglob("*_labelIds.png"))
    labelled = sum(int((labelid_to_trainid(np.array(Image.open(p))) != 255).sum()) for p in labels)
    assert len(labels) == 2 and matrix.sum() == labelled  # every labelled pixel counted once
    png = Image.open(evaluated / "ss.confusion.png")
    assert png.format == "PNG" and png.width > 200


def test_metrics_accuracies_by_hand():
    # rows: ground truth of 2 classes; columns: predicted 0, 1, void
    mat = np.array([[3, 1, 0], [2, 2, 4]])
    assert class_accuracy(mat).tolist() == [0.75, 0.25]
    assert pixel_accuracy(mat) == pytest.approx(5 / 12)
    from spgnet.engine.evaluation.metrics import ConfusionMatrix

    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([0, 0, 255, 1]), torch.tensor([0, 1, 2, 1]))
    assert cm.macc() == pytest.approx((0.5 + 1.0) / 2)  # class 2 absent: skipped
    assert cm.aacc() == pytest.approx(2 / 3)
    assert np.isnan(pixel_accuracy(np.zeros((2, 3))))


def test_api_shapes_dtypes_and_probabilities(model, tiny_project):
    image = _val_images(tiny_project)[1]
    ids, probs = spgnet.predict(model, image, probabilities=True)
    assert ids.dtype == np.uint8 and ids.shape == (64, 128)
    assert probs.dtype == np.float32 and probs.shape == (19, 64, 128)
    assert np.array_equal(probs.argmax(0), ids)
    assert np.allclose(probs.sum(0), 1.0, atol=1e-5)
    assert not model.training and model.spgnet_folded_norms > 0
    assert model.spgnet_settings.strategy == "AP" and model.spgnet_settings.crop == 97  # the smoke profile's
    flipped = spgnet.predict(model, image, flip=True, scales=[0.75, 1.0])
    assert flipped.shape == ids.shape and not np.array_equal(flipped, ids)


def test_import_spgnet_stays_torch_free():
    code = "import sys, spgnet; spgnet.load_model; spgnet.predict; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_torch_hub_local_load(tiny_project, model):
    hub_model = torch.hub.load(str(REPO), "spgnet", source="local", experiment="t3-1stage",
                               checkpoint=str(tiny_project / "checkpoint.pt"), trust_repo=True)
    image = _val_images(tiny_project)[0]
    assert np.array_equal(spgnet.predict(hub_model, image), spgnet.predict(model, image))


def test_palette_street_image_and_other_modes(tiny_project, model, tmp_path):
    source = Image.open(_val_images(tiny_project)[0]).convert("RGB")
    pictures = tmp_path / "in"
    pictures.mkdir()
    source.quantize(colors=256).save(pictures / "street_palette.png")  # a Cityscapes street image as a palette PNG
    source.convert("L").save(pictures / "gray.png")
    source.convert("RGBA").save(pictures / "rgba.png")
    source.convert("CMYK").save(pictures / "cmyk.jpg", quality=95)
    Image.fromarray((np.array(source.convert("L"), dtype=np.uint16) * 257)).save(pictures / "gray16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    source.save(pictures / "rotated.jpg", exif=exif, quality=95)
    (pictures / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "spgnet", "predict", "t3-1stage", "--checkpoint",
                           str(tiny_project / "checkpoint.pt"), "--input", str(pictures / "*.png"),
                           str(pictures / "*.jpg"), "--out", str(out)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO), SPGNET_TRACKING="0"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "broken.png" in proc.stderr and proc.stderr.count("cannot read") == 1
    for stem in ("street_palette", "gray", "rgba", "cmyk", "gray16", "rotated"):
        ids = np.array(Image.open(out / f"{stem}_labelIds.png"))
        expected = (128, 64) if stem == "rotated" else (64, 128)  # EXIF orientation applied
        assert ids.shape == expected, stem
    assert not (out / "broken_labelIds.png").exists()
    palette_ids = np.array(Image.open(out / "street_palette_labelIds.png"))
    as_rgb = np.asarray(Image.open(pictures / "street_palette.png").convert("RGB"))
    assert np.array_equal(palette_ids, trainid_to_labelid(spgnet.predict(model, as_rgb)))


def test_missing_input_is_listed_and_fails(tiny_project, tmp_path, capsys):
    image = _val_images(tiny_project)[0]
    status = cli.main(["predict", "t3-1stage", "--checkpoint", str(tiny_project / "checkpoint.pt"),
                       "--input", str(image), str(tmp_path / "nothing-*.png"), "--out", str(tmp_path / "out")])
    assert status == 1
    assert "nothing-*.png" in capsys.readouterr().err
    assert (tmp_path / "out" / f"{image.stem}_labelIds.png").is_file()


def test_bad_opacity_and_unknown_experiment_are_one_line_errors(tiny_project, tmp_path, capsys):
    base = ["predict", "--checkpoint", str(tiny_project / "checkpoint.pt"), "--input", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli.main(base[:1] + ["t3-1stage"] + base[1:] + ["--opacity", "2"]) == 2
    assert cli.main(base[:1] + ["no-such-row"] + base[1:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--opacity" in err[0]


# ---------------------------------------------------------------- memory bounded by --max-side (issue 22, case 4)


def test_a_picture_above_max_side_is_run_smaller_and_written_at_its_own_size(tiny_project, model, tmp_path, capsys):
    from spgnet.serving.predict_files import predict_at_most

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    big = Image.open(_val_images(tiny_project)[0]).convert("RGB").resize((512, 256), Image.Resampling.BILINEAR)
    big.save(pictures / "big.png")
    status = cli.main(["predict", "t3-1stage", "--checkpoint", str(tiny_project / "checkpoint.pt"), "--input",
                       str(pictures), "--out", str(tmp_path / "out"), "--max-side", "128"])
    out = capsys.readouterr().out
    assert status == 0 and "1 of 1 pictures" in out and "(1 run at 128 px on their longer side)" in out
    ids = np.array(Image.open(tmp_path / "out" / "big_labelIds.png"))
    assert ids.shape == (256, 512)
    expected, resized = predict_at_most(model, np.asarray(big), 128)
    assert resized and np.array_equal(ids, trainid_to_labelid(expected))
    small = spgnet.predict(model, np.asarray(big.resize((128, 64), Image.Resampling.BILINEAR, reducing_gap=3.0)))
    assert np.array_equal(expected[::4, ::4], small)  # the class map of the smaller picture, enlarged


def test_pictures_within_max_side_run_as_they_are(tiny_project, model):
    from spgnet.serving.predict_files import predict_at_most

    rgb = np.asarray(Image.open(_val_images(tiny_project)[0]).convert("RGB"))
    ids, resized = predict_at_most(model, rgb, 128)
    assert not resized and np.array_equal(ids, spgnet.predict(model, rgb))


def test_a_picture_that_runs_out_of_memory_is_listed_and_the_others_are_written(tiny_project, tmp_path, capsys,
                                                                                monkeypatch):
    from spgnet.serving import predictor

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for name, size in (("a-fits.png", (128, 64)), ("b-huge.png", (200, 100)), ("c-fits.png", (128, 64))):
        Image.new("RGB", size, (90, 120, 30)).save(pictures / name)
    real = predictor.predict

    def tight_memory(model, image, **kwargs):
        if np.asarray(image).shape[1] > 128:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] err == 0. DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 1228800000 bytes. Error code 12 (Cannot allocate memory)")
        return real(model, image, **kwargs)

    monkeypatch.setattr(predictor, "predict", tight_memory)
    status = cli.main(["predict", "t3-1stage", "--checkpoint", str(tiny_project / "checkpoint.pt"), "--input",
                       str(pictures), "--out", str(tmp_path / "out"), "--max-side", "0"])
    captured = capsys.readouterr()
    assert status == 1 and "2 of 3 pictures" in captured.out
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"spgnet predict: {pictures / 'b-huge.png'}: out of memory at 200x100 px (RuntimeError: ")
    assert line.endswith("a smaller --max-side than none needs less")
    assert sorted(p.name for p in (tmp_path / "out").glob("*_labelIds.png")) == ["a-fits_labelIds.png",
                                                                                 "c-fits_labelIds.png"]


def test_a_negative_max_side_is_one_line(tiny_project, tmp_path, capsys):
    image = _val_images(tiny_project)[0]
    status = cli.main(["predict", "t3-1stage", "--checkpoint", str(tiny_project / "checkpoint.pt"), "--input",
                       str(image), "--out", str(tmp_path / "out"), "--max-side", "-5"])
    assert status == 2 and capsys.readouterr().err.strip() == "spgnet predict: error: --max-side must be 0 (no limit) or a number of pixels, got -5"
    assert not (tmp_path / "out").exists()
