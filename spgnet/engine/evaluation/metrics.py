"""Confusion matrix, per-class IoU and mIoU, computed exactly as cityscapesscripts does.

The matrix is accumulated with ``torch.bincount`` (like torchvision's
``references/segmentation/utils.py:ConfusionMatrix``), but it has one extra *column*: rows are
the ``C`` evaluated classes of the ground truth, columns are the ``C`` predicted classes plus a
"void" column for every prediction outside ``0..C-1`` (255, an ignored Cityscapes labelId, ...).
Ground-truth pixels outside ``0..C-1`` (255 = ignore) are dropped. This reproduces
``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`` to the last bit:

* ``tp = M[c, c]``;
* ``fn = row c summed over all columns - tp`` -- a void prediction on a class-``c`` pixel is a miss;
* ``fp = column c summed over the non-ignored ground-truth rows - tp`` -- predictions on ignored
  ground truth never count;
* ``IoU_c = tp / (tp + fp + fn)``, NaN when the denominator is 0 (the class is absent from the
  ground truth and never predicted on a labelled pixel); mIoU is the mean over the non-NaN
  classes (cityscapesscripts' ``getScoreAverage``), NaN when every class is NaN.

Functions here return fractions in [0, 1]; the JSON files written by ``spgnet evaluate`` and
``spgnet score --json`` report them in percent (:func:`as_percent`), the unit of the paper and of
``params/experiments.yaml``, with NaN written as ``null``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

class ConfusionMatrix:
    """``[C, C + 1]`` int64 counts: ground truth (rows) x prediction (columns, last = void)."""

    def __init__(self, num_classes: int, device: str | torch.device = "cpu"):
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        self.num_classes = int(num_classes)
        self.mat = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.mat.zero_()

    @torch.no_grad()
    def update(self, target, pred) -> None:
        """Add one batch: ``target`` and ``pred`` integer arrays/tensors of the same shape.

        Target values outside ``0..C-1`` (255) are ignored; prediction values outside ``0..C-1``
        count as void (a miss for the ground-truth class).
        """
        target = torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target)
        pred = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred)
        if target.shape != pred.shape:
            raise ValueError(f"target shape {tuple(target.shape)} != prediction shape {tuple(pred.shape)}")
        c = self.num_classes
        target = target.to(self.mat.device, torch.int64).reshape(-1)
        pred = pred.to(self.mat.device, torch.int64).reshape(-1)
        keep = (target >= 0) & (target < c)
        target, pred = target[keep], pred[keep]
        pred = torch.where((pred >= 0) & (pred < c), pred, torch.full_like(pred, c))
        counts = torch.bincount(target * (c + 1) + pred, minlength=c * (c + 1))
        self.mat += counts.reshape(c, c + 1)

    def add_matrix(self, mat) -> None:
        """Add another ``[C, C + 1]`` count matrix (e.g. one computed by :mod:`spgnet.engine.evaluation.score`)."""
        self.mat += torch.as_tensor(mat, dtype=torch.int64, device=self.mat.device)

    def reduce_from_all_processes(self) -> None:
        """Sum the matrix over a ``torch.distributed`` process group, if one is initialised."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.all_reduce(self.mat)

    @property
    def num_labelled(self) -> int:
        """Ground-truth pixels that were evaluated (not ignored)."""
        return int(self.mat.sum())

    def iou(self) -> np.ndarray:
        return iou_from_matrix(self.mat)

    def miou(self) -> float:
        return mean_iou(self.iou())

    def per_class(self, names: Sequence[str]) -> dict[str, float]:
        return per_class_iou(self.iou(), names)

    def macc(self) -> float:
        """Mean class accuracy (mmsegmentation's ``mAcc``), a fraction."""
        return mean_accuracy(self.mat)

    def aacc(self) -> float:
        """Pixel accuracy (mmsegmentation's ``aAcc``), a fraction."""
        return pixel_accuracy(self.mat)


def iou_from_matrix(mat) -> np.ndarray:
    """Per-class IoU (float64, NaN where undefined) of a ``[C, C + 1]`` (or ``[C, C]``) matrix."""
    m = torch.as_tensor(mat).detach().cpu().to(torch.float64).numpy()
    c = m.shape[0]
    if m.shape[1] not in (c, c + 1):
        raise ValueError(f"confusion matrix must be [C, C] or [C, C+1], got {m.shape}")
    tp = np.diag(m[:, :c])
    gt = m.sum(axis=1)  # tp + fn (void predictions included)
    predicted = m[:, :c].sum(axis=0)  # tp + fp over labelled pixels
    denom = gt + predicted - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)
    return iou


def _as_matrix(mat) -> np.ndarray:
    m = torch.as_tensor(mat).detach().cpu().to(torch.float64).numpy()
    if m.ndim != 2 or m.shape[1] not in (m.shape[0], m.shape[0] + 1):
        raise ValueError(f"confusion matrix must be [C, C] or [C, C+1], got {m.shape}")
    return m


def class_accuracy(mat) -> np.ndarray:
    """Per-class accuracy ``tp / ground-truth pixels`` (float64 ``[C]``, NaN for absent classes)."""
    m = _as_matrix(mat)
    tp = np.diag(m[:, :m.shape[0]])
    gt = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gt > 0, tp / np.where(gt > 0, gt, 1.0), np.nan)


def mean_accuracy(mat) -> float:
    """Mean of :func:`class_accuracy` over the classes present in the ground truth; NaN if none."""
    return mean_iou(class_accuracy(mat))  # the same NaN-skipping mean


def pixel_accuracy(mat) -> float:
    """``sum(tp) / labelled pixels`` of a ``[C, C + 1]`` (or ``[C, C]``) matrix; NaN if none."""
    m = _as_matrix(mat)
    total = m.sum()
    return float(np.trace(m[:, :m.shape[0]]) / total) if total > 0 else float("nan")


def mean_iou(iou: Sequence[float]) -> float:
    """Mean of the non-NaN entries (cityscapesscripts' ``getScoreAverage``); NaN if none."""
    values = [float(v) for v in iou if not math.isnan(float(v))]
    return sum(values) / len(values) if values else float("nan")


def per_class_iou(iou: Sequence[float], names: Sequence[str]) -> dict[str, float]:
    if len(iou) != len(names):
        raise ValueError(f"{len(iou)} IoU values for {len(names)} class names")
    return {str(name): float(v) for name, v in zip(names, iou)}


def as_percent(value: float | None) -> float | None:
    """``value`` in percent for JSON output; NaN and None become None (JSON ``null``)."""
    if value is None or math.isnan(value):
        return None
    return 100.0 * float(value)


def summary(mat, names: Sequence[str]) -> dict:
    """``{"miou": %, "per_class": {name: %}}`` of a confusion matrix, NaN as None."""
    iou = iou_from_matrix(mat)
    return {
        "miou": as_percent(mean_iou(iou)),
        "per_class": {k: as_percent(v) for k, v in per_class_iou(iou, names).items()},
    }
