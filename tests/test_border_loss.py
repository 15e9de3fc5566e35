"""DFN's border supervision (spgnet.engine.train.losses): boundary target, focal loss, the total loss."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from spgnet.config import TrainConfig
from spgnet.engine.train.losses import (BORDER_WEIGHT, IGNORE_INDEX, border_target, cross_entropy,
                                  segmentation_loss, sigmoid_focal_loss)

I = IGNORE_INDEX


def test_border_target_marks_both_sides_of_a_label_change():
    labels = torch.tensor([[0, 0, 0, 1, 1]] * 3)[None]
    assert border_target(labels, radius=1)[0].tolist() == [[0, 0, 1, 1, 0]] * 3
    assert border_target(labels, radius=2)[0].tolist() == [[0, 1, 1, 1, 1]] * 3
    assert border_target(torch.zeros(1, 4, 4, dtype=torch.long), radius=1).sum() == 0  # one class: no border


def test_border_target_ignores_ignored_pixels_and_their_unknown_surroundings():
    labels = torch.tensor([[[0, 0, 0, 0, 1, 1],
                            [0, 0, 0, 0, 1, 1],
                            [0, 0, 0, 0, 1, 1],
                            [I, I, 0, 0, 1, 1]]])
    # ignored -> ignored; next to an ignored pixel with no other label in the window -> ignored
    # (a boundary may hide under it); next to another label -> border, whatever else is near
    assert border_target(labels, radius=1)[0].tolist() == [[0, 0, 0, 1, 1, 0],
                                                          [0, 0, 0, 1, 1, 0],
                                                          [I, I, I, 1, 1, 0],
                                                          [I, I, I, 1, 1, 0]]
    # an ignored band between two classes (VOC's object outlines): once the window spans it, the
    # labels on either side see each other across it
    band = torch.tensor([[[0, 0, I, 2, 2]]])
    assert border_target(band, radius=1)[0].tolist() == [[0, I, I, I, 0]]
    assert border_target(band, radius=2)[0].tolist() == [[I, 1, I, 1, I]]


def _focal_by_hand(x: float, y: int, gamma: float = 2.0, alpha: float = 0.25) -> float:
    p = 1.0 / (1.0 + math.exp(-x))
    p_t, alpha_t = (p, alpha) if y == 1 else (1.0 - p, 1.0 - alpha)
    return -alpha_t * (1.0 - p_t) ** gamma * math.log(p_t)


def test_focal_loss_values_match_a_hand_computation():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])  # [N=1, 1, 2, 2]
    target = torch.tensor([[[1, 0], [0, I]]])
    expected = (_focal_by_hand(0.0, 1) + _focal_by_hand(2.0, 0) + _focal_by_hand(-1.0, 0)) / 3
    assert expected == pytest.approx((0.25 * 0.25 * math.log(2) + 1.2375580 + 0.0169940) / 3, rel=1e-5)
    assert sigmoid_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # gamma 0, alpha 1/2: half the binary cross-entropy
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.flatten()[:3], torch.tensor([1.0, 0.0, 0.0]))
    assert sigmoid_focal_loss(logits, target, gamma=0.0, alpha=0.5).item() == pytest.approx(0.5 * bce.item(), rel=1e-6)


def test_focal_loss_with_every_pixel_ignored_is_zero_with_graph():
    logits = torch.randn(1, 1, 3, 3, requires_grad=True)
    loss = sigmoid_focal_loss(logits, torch.full((1, 3, 3), I))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def _outputs(border: bool, classes: int = 3, size: int = 8):
    g = torch.Generator().manual_seed(0)
    out = {"out": torch.randn(2, classes, size, size, generator=g),
           "aux": [torch.randn(2, classes, size, size, generator=g) for _ in range(2)]}
    if border:
        out["border"] = [torch.randn(2, 1, size, size, generator=g) for _ in range(4)]
    return out


def test_loss_without_border_output_is_unchanged():
    """The other models (no "border" entry): CE(out) + aux_weight * sum CE(aux), nothing else."""
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    t = dataclasses.replace(TrainConfig(), aux_weight=0.4)
    out = _outputs(border=False)
    total, terms = segmentation_loss(out, target, t)
    assert list(terms) == ["stage1", "stage2", "stage3"]
    expected = cross_entropy(out["out"], target) + 0.4 * sum(cross_entropy(a, target) for a in out["aux"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_border_terms_add_lambda_times_the_focal_losses():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, :, 4:] = 1
    target[1, :2] = I
    t = TrainConfig()
    without, _ = segmentation_loss(_outputs(border=False), target, t)
    out = _outputs(border=True)
    total, terms = segmentation_loss(out, target, t)
    assert list(terms) == ["stage1", "stage2", "stage3", "border1", "border2", "border3", "border4"]
    edges = border_target(target)
    for k, logits in enumerate(out["border"]):
        assert terms[f"border{k + 1}"].item() == pytest.approx(sigmoid_focal_loss(logits, edges).item())
    border = sum(terms[f"border{k}"] for k in range(1, 5))
    assert BORDER_WEIGHT == 0.1  # DFN's lambda (TorchSeg: aux_loss_alpha)
    assert total.item() == pytest.approx(without.item() + 0.1 * border.item(), rel=1e-6)
    # supervise=False drops the earlier stages' terms, not the border's (their only use)
    _, unsupervised = segmentation_loss(out, target, t, supervise=False)
    assert list(unsupervised) == ["stage3", "border1", "border2", "border3", "border4"]
