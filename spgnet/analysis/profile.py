"""``spgnet profile``: #Params and #FLOPs at paper scale, beside the paper's values.

The convention that reproduces the paper's columns (``docs/architecture-counts.md``):

* #FLOPs are multiply-accumulates of convolutions, linear layers and matrix products, counted by
  PyTorch's own :class:`torch.utils.flop_counter.FlopCounterMode` (which reports 2 per MAC, so
  the total is halved). Norms, activations, pooling, interpolation and additions are not counted.
* The input is 1025 x 2049, the DeepLab convention for a 1024 x 2048 Cityscapes image (at
  1024 x 2048 every row is 1.5-2.0% low).
* #Params include norm weight and bias and exclude the ImageNet classifier.
* The model is in evaluation mode with the row's test strategy: AP (kernel = training crop / 32),
  GAP, or TILED, which is counted per training-crop tile (Table 12 prints "8 (tiles) x 30.6B").

Counting runs on the ``meta`` device (no memory, no arithmetic): a model takes well under a second.
Profiling needs no data and does not depend on the run profile: the numbers are always paper scale.

Rows of your own (``--experiments FILE --profile P``, :mod:`spgnet.config.own_experiments`) are
counted as they are trained under ``P``: with their data set's class count, at its image size (a
folder data set's ``image_size``, else its first training image's; Cityscapes' 1025 x 2049
otherwise), so that a 5-class network on 512 x 1024 pictures is not counted as a 19-class one on
Cityscapes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from functools import lru_cache
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from spgnet.atomic import write_text
from spgnet.config import Experiment, ModelConfig, get_experiment, load_registry
from spgnet.errors import SpgnetError

#: DeepLab-style input for a 1024 x 2048 image (rows and columns + 1)
PAPER_INPUT = (1025, 2049)
CITYSCAPES_IMAGE = (1024, 2048)


def tile_count(image: tuple[int, int], crop: int, overlap: float = 1.0 / 3.0) -> int:
    """Number of crop x crop windows with the given overlap that cover ``image`` (TILED)."""
    stride = math.ceil(crop * (1.0 - overlap))
    rows = max(math.ceil((image[0] - crop) / stride), 0) + 1
    cols = max(math.ceil((image[1] - crop) / stride), 0) + 1
    return rows * cols


@lru_cache(maxsize=None)
def count(model_cfg: ModelConfig, input_hw: tuple[int, int], pooling: str | None, ap_kernel: int | None) -> tuple[int, float]:
    """(parameters, multiply-adds) of the network ``model_cfg`` on one ``input_hw`` image."""
    from spgnet.models import build_model_from_config

    cfg = dataclasses.replace(model_cfg, norm="abn", pretrained=None)
    with torch.device("meta"):
        model = build_model_from_config(cfg, device="meta")
    # some third-party layers allocate with legacy constructors that ignore the device context
    model = model.to("meta").eval()
    if pooling is not None and hasattr(model, "set_test_pooling"):
        model.set_test_pooling(pooling, ap_kernel)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty((1, 3, *input_hw), device="meta"))
    return params, counter.get_total_flops() / 2


def data_input_size(cfg) -> tuple[int, int]:
    """(H, W) a row of your own is counted at: its folder data set's ``image_size``, else the size
    of the first training image (sorted by name); :data:`PAPER_INPUT` for a built-in data set."""
    if cfg.dataset_kind != "folder":
        return PAPER_INPUT
    from PIL import Image

    from spgnet.config import load_description

    root = cfg.data.path()
    description = load_description(root)
    if description.image_size is not None:
        return tuple(description.image_size)
    source = description.splits["train"]
    folder = root / source.images
    first = next(iter(sorted(folder.rglob(f"*{description.image_suffix}"))), None)
    if first is None:
        raise SpgnetError(f"{folder}: no *{description.image_suffix} image to take the size of #FLOPs from "
                          f"(or give image_size in {root / 'dataset.yaml'})")
    with Image.open(first) as image:
        width, height = image.size
    return (height, width)


def profile_experiment(experiment: Experiment, cfg=None) -> dict:
    """The measured and paper counts of one registered experiment, as a JSON-ready dict; ``cfg``:
    its :class:`~spgnet.config.RunConfig` under a profile, for a row of your own (counted at its data
    set's size with its class count, see the module's docstring)."""
    if not experiment.reproducible:
        raise SpgnetError(f"experiment '{experiment.name}' is a cited row; it has no model to profile")
    model, strategy, crop = experiment.model, experiment.eval.strategy, experiment.train.crop
    image, full = CITYSCAPES_IMAGE, PAPER_INPUT
    if cfg is not None:
        model, strategy, crop = cfg.model, cfg.eval.strategy, cfg.train.crop
        image = full = data_input_size(cfg)
    started = time.perf_counter()
    tiles = None
    if strategy == "TILED":
        params, macs = count(model, (crop, crop), "GAP", None)
        tiles = tile_count(image, crop, experiment.eval.tile_overlap)
    else:
        params, macs = count(model, full, strategy, crop // 32 if strategy == "AP" else None)
    measured = {"params_m": params / 1e6, "flops_g": macs / 1e9}
    paper = {"params_m": experiment.paper.params_m, "flops_g": experiment.paper.flops_g}
    return {
        "name": experiment.name,
        "table": experiment.table,
        "row": experiment.row,
        "params": params,
        "macs": macs,
        "params_m": measured["params_m"],
        "flops_g": measured["flops_g"],
        "flops_unit": "per tile" if tiles else "per image",
        "tiles": tiles,
        "flops_g_total": measured["flops_g"] * tiles if tiles else measured["flops_g"],
        "input": [crop, crop] if tiles else list(full),
        "strategy": strategy if model.gap else None,
        "paper_params_m": paper["params_m"],
        "paper_flops_g": paper["flops_g"],
        "paper_flops_note": experiment.paper.flops_note,
        "params_rel_diff": _rel(measured["params_m"], paper["params_m"]),
        "flops_rel_diff": _rel(measured["flops_g"], paper["flops_g"]),
        "seconds": time.perf_counter() - started,
    }


def _rel(measured: float, paper: float | None) -> float | None:
    return None if paper is None else (measured - paper) / paper


def profile_all(names: list[str] | None = None, experiments: str | None = None, profile: str | None = None,
                data_root: str | None = None) -> list[dict]:
    """Counts of ``names`` (default: every reproducible row), and with ``experiments`` (a file of
    your own rows) of its rows too, each resolved under ``profile`` (needed with ``experiments``)."""
    if experiments and not profile:
        raise SpgnetError("--experiments needs --profile (where the rows' data sets lie)")
    registry = load_registry(extra=experiments)
    chosen = [get_experiment(n, extra=experiments) for n in names] if names else \
        [e for e in registry.values() if e.reproducible]
    rows = []
    for exp in chosen:
        cfg = None
        if exp.own:
            from spgnet.config import build_config

            cfg = build_config(exp, profile, data_root=data_root, experiments=experiments)
        rows.append(profile_experiment(exp, cfg))
    return rows


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}%"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    lines = [f"{'experiment':<24} {'table':>5}  {'#Params (M)':>11} {'paper':>6} {'diff':>7}  {'#FLOPs (B)':>10} {'paper':>7} {'diff':>7}"]
    for r in rows:
        flops = f"{r['flops_g']:.2f}" + (" /tile" if r["tiles"] else "")
        lines.append(
            f"{r['name']:<24} {r['table']:>5}  {r['params_m']:>11.2f} {_fmt(r['paper_params_m']):>6} {_pct(r['params_rel_diff']):>7}  "
            f"{flops:>10} {_fmt(r['paper_flops_g']):>7} {_pct(r['flops_rel_diff']):>7}"
        )
    return "\n".join(lines)


def main(args) -> int:
    rows = profile_all(args.names or None, experiments=getattr(args, "experiments", None),
                       profile=getattr(args, "profile", None), data_root=getattr(args, "data_root", None))
    payload = {
        "convention": "MACs of conv/linear/matmul via torch.utils.flop_counter (halved); input 1025x2049; "
                      "params incl. norm weight+bias, no ImageNet fc",
        "torch": torch.__version__,
        "experiments": rows,
    }
    if args.out:
        write_text(Path(args.out), json.dumps(payload, indent=2))
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(format_table(rows))
    return 0
