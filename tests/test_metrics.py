"""Confusion matrix / IoU: hand-computed cases and equality with cityscapesscripts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spgnet.engine.evaluation.metrics import ConfusionMatrix, as_percent, iou_from_matrix, mean_iou, summary
from cityscapes_reference import run_cityscapesscripts

NAN = float("nan")


def test_hand_computed_iou_void_and_ignore():
    # 3 classes; 255 = ignore in the target, 9 = a prediction outside the classes (void).
    target = torch.tensor([0, 0, 0, 1, 1, 255, 255, 0])
    pred = torch.tensor([0, 0, 1, 1, 9, 1, 2, 9])
    cm = ConfusionMatrix(3)
    cm.update(target, pred)
    assert cm.mat.tolist() == [[2, 1, 0, 1], [0, 1, 0, 1], [0, 0, 0, 0]]
    iou = cm.iou()
    # class 0: tp 2, fn 2 (one predicted 1, one void), fp 0 -> 2/4
    # class 1: tp 1, fn 1 (void), fp 1 (on a class-0 pixel; the one on ignore does not count) -> 1/3
    # class 2: absent from the ground truth, predicted only on ignore -> NaN, left out of the mean
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(1 / 3) and math.isnan(iou[2])
    assert cm.miou() == pytest.approx((0.5 + 1 / 3) / 2)
    per_class = cm.per_class(["a", "b", "c"])
    assert per_class["a"] == pytest.approx(0.5) and math.isnan(per_class["c"])
    s = summary(cm.mat, ["a", "b", "c"])
    assert s["miou"] == pytest.approx(100 * (0.5 + 1 / 3) / 2) and s["per_class"]["c"] is None


def test_predicted_but_absent_class_scores_zero():
    cm = ConfusionMatrix(2)
    cm.update(np.array([[0, 0]]), np.array([[0, 1]]))  # numpy input works too
    assert cm.iou().tolist() == [0.5, 0.0]
    assert cm.miou() == pytest.approx(0.25)


def test_matches_torchvision_style_square_matrix_and_accumulates():
    g = torch.Generator().manual_seed(0)
    c = 5
    cm = ConfusionMatrix(c)
    square = torch.zeros(c, c, dtype=torch.int64)
    for _ in range(3):
        t = torch.randint(0, c, (7, 9), generator=g)
        p = torch.randint(0, c, (7, 9), generator=g)
        cm.update(t, p)
        square += torch.bincount(c * t.flatten() + p.flatten(), minlength=c * c).reshape(c, c)
    assert torch.equal(cm.mat[:, :c], square) and int(cm.mat[:, c].sum()) == 0
    h = square.double()
    expected = torch.diag(h) / (h.sum(1) + h.sum(0) - torch.diag(h))
    np.testing.assert_allclose(cm.iou(), expected.numpy())
    cm2 = ConfusionMatrix(c)
    cm2.add_matrix(cm.mat)
    assert torch.equal(cm2.mat, cm.mat)


def test_all_ignored_gives_nan():
    cm = ConfusionMatrix(4)
    cm.update(torch.full((3, 3), 255), torch.zeros(3, 3, dtype=torch.long))
    assert cm.num_labelled == 0 and math.isnan(cm.miou())
    assert as_percent(cm.miou()) is None and mean_iou([NAN, NAN]) != mean_iou([NAN, NAN])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        ConfusionMatrix(2).update(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError):
        iou_from_matrix(np.zeros((3, 5)))


# ---------------------------------------------------------------- equality with cityscapesscripts



def fabricate_cityscapes(root: Path, seed: int = 0, n: int = 3, shape=(64, 128)) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """GT (labelIds + 16-bit instanceIds) under root/gtFine/val/<city>/ and labelIds predictions
    under root/results/; returns {key: (gt labelIds, prediction labelIds)}."""
    from cityscapesscripts.helpers.labels import labels

    rng = np.random.default_rng(seed)
    eval_ids = [l.id for l in labels if not l.ignoreInEval]
    train_id, moto_id = 31, 32  # 'train': absent everywhere (NaN); 'motorcycle': only predicted
    gt_ids = [i for i in eval_ids if i not in (train_id, moto_id)] + [0, 4, 5, 29]  # + ignored ids
    pred_ids = [i for i in eval_ids if i != train_id] + [0, 4]  # 0, 4: void predictions
    out = {}
    for k in range(n):
        city = ["aachen", "bremen"][k % 2]
        key = f"{city}_{k:06d}_{19 + k:06d}"
        gt = rng.choice(gt_ids, size=shape).astype(np.uint8)
        gt[: shape[0] // 4] = 7  # a large road area
        pred = gt.copy()
        noise = rng.random(shape) < 0.35
        pred[noise] = rng.choice(pred_ids, size=int(noise.sum()))
        inst = gt.astype(np.uint16)
        inst[gt == 26] = 26000 + k  # one 'car' instance per image
        gt_dir = root / "gtFine" / "val" / city
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(gt_dir / f"{key}_gtFine_labelIds.png")
        Image.fromarray(inst).save(gt_dir / f"{key}_gtFine_instanceIds.png")
        (root / "results").mkdir(exist_ok=True)
        Image.fromarray(pred).save(root / "results" / f"{key}_leftImg8bit.png")
        out[key] = (gt, pred)
    return out


def test_equal_to_cityscapesscripts(tmp_path):
    from spgnet.data.labels import CITYSCAPES_CLASSES, labelid_to_trainid

    pairs = fabricate_cityscapes(tmp_path)
    ref = run_cityscapesscripts(tmp_path)
    cm = ConfusionMatrix(19)
    for gt, pred in pairs.values():
        # the pipeline's own path: labels as train ids (255 ignore), predictions as train ids
        # where void label ids become 255 (a miss, as for cityscapesscripts)
        cm.update(torch.as_tensor(labelid_to_trainid(gt).astype(np.int64)),
                  torch.as_tensor(labelid_to_trainid(pred).astype(np.int64)))
    ours = cm.per_class(CITYSCAPES_CLASSES)
    for name in CITYSCAPES_CLASSES:
        theirs = ref["classScores"][name]
        if math.isnan(theirs):
            assert math.isnan(ours[name]), name
        else:
            assert ours[name] == pytest.approx(theirs, abs=1e-6), name
    assert math.isnan(ours["train"]) and ours["motorcycle"] == 0.0  # the fabricated edge cases
    assert cm.miou() == pytest.approx(ref["averageScoreClasses"], abs=1e-6)
