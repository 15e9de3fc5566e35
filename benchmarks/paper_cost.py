"""GPU-hours of the paper profile's Snakemake targets, estimated from FLOP counts (no GPU needed).

    python benchmarks/paper_cost.py [--utilisation 0.4] [--runs] [--json]

For every training run and evaluation of ``make_plan("paper")`` (what ``snakemake ... --config
profile=paper`` runs), from the project's counter convention (:mod:`spgnet.analysis.profile`:
multiply-accumulates of convolutions, linear layers and matrix products from PyTorch's
``FlopCounterMode``, halved; counted on the ``meta`` device, so no memory and no data):

* training FLOPs = 2 (FLOPs per MAC) x 3 (forward + backward, the backward counted as twice the
  forward) x forward MACs of one ``train.crop`` x ``train.crop`` crop, in training mode (BiSeNet's
  auxiliary heads run only there) x ``train.batch_size`` x ``train.iterations``, per seed;
* evaluation FLOPs = 2 x the forward MACs ``spgnet evaluate`` runs per image (every scale, flip,
  and TILED window: :func:`spgnet.engine.evaluation.inference.passes_per_image`'s passes, each counted at its
  own size) x the images of the evaluated split (:data:`EVAL_IMAGES`); Cityscapes images are
  1024 x 2048, VOC and Person-Part images (at most 500 px a side) are counted at the training crop
  (513 x 513), an upper bound.

Not counted: the loss, the optimiser, norms and activations (no MACs), data loading, the
attention figures (a few images) and profiling (meta device). GPU-hours = FLOPs / (utilisation x
the GPU's dense fp16/bf16 tensor peak) / 3600, for the GPUs in :data:`GPU_PEAK_FLOPS`, at the
stated utilisation (default 40%; the device check ``benchmarks/gpu_check.py`` measures the
achieved TFLOP/s of a real step). Targets are those of the ``Snakefile``: ``table1`` .. ``table12``
(rows of that table; tables share runs, so their sum exceeds ``reproduce_all``),
``reproduce_all`` and ``reproduce_spgnet`` (every row but the Table 1 competitors).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from functools import lru_cache
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spgnet.analysis.profile import CITYSCAPES_IMAGE, count  # noqa: E402
from spgnet.config import ModelConfig, load_registry  # noqa: E402
from spgnet.engine.evaluation.inference import ap_kernel, tile_windows  # noqa: E402
from spgnet.workflow.plan import Plan, make_plan  # noqa: E402

#: dense (no sparsity) fp16/bf16 tensor-core peak, FLOP/s, from NVIDIA's data sheets
GPU_PEAK_FLOPS = {
    "A100 SXM": 312e12,  # NVIDIA A100 Tensor Core GPU data sheet: FP16 Tensor Core 312 TFLOPS
    "H100/H200 SXM": 989e12,  # NVIDIA H100 / H200 data sheets: FP16 Tensor Core 1,979 TFLOPS with sparsity
}
#: images of each evaluated split
EVAL_IMAGES = {
    ("cityscapes", "val"): 500,  # the paper, Sec. 4.1: "2,975/500/1,525 images for training, validation and testing"
    ("cityscapes", "test"): 1525,
    ("voc", "val"): 1449,  # PASCAL VOC 2012 segmentation, ImageSets/Segmentation/val.txt
    ("person_part", "val"): 1817,  # Chen et al., CVPR 2014: 1,716 train, 1,817 test images (DeepLab's lists call it val)
}
#: forward + backward ~ 3 forwards; 2 FLOPs per multiply-accumulate
TRAIN_PASSES, FLOPS_PER_MAC = 3, 2


@lru_cache(maxsize=None)
def training_macs(model_cfg: ModelConfig, crop: int) -> float:
    """Forward multiply-adds of one ``crop`` x ``crop`` crop in training mode (batch of 2, halved:
    a synchronised norm needs more than one value per channel)."""
    from spgnet.models import build_model_from_config

    cfg = dataclasses.replace(model_cfg, norm="abn", pretrained=None)
    with torch.device("meta"):
        model = build_model_from_config(cfg, device="meta")
    model = model.to("meta").train()
    with FlopCounterMode(display=False) as counter:
        model(torch.empty((2, 3, crop, crop), device="meta"))
    return counter.get_total_flops() / 2 / 2


def image_size(dataset: str, crop: int) -> tuple[int, int]:
    """The size an evaluation image is counted at (see the module docstring)."""
    return CITYSCAPES_IMAGE if dataset == "cityscapes" else (crop, crop)


def evaluation_macs(cfg) -> float:
    """Forward multiply-adds ``spgnet evaluate`` spends on one image of ``cfg`` (a RunConfig)."""
    e, crop = cfg.eval, cfg.train.crop
    height, width = image_size(cfg.train.dataset, crop)
    total = 0.0
    for scale in e.scales:
        h, w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
        if e.strategy == "TILED":
            total += len(tile_windows(h, w, crop, e.tile_overlap)) * count(cfg.model, (crop, crop), "GAP", None)[1]
        else:
            total += count(cfg.model, (h, w), e.strategy, ap_kernel(crop) if e.strategy == "AP" else None)[1]
    return total * (2 if e.flip else 1)


def run_flops(plan: Plan) -> dict[str, float]:
    """Training FLOPs of each run of ``plan``, over all its seeds."""
    return {
        run: FLOPS_PER_MAC * TRAIN_PASSES * training_macs(cfg.model, cfg.train.crop)
        * cfg.train.batch_size * cfg.train.iterations * len(plan.seeds)
        for run, cfg in plan.runs.items()
    }


def evaluation_flops(plan: Plan) -> dict[str, float]:
    """FLOPs of each unique evaluation of ``plan``, over all seeds."""
    flops = {}
    for name, ev in plan.unique_evaluations().items():
        cfg = plan.experiment_config(ev.experiment)
        images = EVAL_IMAGES[(cfg.train.dataset, cfg.eval.split)]
        flops[name] = FLOPS_PER_MAC * evaluation_macs(cfg) * images * len(plan.seeds)
    return flops


def targets(plan: Plan) -> dict[str, list[str]]:
    """Snakefile target -> the experiments whose evaluations it asks for (see ``Snakefile``)."""
    registry = load_registry()
    out = {}
    for table in [str(t) for t in range(1, 13)]:
        out[f"table{table}"] = [e.name for e in registry.values() if e.table == table and e.name in plan.evaluations]
    out["reproduce_all"] = list(plan.experiments)
    out["reproduce_spgnet"] = [e for e in plan.experiments if plan.experiment_config(e).model.arch == "spgnet"]
    return out


def target_cost(plan: Plan, experiments: list[str], train: dict[str, float], evals: dict[str, float]) -> dict:
    runs = sorted({plan.evaluations[e].run for e in experiments})
    evaluations = sorted({plan.evaluations[e].evaluation for e in experiments})
    return {"runs": runs, "evaluations": evaluations,
            "train_flops": sum(train[r] for r in runs), "eval_flops": sum(evals[v] for v in evaluations)}


def gpu_hours(flops: float, peak: float, utilisation: float) -> float:
    return flops / (utilisation * peak) / 3600


def estimate(utilisation: float = 0.4) -> dict:
    """Every target's runs, evaluations, FLOPs and GPU-hours per GPU of :data:`GPU_PEAK_FLOPS`."""
    plan = make_plan("paper", data_root="${data_root}")  # the data roots play no part in counting
    train, evals = run_flops(plan), evaluation_flops(plan)
    rows = {}
    for name, experiments in targets(plan).items():
        cost = target_cost(plan, experiments, train, evals)
        total = cost["train_flops"] + cost["eval_flops"]
        cost["gpu_hours"] = {gpu: gpu_hours(total, peak, utilisation) for gpu, peak in GPU_PEAK_FLOPS.items()}
        rows[name] = cost
    peers = sum(f for r, f in train.items() if plan.runs[r].model.arch != "spgnet")
    return {"utilisation": utilisation, "gpu_peak_flops": GPU_PEAK_FLOPS, "seeds": list(plan.seeds),
            "peer_share_of_training": peers / sum(train.values()),
            "run_train_flops": train, "evaluation_flops": evals, "targets": rows}


