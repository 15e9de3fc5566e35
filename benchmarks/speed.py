"""Inference and training speed of SPGNet against what a user would pick instead, in one process.

Measures, on the same device and thread count, one after the other:

* ``spgnet-r18x2-d256``: ``spgnet.build_model("t3-spg-sigmoid", channels=256, norm="batchnorm")``
* ``spgnet-r50x2-d256``: ``spgnet.build_model("t9-r50-d256", norm="batchnorm")``
* ``deeplabv3_resnet101``: torchvision's, ``weights=None, weights_backbone=None, num_classes=19,
  aux_loss=False`` (output stride 8)
* ``resnet50``: torchvision's ResNet-50 features (no average pooling, no fc): the reference for
  how many multiply-adds per second a plain, well-optimised network achieves here.

Each model runs in two forms (``--fuse both``, the default):

* as built, in eval mode (rows named after the model): every ``BatchNorm2d`` a pass of its own,
  default (contiguous) layout;
* ``+fused``: what ``spgnet evaluate`` runs (:func:`spgnet.engine.evaluation.inference.inference_model`):
  every eval-mode normalisation folded into the convolution before it
  (:func:`spgnet.models.fuse.fuse_for_inference`, activations kept as separate in-place ops), and
  on CPU the network and its input in ``torch.channels_last`` layout. It is applied to every
  model alike, torchvision's included (a user would fold theirs too): it folds all 111
  ``BatchNorm2d`` of deeplabv3_resnet101, all 53 of resnet50 and every norm of both SPGNets (131
  and 197). The outputs equal the unfused model's to float rounding (``tests/test_fuse.py``).

``--compile on`` adds a third form of every model, ``+fused+compiled``: the fused network through
``torch.compile`` (Inductor; on CPU it needs a C++ compiler, checked first), applied to every
model alike; the first pass (the compilation, for that one input size) is timed apart as
``compile_seconds``. ``spgnet evaluate`` does not compile: a compiled network is compiled again
for every input size (each scale of multi-scale testing, every image size of VOC), and one
compilation costs more than all of the mini profile's inference of that job.

The process runs with glibc's malloc keeping freed memory for reuse, as ``spgnet train`` and
``evaluate`` do (:mod:`spgnet.runtime.allocator`); ``--malloc system`` leaves glibc's defaults, so
that the two can be compared. It applies to every model in the process alike.

For each: seconds per image (``--height x --width``, default 1024x2048; eval mode,
``torch.inference_mode``, best and mean of ``--repeats`` after ``--warmup`` passes; the models take
turns within each repeat, so load from other processes hits them alike), multiply-adds
(``torch.utils.flop_counter.FlopCounterMode`` total / 2, counted on the ``meta`` device at the same
size, on the unfused model: folding removes no multiply-add that the counter counts), achieved
GMAC/s, and training iterations per second of the unfused model (one SGD step, cross-entropy on
every logit map the model returns, ``--train-batch`` x ``--train-crop``^2). Then the ratios the
issue sets targets for, unfused against unfused and fused against fused: inference speed-up of
each SPGNet over deeplabv3_resnet101 (target for R50x2 D=256: >= 2.5x, its MAC ratio being about
2.99x) and achieved GMAC/s relative to resnet50 (target: within 20%).

On a machine shared with other work, ``--threads 1`` gives repeatable figures (best close to
mean): with every core in use, one core taken by another process stalls each multi-threaded op,
and a network of many small ops (SPGNet) suffers more from that than one of few large ones.

    python benchmarks/speed.py                          # paper size, 2 repeats (minutes on a CPU)
    python benchmarks/speed.py --height 256 --width 512 --repeats 1 --warmup 0 --skip-train
    python benchmarks/speed.py --json out.json           # also write the figures as JSON
    python benchmarks/speed.py --models spgnet-r50x2-d256 deeplabv3_resnet101 --fuse on --compile on --skip-train
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from spgnet.runtime.allocator import keep_freed_memory

MODELS = ("spgnet-r18x2-d256", "spgnet-r50x2-d256", "deeplabv3_resnet101", "resnet50")
TARGET_SPEEDUP = 2.5
TARGET_MACS_RATIO = 0.2
FUSED = "+fused"
COMPILED = "+compiled"


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
    that a change of load on a shared machine hits them all alike. Each model gets the input in
    the layout it was prepared for (``spgnet_memory_format``, set by ``inference_model``)."""
    x = torch.randn(1, 3, height, width, device=device)
    inputs = {name: x.contiguous(memory_format=getattr(model, "spgnet_memory_format", torch.contiguous_format))
              for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for name, model in models.items():
            model.eval()
            for _ in range(warmup):
                model(inputs[name])
        for _ in range(repeats):
            for name, model in models.items():
                sync(device)
                start = time.perf_counter()
                model(inputs[name])
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


def compile_models(models: dict[str, nn.Module], height: int, width: int,
                   device: torch.device) -> dict[str, tuple[nn.Module, float]]:
    """``{name + COMPILED: (torch.compile(model), seconds of its first pass)}`` for each model."""
    import shutil

    if device.type == "cpu" and not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")):
        raise SystemExit("--compile on: torch.compile on CPU needs a C++ compiler (g++ / c++ / $CXX); none found")
    out = {}
    x = torch.randn(1, 3, height, width, device=device)
    for name, model in models.items():
        compiled = torch.compile(model)
        with torch.inference_mode():
            sync(device)
            start = time.perf_counter()
            compiled(x.contiguous(memory_format=getattr(model, "spgnet_memory_format", torch.contiguous_format)))
            sync(device)
        compiled.spgnet_memory_format = getattr(model, "spgnet_memory_format", torch.contiguous_format)
        out[name + COMPILED] = (compiled, time.perf_counter() - start)
    return out


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
    p.add_argument("--fuse", choices=("both", "on", "off"), default="both",
                   help="time the models as built (off), norm-folded (on), or both (default)")
    p.add_argument("--compile", choices=("off", "on"), default="off",
                   help="also time the fused models through torch.compile (needs a C++ compiler on CPU)")
    p.add_argument("--malloc", choices=("keep", "system"), default="keep",
                   help="keep freed memory for reuse (spgnet's default) or glibc's defaults")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    malloc_kept = keep_freed_memory(args.malloc)
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    from spgnet.runtime.hardware import describe_line

    print(f"# torch {torch.__version__}, {describe_line()}, device {device}, input 1x3x{args.height}x{args.width}, "
          f"{args.repeats} repeats after {args.warmup} warm-up; training: batch {args.train_batch} "
          f"x {args.train_crop}^2, {args.train_steps} steps; malloc: {'keeps freed memory' if malloc_kept else 'system defaults'}")
    rows: dict[str, dict] = {}
    header = f"{'model':<36}{'params(M)':>10}{'GMACs':>10}{'s/img best':>12}{'s/img mean':>12}{'GMAC/s':>9}{'train it/s':>12}"
    print(header)
    from spgnet.engine.evaluation.inference import inference_model

    built = {name: build(name).to(device) for name in args.models}
    macs = {name: count_macs(model, args.height, args.width) for name, model in built.items()}
    models: dict[str, nn.Module] = {}
    for name, model in built.items():
        if args.fuse in ("both", "off"):
            models[name] = model.eval()
        if args.fuse in ("both", "on"):
            models[name + FUSED] = inference_model(model.eval())
    compile_seconds = {}
    if args.compile == "on":
        compiled = compile_models({n: m for n, m in models.items() if n.endswith(FUSED)}, args.height, args.width,
                                  device)
        compile_seconds = {name: seconds for name, (_, seconds) in compiled.items()}
        models.update({name: model for name, (model, _) in compiled.items()})
    times = time_inference(models, args.height, args.width, args.repeats, args.warmup, device)
    for name, model in models.items():
        base_name = name.removesuffix(COMPILED).removesuffix(FUSED)
        best = min(times[name])
        row = {
            "params_m": sum(p.numel() for p in built[base_name].parameters()) / 1e6,
            "gmacs": macs[base_name] / 1e9,
            "seconds_per_image": best,
            "seconds_per_image_mean": statistics.fmean(times[name]),
            "gmac_per_s": macs[base_name] / best / 1e9,
            "fused": name.removesuffix(COMPILED).endswith(FUSED),
            "compiled": name.endswith(COMPILED),
            "compile_seconds": compile_seconds.get(name),
            "folded_norms": getattr(model, "spgnet_folded_norms", 0) if name.endswith(FUSED) else 0,
            "train_it_per_s": None,
        }
        if not args.skip_train and base_name != "resnet50" and not row["fused"]:
            row["train_it_per_s"] = time_training(model, args.train_crop, args.train_batch, args.train_steps, device)
        rows[name] = row
        train = "-" if row["train_it_per_s"] is None else f"{row['train_it_per_s']:.3f}"
        print(f"{name:<36}{row['params_m']:>10.1f}{row['gmacs']:>10.1f}{best:>12.3f}"
              f"{row['seconds_per_image_mean']:>12.3f}{row['gmac_per_s']:>9.1f}{train:>12}", flush=True)

    ratios: dict[str, dict] = {}
    for name, seconds in compile_seconds.items():
        print(f"{name:<36}compiled for 1x3x{args.height}x{args.width} in {seconds:.1f} s (first pass)")
    print("\n# ratios (unfused against unfused, fused against fused, compiled against compiled)")
    for suffix in ("", FUSED, FUSED + COMPILED):
        ref, base = rows.get("deeplabv3_resnet101" + suffix), rows.get("resnet50" + suffix)
        for name in ("spgnet-r18x2-d256", "spgnet-r50x2-d256"):
            if name + suffix not in rows:
                continue
            row = rows[name + suffix]
            r = {}
            if ref:
                r["speedup_vs_deeplabv3_resnet101"] = ref["seconds_per_image"] / row["seconds_per_image"]
                r["mac_ratio_deeplabv3_resnet101"] = ref["gmacs"] / row["gmacs"]
                if ref["train_it_per_s"] and row["train_it_per_s"]:
                    r["train_speedup_vs_deeplabv3_resnet101"] = row["train_it_per_s"] / ref["train_it_per_s"]
            if base:
                r["gmac_per_s_vs_resnet50"] = row["gmac_per_s"] / base["gmac_per_s"]
            ratios[name + suffix] = r
            parts = [f"{k} {v:.2f}" for k, v in r.items()]
            print(f"{name + suffix:<36}" + ", ".join(parts))

    checks = {}
    for suffix, label in (("", "unfused"), (FUSED, "fused"), (FUSED + COMPILED, "compiled")):
        r50 = ratios.get("spgnet-r50x2-d256" + suffix, {})
        if "speedup_vs_deeplabv3_resnet101" in r50:
            checks[f"r50x2_speedup_at_least_2.5_{label}"] = r50["speedup_vs_deeplabv3_resnet101"] >= TARGET_SPEEDUP
        if "gmac_per_s_vs_resnet50" in r50:
            checks[f"r50x2_gmac_per_s_within_20pct_of_resnet50_{label}"] = (
                abs(r50["gmac_per_s_vs_resnet50"] - 1) <= TARGET_MACS_RATIO)
    if checks:
        print("\n# targets")
        for k, ok in checks.items():
            print(f"{k:<52}{'PASS' if ok else 'FAIL'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "threads": threads, "models": rows, "ratios": ratios, "targets": checks},
                      handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
