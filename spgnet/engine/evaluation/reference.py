"""``spgnet baseline``: the reference scores that an mIoU cell of the report is read against.

Two references, both scored by :mod:`spgnet.engine.evaluation.metrics` (cityscapesscripts' mIoU) on the
``val`` split the experiments are scored on, written atomically as JSON in percent:

* ``spgnet baseline majority --summary DATA/summary.json --out JSON``: always predict the most
  frequent class of the ``train`` split. Both the class and the ``val`` ground truth come from the
  pixel counts per class that ``spgnet prepare-data`` writes (``splits.<split>.pixels_per_class``):
  a constant prediction's confusion matrix is the ``val`` counts in the majority class's column, so
  no image is read. IoU of the majority class = its share of the labelled ``val`` pixels; every
  other class present in ``val`` scores 0; mIoU averages over the classes present.
  Keys: ``kind, dataset, split, class, train_share, miou, per_class, summary``.
* ``spgnet baseline untrained EXPERIMENT --profile P --seed K --out JSON``: the experiment's
  network as its training starts (``torch.manual_seed(K)`` then the model builder, as
  :mod:`spgnet.engine.train.loop` does: random weights, or ImageNet weights where the profile gives a
  ``pretrained`` file), evaluated like :mod:`spgnet.engine.evaluation.evaluate` on ``val`` with one scale, no
  flip and the experiment's GAP/AP/TILED strategy. Keys: those of the eval JSON plus
  ``kind: "untrained"`` and ``seed``. The workflows have each training job write it for its own
  run and seed before the first step (``spgnet train --untrained-out``); this verb scores one alone.

Where a cell is not above these, the run has not learned anything the scores can show.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from spgnet.atomic import write_json
from spgnet.errors import SpgnetError

#: The split both references are scored on, and the split whose most frequent class is predicted.
EVAL_SPLIT, TRAIN_SPLIT = "val", "train"


def _read_summary(path: Path) -> dict:
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpgnetError(f"{path}: data summary not found (written by spgnet prepare-data)") from None
    except (OSError, ValueError) as err:
        raise SpgnetError(f"{path}: not a readable data summary ({type(err).__name__})") from None
    for split in (TRAIN_SPLIT, EVAL_SPLIT):
        counts = (summary.get("splits", {}).get(split) or {}).get("pixels_per_class")
        if not isinstance(counts, dict) or not counts:
            raise SpgnetError(f"{path}: no splits.{split}.pixels_per_class (rerun spgnet prepare-data)")
    if not isinstance(summary.get("classes"), list):
        raise SpgnetError(f"{path}: no 'classes' list")
    return summary


def majority_scores(summary: dict) -> dict:
    """The majority-class reference of a ``prepare-data`` summary (see the module docstring)."""
    import numpy as np

    from spgnet.engine.evaluation.metrics import ConfusionMatrix, as_percent

    names = list(summary["classes"])
    train = summary["splits"][TRAIN_SPLIT]["pixels_per_class"]
    val = summary["splits"][EVAL_SPLIT]["pixels_per_class"]
    train_counts = [int(train.get(name, 0)) for name in names]
    if sum(train_counts) == 0:
        raise SpgnetError(f"data set '{summary.get('dataset')}': the {TRAIN_SPLIT} split has no labelled pixel")
    majority = int(np.argmax(train_counts))  # the first on ties
    matrix = np.zeros((len(names), len(names) + 1), dtype=np.int64)
    matrix[:, majority] = [int(val.get(name, 0)) for name in names]
    if matrix.sum() == 0:
        raise SpgnetError(f"data set '{summary.get('dataset')}': the {EVAL_SPLIT} split has no labelled pixel")
    cm = ConfusionMatrix(len(names))
    cm.add_matrix(matrix)
    return {
        "kind": "majority",
        "dataset": summary.get("dataset"),
        "split": EVAL_SPLIT,
        "class": names[majority],
        "train_share": as_percent(train_counts[majority] / sum(train_counts)),
        "miou": as_percent(cm.miou()),
        "per_class": {name: as_percent(v) for name, v in zip(names, cm.iou())},
    }


def untrained_config(cfg):
    """``cfg`` with the reference evaluation: ``val``, one scale, no flip, no submission."""
    return dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, split=EVAL_SPLIT, scales=(1.0,), flip=False,
                                                             submission=False))


def untrained_scores(cfg, seed: int) -> dict:
    """Evaluate ``cfg``'s network as training with ``seed`` starts it (see the module docstring)."""
    import torch

    from spgnet.engine.evaluation import evaluate
    from spgnet.models import build_model_from_config
    from spgnet.models.norm import usable_norm

    device = evaluate._device(cfg)
    names = evaluate._class_names(cfg)
    torch.manual_seed(seed)
    model_cfg = dataclasses.replace(cfg.model, norm=usable_norm(cfg.model.norm, device))
    model = build_model_from_config(model_cfg, device=device)
    dataset = evaluate._build_dataset(cfg)
    if len(dataset) == 0:
        raise SpgnetError(f"{cfg.data.path()}: split '{EVAL_SPLIT}' of {cfg.train.dataset} has no images")
    ev = cfg.eval
    result = evaluate.evaluate_model(
        model, dataset, class_names=names, scales=ev.scales, flip=ev.flip, strategy=ev.strategy,
        crop=cfg.train.crop, overlap=ev.tile_overlap, device=device, dataset_name=cfg.dataset_kind,
        workers=cfg.train.workers, pad_to=ev.pad_to,
    )
    if not result["labelled"]:
        raise SpgnetError(f"{cfg.data.path()}: split '{EVAL_SPLIT}' has no labels; no reference mIoU")
    return {
        "kind": "untrained",
        "experiment": cfg.experiment,
        "profile": cfg.profile,
        "seed": seed,
        "dataset": cfg.train.dataset,
        "split": ev.split,
        "strategy": ev.strategy,
        "scales": list(ev.scales),
        "flip": ev.flip,
        "pretrained": cfg.model.pretrained,
        "miou": result["miou"],
        "per_class": result["per_class"],
        "num_images": result["num_images"],
        "seconds_per_image": result["seconds_per_image"],
        "seconds": result["seconds"],
        **{key: result[key] for key in evaluate.TIMING_KEYS},
    }


def main(args) -> int:
    """Entry point of ``spgnet baseline`` (see :mod:`spgnet.cli`)."""
    if args.kind == "majority":
        if not args.summary:
            raise SpgnetError("baseline majority needs --summary (a data set's summary.json from prepare-data)")
        if args.experiment:
            raise SpgnetError(f"baseline majority takes no experiment (got '{args.experiment}')")
        scores = majority_scores(_read_summary(Path(args.summary)))
        scores["summary"] = str(args.summary)
        what = f"{scores['dataset']}: always '{scores['class']}' ({scores['train_share']:.1f}% of train pixels)"
    else:
        if not args.experiment:
            raise SpgnetError("baseline untrained needs an EXPERIMENT")
        from spgnet.config import config_from_args
        from spgnet.runtime.allocator import keep_freed_memory

        keep_freed_memory()
        scores = untrained_scores(untrained_config(config_from_args(args)), int(args.seed))
        what = f"{args.experiment}: untrained (seed {args.seed})"
    write_json(args.out, scores, allow_nan=False)
    print(f"{what}: mIoU {scores['miou']:.2f} on {EVAL_SPLIT} -> {args.out}", file=sys.stderr)
    return 0
