"""Inference and training speed of SPGNet against what a user would pick instead, in one process.

Measures, on the same device and thread count, one after the other:

* ``spgnet-r18x2-d256``: ``spgnet.build_model("t3-spg-sigmoid", channels=256, norm="batchnorm")``
* ``spgnet-r50x2-d256``: ``spgnet.build_model("t9-r50-d256", norm="batchnorm")``
* ``deeplabv3_resnet101``: torchvision's, ``weights=None, weights_backbone=None, num_classes=19,
  aux_loss=False`` (output stride 8)
* ``resnet50``: torchvision's ResNet-50 features (no average pooling, no fc): the reference for
  how many multiply-adds per second a plain, well-optimised network achieves here.

For each: seconds per image (``--height x --width``, default 1024x2048; eval mode,
``torch.inference_mode``, best and mean of ``--repeats`` after ``--warmup`` passes; the models take
turns within each repeat, so load from other processes hits them alike), multiply-adds
(``torch.utils.flop_counter.FlopCounterMode`` total / 2, counted on the ``meta`` device at the same
size), achieved GMAC/s, and training iterations per second (one SGD step, cross-entropy on every
logit map the model returns, ``--train-batch`` x ``--train-crop``^2). Then the ratios the issue
sets targets for: inference speed-up of each SPGNet over deeplabv3_resnet101 (target for R50x2
D=256: >= 2.5x, its MAC ratio being about 2.9x) and achieved GMAC/s relative to resnet50 (target:
within 20%).

    python benchmarks/speed.py                          # paper size, 2 repeats (minutes on a CPU)
    python benchmarks/speed.py --height 256 --width 512 --repeats 1 --warmup 0 --skip-train
    python benchmarks/speed.py --json out.json           # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

MODELS = ("spgnet-r18x2-d256", "spgnet-r50x2-d256", "deeplabv3_resnet101", "resnet50")
TARGET_SPEEDUP = 2.5
TARGET_MACS_RATIO = 0.2


def build(name: str) -> nn.Module:
    if name == "spgnet-r18x2-d256":
        import spgnet

        return spgnet.build_model("t3-spg-sigmoid", channels=256, norm="batchnorm")
    if name == "spgnet-r50x2-d256":
        import spgnet

        return spgnet.build_model("t9-r50-d256", norm="batchnorm")
    if name == "deeplabv3_resnet101":
        from torchvision.models.segmentation import deeplabv3_resnet101

        return deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=19, aux_loss=False)
    if name == "resnet50":
        from torchvision.models import resnet50

        net = resnet50(weights=None)
        return nn.Sequential(*list(net.children())[:-2])  # features only
    raise SystemExit(f"unknown model '{name}' (valid: {', '.join(MODELS)})")


def logit_maps(output) -> list[torch.Tensor]:
    """Every per-class logit map of a model's output (main first)."""
    if isinstance(output, dict):
        maps = [output["out"]]
        aux = output.get("aux")
        if isinstance(aux, torch.Tensor):
            maps.append(aux)
        elif isinstance(aux, (list, tuple)):
            maps.extend(a for a in aux if isinstance(a, torch.Tensor))
        return maps
    if isinstance(output, (list, tuple)):
        return [o for o in output if isinstance(o, torch.Tensor)]
    return [output]


