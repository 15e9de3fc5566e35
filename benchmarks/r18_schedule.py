"""How many iterations the R18 1-stage row needs on the mini profile's data (issue 5's > 50% target).

    python benchmarks/r18_schedule.py                          # 30 and 300 iterations, both sets
    python benchmarks/r18_schedule.py --iterations 30 300 1500 --sets mini

Trains ``t3-1stage`` (Table 3's "1 stage": ResNet-18, one stage) with the mini profile's settings
(crop, batch, lr, ``train.amp``, one thread) for each ``--iterations`` value, from random
initialisation, and scores it on the synthetic val split as the workflow does (AP, single scale).
Two training/validation sets:

* ``mini``: the mini profile's synthetic Cityscapes set (generated into a temporary folder with
  the profile's arguments);
* ``label-colours``: the same set with every image replaced by its ``gtFine_color`` image plus
  Gaussian noise (sigma 12): the colour of a pixel gives its class, the easiest data the same
  geometry allows. What a network cannot reach here within N iterations it cannot reach on any
  re-coloured variant of these scenes.

Prints the CPU (model, flags, threads), then one line per run: set, iterations, training seconds,
mIoU and the per-class IoU. MLflow tracking is off (``SPGNET_TRACKING=0``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

EXPERIMENT = "t3-1stage"
SETS = ("mini", "label-colours")


def make_sets(profile, workdir: Path, names: list[str]) -> dict[str, Path]:
    from spgnet.data.synthetic import generate

    source = profile.datasets["cityscapes"]
    mini = generate(workdir / "mini", **source.synthetic)
    roots = {"mini": mini}
    if "label-colours" in names:
        roots["label-colours"] = recolour(mini, workdir / "label-colours")
    return {name: roots[name] for name in names}


def recolour(root: Path, out: Path) -> Path:
    """A copy of ``root`` whose images are their label colour images plus noise."""
    from spgnet.data.cityscapes import label_path, name_of

    shutil.copytree(root, out)
    rng = np.random.default_rng(0)
    for image in sorted(out.glob("leftImg8bit/*/*/*_leftImg8bit.png")):
        name, split = name_of(image), image.parent.parent.name
        colour = label_path(out, split, name).with_name(f"{name}_gtFine_color.png")
        pixels = np.asarray(Image.open(colour).convert("RGB"), dtype=np.float32)
        pixels += rng.normal(0.0, 12.0, pixels.shape)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(image)
    return out


def train_and_score(profile, root: Path, iterations: int, out: Path) -> tuple[float, dict]:
    from spgnet.config import resolve
    from spgnet.data import build_dataset
    from spgnet.data.labels import class_names
    from spgnet.engine.train.checkpoint import load_trained_model
    from spgnet.engine.evaluation.evaluate import evaluate_model
    from spgnet.engine.train.loop import train

    cfg = resolve(EXPERIMENT, profile, train={"iterations": iterations})
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(root)))
    started = time.perf_counter()
    train(cfg, out, seed=0)
    seconds = time.perf_counter() - started
    model = load_trained_model(out / "checkpoint.pt", cfg, "cpu")
    dataset = build_dataset("cityscapes", root, cfg.eval.split)
    result = evaluate_model(model, dataset, class_names=list(class_names("cityscapes")),
                            strategy=cfg.eval.strategy, crop=cfg.train.crop)
    return seconds, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    args = parser.parse_args()
    os.environ["SPGNET_TRACKING"] = "0"
    torch.set_num_threads(1)
    from spgnet.config import load_profile
    from spgnet.runtime.allocator import keep_freed_memory

    from spgnet.runtime.hardware import describe_line

    keep_freed_memory()
    print(f"on {describe_line()}", flush=True)
    profile = load_profile("mini")
    with tempfile.TemporaryDirectory(prefix="r18-schedule-") as tmp:
        roots = make_sets(profile, Path(tmp), args.sets)
        for name, root in roots.items():
            for iterations in args.iterations:
                seconds, result = train_and_score(profile, root, iterations, Path(tmp) / f"run-{name}-{iterations}")
                per_class = ", ".join(f"{k} {v:.0f}" for k, v in result["per_class"].items() if v is not None)
                print(f"{name:14s} {iterations:6d} it  {seconds:7.1f} s  mIoU {result['miou']:5.2f}%  ({per_class})",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
