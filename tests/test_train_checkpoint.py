"""Checkpoints (:mod:`spgnet.engine.train.checkpoint`): atomic writes, loading weights with
one-line errors, the trained model built from its config."""

from __future__ import annotations

import pytest
import torch

from spgnet.config import resolve
from spgnet.engine.train import checkpoint as ckpt
from spgnet.errors import SpgnetError
from tests.helpers_train import ToyNet, toy_model

pytestmark = pytest.mark.usefixtures("no_tracking")


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"iteration": 1, "model": {"w": torch.ones(2)}})

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError):
        ckpt.save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_load_model_weights_errors_are_one_line_and_name_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    trained = toy_model()
    ckpt.save_checkpoint(path, {"model": {f"module.{k}": v for k, v in trained.state_dict().items()}, "iteration": 3})
    model = ToyNet()
    assert ckpt.load_model_weights(model, path)["iteration"] == 3  # DDP prefix dropped
    torch.testing.assert_close(model.heads[1].weight, trained.heads[1].weight)

    def error(target, **kwargs):
        with pytest.raises(SpgnetError) as info:
            ckpt.load_model_weights(target, path, **kwargs)
        text = str(info.value)
        assert text.startswith(f"{path}: ") and "\n" not in text
        return text

    assert "does not fit experiment 'toy' (missing 'blocks.2.weight'" in error(ToyNet(stages=3), experiment="toy")
    assert "unexpected 'blocks.1.weight'" in error(ToyNet(stages=1))
    assert "'heads.0.weight' is [3, 8, 1, 1], expected [5, 8, 1, 1]" in error(ToyNet(classes=5))
    torch.save({"iteration": 1}, path)
    assert "no 'model' entry" in error(model)
    path.write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in error(model)
    path.unlink()
    assert error(model) == f"{path}: checkpoint not found"


def test_load_trained_model_builds_from_the_config(tmp_path):
    cfg = resolve("t3-spg-sigmoid", "smoke")
    built = []

    def build(model_cfg, device):
        built.append(model_cfg)
        return toy_model()

    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"model": toy_model().state_dict()})
    model = ckpt.load_trained_model(path, cfg, "cpu", build=build)
    assert not model.training and built[0].pretrained is None
    with pytest.raises(SpgnetError, match="none.pt: checkpoint not found"):
        ckpt.load_trained_model(tmp_path / "none.pt", cfg, "cpu", build=build)


def test_a_checkpoint_of_another_network_with_the_same_shapes_is_refused(tmp_path):
    """SPG's sum and sigmoid links have the same weights: evaluating t3-spg-sigmoid with t3-spg-sum's
    checkpoint loaded without a word and scored the wrong network (issue 22)."""
    import dataclasses

    trained = resolve("t3-spg-sum", "smoke")
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"model": toy_model().state_dict(), "config": trained.to_dict()})
    build = lambda model_cfg, device: toy_model()  # noqa: E731 - the weights fit: only the settings differ
    with pytest.raises(SpgnetError, match=r"checkpoint\.pt: trained with model\.link='spg_sum', but experiment "
                                          r"'t3-spg-sigmoid' has model\.link='spg_sigmoid'"):
        ckpt.load_trained_model(path, resolve("t3-spg-sigmoid", "smoke"), "cpu", build=build)
    # the rows that share its training run, another norm layer on this device and no ImageNet files load
    same = dataclasses.replace(trained, model=dataclasses.replace(trained.model, norm="abn", pretrained="/w"))
    assert not ckpt.load_trained_model(path, same, "cpu", build=build).training
    with pytest.raises(SpgnetError, match=r"trained with train\.dataset='cityscapes', but experiment"):
        other_data = dataclasses.replace(trained, train=dataclasses.replace(trained.train, dataset="voc"))
        ckpt.load_trained_model(path, other_data, "cpu", build=build)