def count_macs(model: nn.Module, height: int, width: int) -> float:
    """Multiply-adds of one forward pass (FlopCounterMode total / 2), on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.empty(1, 3, height, width, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta(x)
    return counter.get_total_flops() / 2


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_inference(models: dict[str, nn.Module], height: int, width: int, repeats: int, warmup: int,
                   device: torch.device) -> dict[str, list[float]]:
    """Seconds per pass of every model, the models taking turns (round-robin) in each repeat so
    that a change of load on a shared machine hits them all alike."""
    x = torch.randn(1, 3, height, width, device=device)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model.eval()
            for _ in range(warmup):
                model(x)
        for _ in range(repeats):
            for name, model in models.items():
                sync(device)
                start = time.perf_counter()
                model(x)
                sync(device)
                times[name].append(time.perf_counter() - start)
    return times


def time_training(model: nn.Module, crop: int, batch: int, steps: int, device: torch.device) -> float:
    """Training iterations per second (SGD, momentum 0.9, one warm-up step not timed)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, crop, crop, generator=gen).to(device)
    target = torch.randint(0, 19, (batch, crop, crop), generator=gen).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for logits in logit_maps(model(x)):
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
            loss = loss + F.cross_entropy(logits, target, ignore_index=255)
        loss.backward()
        optimizer.step()

    step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps / (time.perf_counter() - start)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=2, help="timed inference passes per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes before them")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--train-crop", type=int, default=257)
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=2)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}, "
          f"{torch.get_num_threads()} threads, input 1x3x{args.height}x{args.width}, "
          f"{args.repeats} repeats after {args.warmup} warm-up; training: batch {args.train_batch} "
          f"x {args.train_crop}^2, {args.train_steps} steps")
    rows: dict[str, dict] = {}
    header = f"{'model':<22}{'params(M)':>10}{'GMACs':>10}{'s/img best':>12}{'s/img mean':>12}{'GMAC/s':>9}{'train it/s':>12}"
    print(header)
    models = {name: build(name).to(device) for name in args.models}
    macs = {name: count_macs(model, args.height, args.width) for name, model in models.items()}
    times = time_inference(models, args.height, args.width, args.repeats, args.warmup, device)
    for name, model in models.items():
        best = min(times[name])
        row = {
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gmacs": macs[name] / 1e9,
            "seconds_per_image": best,
            "seconds_per_image_mean": statistics.fmean(times[name]),
            "gmac_per_s": macs[name] / best / 1e9,
            "train_it_per_s": None,
        }
        if not args.skip_train and name != "resnet50":
            row["train_it_per_s"] = time_training(model, args.train_crop, args.train_batch, args.train_steps, device)
        rows[name] = row
        train = "-" if row["train_it_per_s"] is None else f"{row['train_it_per_s']:.3f}"
        print(f"{name:<22}{row['params_m']:>10.1f}{row['gmacs']:>10.1f}{best:>12.3f}"
              f"{row['seconds_per_image_mean']:>12.3f}{row['gmac_per_s']:>9.1f}{train:>12}", flush=True)

    ratios: dict[str, dict] = {}
    ref, base = rows.get("deeplabv3_resnet101"), rows.get("resnet50")
    print("\n# ratios")
    for name in ("spgnet-r18x2-d256", "spgnet-r50x2-d256"):
        if name not in rows:
            continue
        r = {}
        if ref:
            r["speedup_vs_deeplabv3_resnet101"] = ref["seconds_per_image"] / rows[name]["seconds_per_image"]
            r["mac_ratio_deeplabv3_resnet101"] = ref["gmacs"] / rows[name]["gmacs"]
            if ref["train_it_per_s"] and rows[name]["train_it_per_s"]:
                r["train_speedup_vs_deeplabv3_resnet101"] = rows[name]["train_it_per_s"] / ref["train_it_per_s"]
        if base:
            r["gmac_per_s_vs_resnet50"] = rows[name]["gmac_per_s"] / base["gmac_per_s"]
        ratios[name] = r
        parts = [f"{k} {v:.2f}" for k, v in r.items()]
        print(f"{name:<22}" + ", ".join(parts))

    checks = {}
    r50 = ratios.get("spgnet-r50x2-d256", {})
    if "speedup_vs_deeplabv3_resnet101" in r50:
        checks["r50x2_speedup_at_least_2.5"] = r50["speedup_vs_deeplabv3_resnet101"] >= TARGET_SPEEDUP
    if "gmac_per_s_vs_resnet50" in r50:
        checks["r50x2_gmac_per_s_within_20pct_of_resnet50"] = abs(r50["gmac_per_s_vs_resnet50"] - 1) <= TARGET_MACS_RATIO
    if checks:
        print("\n# targets")
        for k, ok in checks.items():
            print(f"{k:<46}{'PASS' if ok else 'FAIL'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "threads": threads, "models": rows, "ratios": ratios, "targets": checks},
                      handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