def format_report(result: dict, per_run: bool = False) -> str:
    gpus = list(result["gpu_peak_flops"])
    head = f"{'target':<18} {'runs':>4} {'evals':>5} {'train PFLOP':>11} {'eval PFLOP':>10}"
    lines = [head + "".join(f" {gpu + ' h':>17}" for gpu in gpus)]
    for name, row in result["targets"].items():
        lines.append(f"{name:<18} {len(row['runs']):>4} {len(row['evaluations']):>5} {row['train_flops'] / 1e15:>11.0f} "
                     f"{row['eval_flops'] / 1e15:>10.1f}" + "".join(f" {row['gpu_hours'][g]:>17.0f}" for g in gpus))
    lines.append(f"GPU-hours at {100 * result['utilisation']:.0f}% of the dense fp16 peak "
                 + ", ".join(f"{g} {p / 1e12:.0f} TFLOP/s" for g, p in result["gpu_peak_flops"].items())
                 + f"; seeds {result['seeds']}; the Table 1 competitors are "
                 f"{100 * result['peer_share_of_training']:.0f}% of all training FLOPs")
    if per_run:
        lines.append("")
        lines.append(f"{'run':<24} {'train PFLOP':>11}")
        lines += [f"{run:<24} {flops / 1e15:>11.1f}" for run, flops in result["run_train_flops"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utilisation", type=float, default=0.4, help="fraction of the GPU's peak achieved (default 0.4)")
    parser.add_argument("--runs", action="store_true", help="also list each training run's FLOPs")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if not 0 < args.utilisation <= 1:
        parser.error(f"--utilisation must be in (0, 1], got {args.utilisation}")
    result = estimate(args.utilisation)
    print(json.dumps(result, indent=2) if args.json else format_report(result, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
