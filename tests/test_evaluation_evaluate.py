"""spgnet.engine.evaluation.evaluate: validation while training (:func:`validation_miou`), the
evaluate loop and ``spgnet evaluate`` end to end on a toy model whose right answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from spgnet.engine.evaluation import evaluate as ev
from spgnet.engine.evaluation.inference import infer_labels, infer_probs
from spgnet.errors import SpgnetError
from tests.helpers_inference import PixelModel
from tests.helpers_train import ToySet, toy_cfg, toy_model

pytestmark = pytest.mark.usefixtures("no_tracking")


def test_validation_miou_scores_the_val_split(monkeypatch):
    from spgnet import data
    from spgnet.engine.evaluation.evaluate import evaluate_model, validation_miou

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            item = ToySet(n=2)[index]
            return {**item, "label": item["label"].clamp(max=255)}

    splits = []
    monkeypatch.setattr(data, "build_dataset", lambda name, root, split, **kw: splits.append(split) or Items())
    cfg = toy_cfg()
    model = toy_model().eval()
    expected = evaluate_model(model, Items(), class_names=["a", "b", "c"], strategy=cfg.eval.strategy,
                              crop=cfg.train.crop)["miou"]
    monkeypatch.setattr("spgnet.engine.evaluation.evaluate._class_names", lambda cfg: ["a", "b", "c"])
    assert validation_miou(model, cfg, torch.device("cpu")) == pytest.approx(expected)
    assert splits == ["val"]


# ---------------------------------------------------------------- the evaluate loop


class ToyDataset(torch.utils.data.Dataset):
    """Labels are what PixelModel predicts, except one corrupted block and an ignored border."""

    def __init__(self, model, n=3, shape=(24, 40), labelled=True):
        g = torch.Generator().manual_seed(3)
        self.items = []
        for k in range(n):
            image = torch.randn(3, *shape, generator=g)
            with torch.no_grad():
                label = model(image[None])["out"].argmax(1)[0]
            if labelled:
                label[:4, :4] = (label[:4, :4] + 1) % 3  # wrong on 16 pixels
                label[-2:] = 255
            else:
                label[:] = 255
            name = f"aachen_{k:06d}_{19 + k:06d}"
            self.items.append({"image": image, "label": label, "name": name, "path": f"{name}_leftImg8bit.png"})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_evaluate_model_counts_and_writes_labelids(tmp_path):
    model = PixelModel(3).eval()
    data = ToyDataset(model)
    names = ["road", "sidewalk", "building"]
    res = ev.evaluate_model(model, data, class_names=names, predictions=tmp_path / "pred")
    mat = np.array(res["matrix"])
    assert mat.sum() == 3 * 22 * 40 and np.trace(mat[:, :3]) == mat.sum() - 3 * 16
    assert 0 < res["miou"] < 100 and set(res["per_class"]) == set(names) and res["num_images"] == 3
    files = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert files == [f"aachen_{k:06d}_{19 + k:06d}_leftImg8bit.png" for k in range(3)]
    png = np.array(Image.open(tmp_path / "pred" / files[0]))
    pred = infer_labels(model, data[0]["image"]).numpy()
    assert np.array_equal(png, np.array([7, 8, 11])[pred])  # train ids 0, 1, 2 -> label ids


def _args(tmp_path, experiment="t12-ap", **extra):
    import argparse

    base = dict(experiment=experiment, profile="mini", data_root=None, checkpoint=str(tmp_path / "checkpoint.pt"),
                out=str(tmp_path / "metrics" / "val.json"), strategy=None, predictions=None)
    base.update(extra)
    return argparse.Namespace(**base)


@pytest.fixture
def toy_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("SPGNET_TRACKING", "0")
    model = PixelModel(19)
    torch.save({"model": model.state_dict(), "iteration": 1}, tmp_path / "checkpoint.pt")
    holder = {"data": ToyDataset(model, n=2)}
    monkeypatch.setattr(ev, "_build_model", lambda cfg, device: PixelModel(19))
    monkeypatch.setattr(ev, "_build_dataset", lambda cfg: holder["data"])
    return holder


def test_evaluate_main_writes_metrics_json(tmp_path, toy_pipeline):
    assert ev.main(_args(tmp_path, strategy="TILED")) == 0
    out = json.loads((tmp_path / "metrics" / "val.json").read_text())
    assert set(out) >= {"experiment", "profile", "strategy", "scales", "flip", "split", "miou", "per_class",
                        "num_images", "seconds_per_image"}
    assert out["experiment"] == "t12-ap" and out["strategy"] == "TILED" and out["split"] == "val"
    assert out["num_images"] == 2 and len(out["per_class"]) == 19 and out["per_class"]["road"] is not None
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["val.confusion.json", "val.confusion.png", "val.json"]  # no temporary left


def test_evaluate_main_passes_eval_pad_to(tmp_path, toy_pipeline, monkeypatch):
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("pad_to"))
        return infer_probs(*args, **kwargs)

    monkeypatch.setattr(ev, "infer_probs", spy)
    assert ev.main(_args(tmp_path, set=["eval.pad_to=64"])) == 0
    assert seen == [64, 64]
    seen.clear()
    assert ev.main(_args(tmp_path)) == 0
    assert seen == [None, None]  # the default: the image as it is


def test_evaluate_main_unlabelled_split(tmp_path, toy_pipeline, capsys):
    model = PixelModel(19)
    toy_pipeline["data"] = ToyDataset(model, n=2, labelled=False)
    assert ev.main(_args(tmp_path, predictions=str(tmp_path / "sub"))) == 0
    out = json.loads((tmp_path / "metrics" / "val.json").read_text())
    assert out["miou"] is None and "no labels" in out["note"] and "no labels" in capsys.readouterr().err
    assert len(list((tmp_path / "sub").glob("*_leftImg8bit.png"))) == 2


def test_checkpoint_errors_name_the_file(tmp_path, toy_pipeline):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SpgnetError, match="checkpoint.pt"):
        ev.main(_args(tmp_path))
    (tmp_path / "checkpoint.pt").unlink()
    with pytest.raises(SpgnetError, match="checkpoint.pt: checkpoint not found"):
        ev.main(_args(tmp_path))
    torch.save({"model": nn.Conv2d(3, 2, 1).state_dict()}, tmp_path / "checkpoint.pt")
    with pytest.raises(SpgnetError, match="does not fit"):
        ev.main(_args(tmp_path))


def test_evaluate_builds_the_network_without_the_imagenet_file_the_run_was_trained_from(tmp_path, toy_pipeline, monkeypatch):
    """The checkpoint replaces the ImageNet weights, so a missing ImageNet file must not matter."""
    import dataclasses

    original = ev.config_from_args

    def config_with_imagenet_file(*args, **kwargs):
        cfg = original(*args, **kwargs)
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=str(tmp_path / "gone")))

    built = []
    monkeypatch.setattr(ev, "config_from_args", config_with_imagenet_file)
    monkeypatch.setattr(ev, "_build_model", lambda model_cfg, device: built.append(model_cfg) or PixelModel(19))
    assert ev.main(_args(tmp_path)) == 0
    assert [m.pretrained for m in built] == [None]
