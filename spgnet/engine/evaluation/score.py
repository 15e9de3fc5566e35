"""``spgnet score PRED_DIR GT_DIR [--json]``: mIoU of any model's Cityscapes prediction PNGs.

Matching follows ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``: ``GT_DIR`` is
searched recursively for ``*_gtFine_labelIds.png``; for ground truth
``<city>_<seq>_<frame>_gtFine_labelIds.png`` the prediction is the one ``*.png`` file anywhere
under ``PRED_DIR`` whose name starts with ``<city>_<seq>_<frame>`` (its pattern
``<city>_<seq>_<frame>*.png``), e.g. ``aachen_000000_000019_leftImg8bit.png``. A ground truth with
no prediction or several, and a prediction PNG that matches no ground truth, are errors naming the
file.

Prediction format (``--format``, default ``auto``; without the flag ``auto`` is used):

``labelIds``  Cityscapes label ids (what the test server wants); ids of classes that are not
              evaluated (0 "unlabeled", 4 "static", ...) count as a miss.
``trainIds``  the 19 train ids 0..18; anything else (255) counts as a miss.
``auto``      decided once for the whole folder from the values found in all predictions: any
              value in 19..254 means labelIds; otherwise any value that is a train id but not an
              evaluated label id (0-6, 9, 10, 14-16, 18) or 255 means trainIds; a folder holding
              only 7, 8, 11, 12, 13, 17 (valid both ways) is read as labelIds, with a note on
              stderr.

Scores are exactly cityscapesscripts' class IoUs and their mean (see :mod:`spgnet.engine.evaluation.metrics`),
printed in percent; ``--json`` prints ``{"miou": ..., "per_class": {name: ...}}`` (NaN as null).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from spgnet.data.labels import CITYSCAPES_CLASSES, CITYSCAPES_EVAL_LABEL_IDS, IGNORE_INDEX, LABELID_TO_TRAINID
from spgnet.engine.evaluation.metrics import summary
from spgnet.errors import SpgnetError

GT_SUFFIX = "_gtFine_labelIds.png"
FORMATS = ("auto", "labelIds", "trainIds")
NUM_CLASSES = len(CITYSCAPES_CLASSES)  # 19


def class_names() -> list[str]:
    """The 19 evaluated Cityscapes classes in train-id order (:mod:`spgnet.data.labels`)."""
    return list(CITYSCAPES_CLASSES)


def labelid_to_trainid_lut(void: int) -> np.ndarray:
    """256-entry int64 table: Cityscapes label id -> train id; not-evaluated ids -> ``void``
    (:data:`spgnet.data.labels.LABELID_TO_TRAINID` with its 255 replaced)."""
    lut = LABELID_TO_TRAINID.astype(np.int64)
    lut[lut == IGNORE_INDEX] = void
    return lut


def trainid_lut(void: int) -> np.ndarray:
    lut = np.full(256, void, dtype=np.int64)
    lut[:NUM_CLASSES] = np.arange(NUM_CLASSES)
    return lut


def find_ground_truth(gt_dir: str | Path) -> dict[str, Path]:
    """``{<city>_<seq>_<frame>: path}`` of every ``*_gtFine_labelIds.png`` under ``gt_dir``."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise SpgnetError(f"{gt_dir}: ground-truth folder not found")
    found: dict[str, Path] = {}
    for root, _, files in os.walk(gt_dir):
        for name in sorted(files):
            if name.endswith(GT_SUFFIX):
                key = name[: -len(GT_SUFFIX)]
                if key in found:
                    raise SpgnetError(f"{Path(root) / name}: ground truth for '{key}' found twice (also {found[key]})")
                found[key] = Path(root) / name
    if not found:
        raise SpgnetError(f"{gt_dir}: no *{GT_SUFFIX} files found (searched recursively)")
    return dict(sorted(found.items()))


