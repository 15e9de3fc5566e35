"""The loss terms (:mod:`spgnet.engine.train.losses`): OHEM (threshold and top-k rules) and the
cross-entropy of each supervised stage of each variant."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from spgnet.config import resolve
from spgnet.engine.train.losses import (ohem_cross_entropy, ohem_mask, segmentation_loss, stage_loss, top_k_cross_entropy,
                                  top_k_mask)
from tests.helpers_train import NUM_CLASSES

pytestmark = pytest.mark.usefixtures("no_tracking")


# --------------------------------------------------------------------------------------------
# OHEM
# --------------------------------------------------------------------------------------------


def _logits_with_true_prob(probs: list[float]):
    """2-class logits [1,2,1,W] whose true class (label 0) has the given probabilities."""
    p = torch.tensor(probs, dtype=torch.float64)
    logit0 = torch.log(p) - torch.log1p(-p)  # sigmoid(logit0 - 0) == p
    logits = torch.stack([logit0, torch.zeros_like(logit0)]).reshape(1, 2, 1, -1)
    target = torch.zeros(1, 1, len(probs), dtype=torch.long)
    return logits, target


def test_ohem_keeps_pixels_below_threshold():
    logits, target = _logits_with_true_prob([0.1, 0.3, 0.5, 0.8, 0.9, 0.95, 0.6])
    target[0, 0, 6] = 255  # ignored, never kept
    keep = ohem_mask(logits, target, threshold=0.7, min_kept=2)
    assert keep[0, 0].tolist() == [True, True, True, False, False, False, False]
    loss = ohem_cross_entropy(logits, target, threshold=0.7, min_kept=2)
    assert loss.item() == pytest.approx(-(math.log(0.1) + math.log(0.3) + math.log(0.5)) / 3, rel=1e-6)


def test_ohem_min_kept_raises_the_threshold():
    logits, target = _logits_with_true_prob([0.1, 0.3, 0.5, 0.8, 0.9, 0.95])
    keep = ohem_mask(logits, target, threshold=0.7, min_kept=5)
    assert keep[0, 0].tolist() == [True, True, True, True, True, False]  # the 5 hardest
    loss = ohem_cross_entropy(logits, target, threshold=0.7, min_kept=5)
    expected = -sum(math.log(p) for p in [0.1, 0.3, 0.5, 0.8, 0.9]) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ohem_keeps_everything_when_min_kept_exceeds_labelled_pixels():
    logits, target = _logits_with_true_prob([0.1, 0.99, 0.999])
    target[0, 0, 0] = 255
    keep = ohem_mask(logits, target, threshold=0.7, min_kept=5)
    assert keep[0, 0].tolist() == [False, True, True]
    assert ohem_cross_entropy(logits, target, 0.7, 5).item() == pytest.approx(
        F.cross_entropy(logits.float(), target, ignore_index=255).item(), rel=1e-6)


def test_ohem_all_ignored_is_zero_with_graph():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), 255)
    loss = ohem_cross_entropy(logits, target, 0.7, 1)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def _tf_deeplab_top_k(logits, target, fraction):
    """TensorFlow DeepLab's hard pixel mining (train_utils.py, top_k_percent_pixels), transcribed:
    k = int(fraction x all pixels), the k largest losses (ignored pixels weigh 0), their sum over
    the number of non-zero ones."""
    losses = F.cross_entropy(logits.double(), target, ignore_index=255, reduction="none").flatten()
    top = torch.topk(losses, int(fraction * losses.numel())).values
    return (top.sum() / (top != 0).sum()).item()


def test_top_k_keeps_the_largest_losses_of_all_pixels_ignored_ones_counted():
    logits, target = _logits_with_true_prob([0.1, 0.3, 0.5, 0.8, 0.9, 0.95, 0.6, 0.05])
    target[0, 0, 6:] = 255  # two ignored pixels (one would be the hardest): never kept
    # 8 pixels, 50%: k = 4 of the 8 pixels, ignored ones counted -> the 4 hardest labelled pixels
    assert top_k_mask(logits, target, 0.5)[0, 0].tolist() == [True, True, True, True, False, False, False, False]
    # 40%: k = int(3.2) = 3
    assert top_k_mask(logits, target, 0.4)[0, 0].tolist() == [True, True, True, False, False, False, False, False]
    loss = top_k_cross_entropy(logits, target, 0.4)
    assert loss.item() == pytest.approx(-(math.log(0.1) + math.log(0.3) + math.log(0.5)) / 3, rel=1e-6)
    for fraction in (0.125, 0.4, 0.5, 0.75, 1.0):
        assert top_k_cross_entropy(logits, target, fraction).item() == pytest.approx(
            _tf_deeplab_top_k(logits, target, fraction), rel=1e-6), fraction


def test_top_k_beyond_the_labelled_pixels_keeps_them_all_and_averages_over_them():
    logits, target = _logits_with_true_prob([0.1, 0.3, 0.5, 0.5])
    target[0, 0, 2:] = 255
    # k = 3 of 4 pixels: the 2 labelled ones and an ignored one (loss 0); the mean is over the 2
    assert top_k_mask(logits, target, 0.75)[0, 0].tolist() == [True, True, False, False]
    assert top_k_cross_entropy(logits, target, 0.75).item() == pytest.approx(
        -(math.log(0.1) + math.log(0.3)) / 2, rel=1e-6)
    # k = 0: nothing kept, a zero loss that keeps the graph
    logits.requires_grad_(True)
    loss = top_k_cross_entropy(logits, target, 0.2)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_ohem_rule_and_scope_settings_choose_the_term():
    t = dataclasses.replace(resolve("t8-r50-ohem", "mini").train, ohem_min_kept=3, ohem_threshold=0.2,
                            ohem_top_k=0.25)
    assert (t.ohem_rule, t.ohem_scope) == ("threshold", "process")  # the defaults
    logits, target = _logits_with_true_prob([0.1, 0.3, 0.5, 0.8, 0.9, 0.95])
    threshold = stage_loss(logits, target, t)
    assert threshold.item() == pytest.approx(ohem_cross_entropy(logits, target, 0.2, 3).item())
    top_k = stage_loss(logits, target, dataclasses.replace(t, ohem_rule="top_k"))
    assert top_k.item() == pytest.approx(-math.log(0.1), rel=1e-6)  # k = int(0.25 x 6) = 1: the hardest pixel
    assert top_k.item() != pytest.approx(threshold.item())
    # one process: the scope changes nothing (the 2-process case: tests/test_distributed.py)
    for rule in ("threshold", "top_k"):
        batch = dataclasses.replace(t, ohem_rule=rule, ohem_scope="batch")
        process = dataclasses.replace(batch, ohem_scope="process")
        assert stage_loss(logits, target, process).item() == stage_loss(logits, target, batch).item()
    assert stage_loss(logits, target, dataclasses.replace(t, ohem=False, ohem_rule="top_k")).item() == pytest.approx(
        F.cross_entropy(logits.float(), target).item())



# --------------------------------------------------------------------------------------------
# Loss terms of each variant
# --------------------------------------------------------------------------------------------


def _outputs(stages: int, requires_grad: bool = True):
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(2, NUM_CLASSES, 5, 5, generator=g).requires_grad_(requires_grad) for _ in range(stages)]
    target = torch.randint(0, NUM_CLASSES, (2, 5, 5), generator=g)
    target[:, 0] = 255
    return {"out": logits[-1], "aux": logits[:-1]}, target


def _ce(logits, target):
    return F.cross_entropy(logits, target, ignore_index=255)


def test_loss_supervised_two_stages():
    t = dataclasses.replace(resolve("t3-spg-sigmoid", "mini").train, aux_weight=0.4)
    outputs, target = _outputs(2)
    total, terms = segmentation_loss(outputs, target, t, supervise=True)
    assert list(terms) == ["stage1", "stage2"]
    assert terms["stage1"].item() == pytest.approx(_ce(outputs["aux"][0], target).item())
    assert terms["stage2"].item() == pytest.approx(_ce(outputs["out"], target).item())
    assert total.item() == pytest.approx(terms["stage2"].item() + 0.4 * terms["stage1"].item())


def test_loss_without_supervision_gives_aux_no_term():
    cfg = resolve("t3-spg-no-supervision", "mini")
    assert cfg.model.supervise is False
    outputs, target = _outputs(2)
    total, terms = segmentation_loss(outputs, target, cfg.train, supervise=cfg.model.supervise)
    assert list(terms) == ["stage2"]
    assert total.item() == pytest.approx(_ce(outputs["out"], target).item())
    total.backward()
    assert outputs["aux"][0].grad is None


def test_loss_one_and_three_stages():
    t = resolve("t3-1stage", "mini").train
    outputs, target = _outputs(1)
    total, terms = segmentation_loss(outputs, target, t)
    assert list(terms) == ["stage1"] and total.item() == pytest.approx(_ce(outputs["out"], target).item())
    outputs, target = _outputs(3)
    total, terms = segmentation_loss(outputs, target, dataclasses.replace(t, aux_weight=1.0))
    assert list(terms) == ["stage1", "stage2", "stage3"]
    assert total.item() == pytest.approx(sum(v.item() for v in terms.values()), rel=1e-6)


def test_loss_ohem_applies_to_every_stage():
    cfg = resolve("t8-r50-ohem", "mini")
    assert cfg.train.ohem is True
    t = dataclasses.replace(cfg.train, ohem_min_kept=10, ohem_threshold=0.7)
    outputs, target = _outputs(2)
    total, terms = segmentation_loss(outputs, target, t)
    for name, logits in (("stage1", outputs["aux"][0]), ("stage2", outputs["out"])):
        assert terms[name].item() == pytest.approx(ohem_cross_entropy(logits, target, 0.7, 10).item())
        assert terms[name].item() != pytest.approx(_ce(logits, target).item())
    assert total.item() == pytest.approx(terms["stage1"].item() * t.aux_weight + terms["stage2"].item())
