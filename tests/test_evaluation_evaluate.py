"""Validation while training (:func:`spgnet.engine.evaluation.evaluate.validation_miou`)."""

from __future__ import annotations

import pytest
import torch

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