def match_predictions(pred_dir: str | Path, gt: dict[str, Path]) -> dict[str, Path]:
    """``{key: prediction path}`` for every ground-truth key (cityscapesscripts' matching)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise SpgnetError(f"{pred_dir}: prediction folder not found")
    preds = sorted(Path(root) / name for root, _, files in os.walk(pred_dir) for name in files
                   if name.endswith(".png"))
    matches: dict[str, list[Path]] = {key: [] for key in gt}
    keys = list(gt)
    for pred in preds:
        hits = [key for key in keys if pred.name.startswith(key)]  # fnmatch "<key>*.png"
        if not hits:
            raise SpgnetError(f"{pred}: prediction matches no ground truth under the GT folder")
        for key in hits:
            matches[key].append(pred)
    result = {}
    for key, found in matches.items():
        if not found:
            raise SpgnetError(f"{gt[key]}: no prediction for it under {pred_dir} (expected a file named {key}*.png)")
        if len(found) > 1:
            raise SpgnetError(f"{gt[key]}: several predictions match it ({', '.join(str(p) for p in found)})")
        result[key] = found[0]
    return result


def _read_label_png(path: Path, what: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            array = np.array(img)
    except (OSError, ValueError) as err:
        raise SpgnetError(f"{path}: cannot read {what} PNG ({err})") from None
    if array.ndim != 2:
        raise SpgnetError(f"{path}: {what} has {array.shape[-1]} channels; expected a single-channel label PNG")
    return array


def joint_histogram(pairs: dict[str, tuple[Path, Path]]) -> tuple[np.ndarray, np.ndarray]:
    """``([19, 256] counts of (GT train id, raw prediction value) over labelled pixels,
    [256] bool: values seen anywhere in the predictions)`` for ``{key: (pred, gt)}`` pairs."""
    gt_lut = labelid_to_trainid_lut(void=255)
    hist = np.zeros((NUM_CLASSES, 256), dtype=np.int64)
    seen = np.zeros(256, dtype=bool)
    for key, (pred_path, gt_path) in pairs.items():
        pred = _read_label_png(pred_path, "prediction")
        gt = _read_label_png(gt_path, "ground truth")
        if pred.shape != gt.shape:
            raise SpgnetError(
                f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]} but ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}"
            )
        pred = np.minimum(pred.astype(np.int64), 255)
        gt_train = gt_lut[np.clip(gt.astype(np.int64), 0, 255)]
        keep = gt_train < NUM_CLASSES
        hist += np.bincount(gt_train[keep] * 256 + pred[keep], minlength=NUM_CLASSES * 256).reshape(NUM_CLASSES, 256)
        seen[np.unique(pred)] = True
    return hist, seen


def detect_format(seen: np.ndarray) -> tuple[str, bool]:
    """``(format, ambiguous)`` from the set of prediction values (see the module docstring)."""
    values = set(np.flatnonzero(seen).tolist())
    if any(19 <= v <= 254 for v in values):
        return "labelIds", False
    train_only = set(range(NUM_CLASSES)) - CITYSCAPES_EVAL_LABEL_IDS
    if values & train_only or 255 in values:
        return "trainIds", False
    return "labelIds", True


def fold(hist: np.ndarray, fmt: str) -> np.ndarray:
    """``[19, 20]`` confusion matrix (last column void) from the joint histogram."""
    lut = labelid_to_trainid_lut(NUM_CLASSES) if fmt == "labelIds" else trainid_lut(NUM_CLASSES)
    mat = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), dtype=np.int64)
    for value in range(256):
        mat[:, lut[value]] += hist[:, value]
    return mat


def score_directories(pred_dir: str | Path, gt_dir: str | Path, fmt: str = "auto") -> dict:
    """Score a prediction folder; returns ``{"miou", "per_class"}`` in percent plus ``"format"``,
    ``"num_images"`` and ``"matrix"`` (the ``[19, 20]`` confusion matrix as lists)."""
    if fmt not in FORMATS:
        raise SpgnetError(f"unknown prediction format '{fmt}' (valid: {', '.join(FORMATS)})")
    gt = find_ground_truth(gt_dir)
    preds = match_predictions(pred_dir, gt)
    hist, seen = joint_histogram({key: (preds[key], gt[key]) for key in gt})
    ambiguous = False
    if fmt == "auto":
        fmt, ambiguous = detect_format(seen)
    mat = fold(hist, fmt)
    result = summary(mat, class_names())
    result.update(format=fmt, format_ambiguous=ambiguous, num_images=len(gt), matrix=mat.tolist())
    return result


def main(args) -> int:
    fmt = getattr(args, "format", None) or "auto"
    result = score_directories(args.pred_dir, args.gt_dir, fmt)
    if result["format_ambiguous"]:
        print(
            "spgnet score: note: predictions hold only ids valid both as labelIds and as trainIds; "
            "read as labelIds (pass --format trainIds if they are train ids)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps({"miou": result["miou"], "per_class": result["per_class"]}, indent=2))
        return 0
    print(f"{result['num_images']} images, predictions read as {result['format']}")
    for name, value in result["per_class"].items():
        print(f"{name:<14} {'nan' if value is None else f'{value:6.2f}'}")
    miou = result["miou"]
    print(f"{'mIoU':<14} {'nan' if miou is None else f'{miou:6.2f}'}")
    return 0


__all__ = ["score_directories", "find_ground_truth", "match_predictions", "detect_format", "class_names",
           "main"]
