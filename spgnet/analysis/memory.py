"""``spgnet memory NAMES``: peak memory of one training step of each experiment's network.

One training step is forward, the experiment's loss (every supervised stage, OHEM where enabled),
backward and an SGD step (momentum buffers included), on a batch of ``--batch-size`` random
``--crop`` x ``--crop`` images with random labels. Each network is measured in a fresh
subprocess, after one warm-up step, so models never share an allocator or a high-water mark:

* CUDA: ``torch.cuda.max_memory_allocated`` over the measured step (peak bytes of live tensors,
  parameters, gradients and optimiser state included).
* CPU: the same quantity, peak bytes of live tensors, tracked by PyTorch's ``MemTracker`` (a
  dispatch-mode tracker that sees every allocation, inplace-abn's kernels included); and, as a
  cross-check, the process's resident-set high-water mark (``VmHWM``, reset before the step via
  ``/proc/self/clear_refs``) minus the resident set before it, with glibc told to return large
  blocks to the system (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors leave the RSS.

The paper (Sec. 3.2) says SPG costs 2.3% more peak memory than the plain 2-stage network:
``spgnet memory t3-plain t3-spg-sigmoid --crop 769 --batch-size 1`` prints both figures and the
ratio of each to the first name.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from spgnet.errors import SpgnetError

MIB = 2**20


# --------------------------------------------------------------------------------------------
# The measurement (runs in the subprocess)
# --------------------------------------------------------------------------------------------


def _current_rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _hwm() -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_step(name: str, crop: int, batch_size: int = 1, norm: str | None = None,
                 device: str = "cpu", seed: int = 0) -> dict:
    """Peak memory of one training step of experiment ``name``'s network, in this process."""
    import dataclasses

    import torch

    from spgnet.config import get_experiment
    from spgnet.engine.train.losses import segmentation_loss
    from spgnet.engine.train.schedule import build_optimizer
    from spgnet.models import build_model_from_config
    from spgnet.models.norm import usable_norm

    experiment = get_experiment(name)
    if experiment.model is None:
        raise SpgnetError(f"experiment '{name}' is a row the paper cites from another work; it has no model")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpgnetError("--device cuda: CUDA is not available here")
    model_cfg = experiment.model
    requested = norm or model_cfg.norm
    layer = usable_norm(requested, dev)
    model_cfg = dataclasses.replace(model_cfg, norm=layer, pretrained=None)
    train_cfg = experiment.train
    if train_cfg.ohem:  # the paper's min_kept is per 8-crop batch; scale it to this batch
        per_pixel = train_cfg.ohem_min_kept / (8 * 769 * 769)
        train_cfg = dataclasses.replace(train_cfg, ohem_min_kept=max(1, int(per_pixel * batch_size * crop * crop)))

    torch.manual_seed(seed)
    model = build_model_from_config(model_cfg, device=dev).to(dev)
    model.train()
    single = _allow_single_value_norms(model)
    optimizer = build_optimizer(model, train_cfg)
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, crop, crop, generator=g).to(dev)
    labels = torch.randint(0, model_cfg.num_classes, (batch_size, crop, crop), generator=g).to(dev)

    def step():
        optimizer.zero_grad(set_to_none=True)
        outputs = model(images)
        loss, _ = segmentation_loss(outputs, labels, train_cfg, supervise=model_cfg.supervise)
        loss.backward()
        optimizer.step()
        return float(loss)

    step()  # warm-up: momentum buffers exist from now on, as in any step after the first
    params = sum(p.numel() for p in model.parameters())
    result = {
        "name": name, "crop": crop, "batch_size": batch_size, "device": dev.type,
        "norm": layer, "norm_requested": requested, "params_m": round(params / 1e6, 3),
    }
    if single:
        result["note"] = f"{len(single)} normalisation(s) saw one value per channel and used running statistics"
    if dev.type == "cuda":
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        step()
        torch.cuda.synchronize(dev)
        result["peak_bytes"] = int(torch.cuda.max_memory_allocated(dev))
        result["method"] = "torch.cuda.max_memory_allocated"
        return result

    # CPU, 1: resident-set high-water mark over the step.
    optimizer.zero_grad(set_to_none=True)
    before = _current_rss()
    reset = _reset_hwm()
    step()
    if reset:
        result["rss_peak_delta_bytes"] = max(0, _hwm() - before)
    # CPU, 2: live tensor bytes (the CPU analogue of max_memory_allocated).
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except ImportError:  # pragma: no cover - private API of recent PyTorch
        MemTracker = None
    if MemTracker is not None:
        optimizer.zero_grad(set_to_none=True)
        tracker = MemTracker()
        tracker.track_external(model, optimizer, images, labels)
        with tracker:
            step()
        peak = tracker.get_tracker_snapshot("peak")
        per_device = next((v for k, v in peak.items() if torch.device(k).type == "cpu"), None)
        if per_device:
            result["peak_bytes"] = int(per_device["Total"])
            result["peak_by_kind"] = {str(k).split(".")[-1].lower(): int(v) for k, v in per_device.items() if k != "Total"}
            result["method"] = "torch MemTracker (live tensor bytes)"
    if "peak_bytes" not in result:
        if "rss_peak_delta_bytes" not in result:
            raise SpgnetError("cannot measure CPU memory here (no MemTracker, no /proc/self/clear_refs)")
        result["peak_bytes"] = result["rss_peak_delta_bytes"] + _model_state_bytes(model, optimizer)
        result["method"] = "process RSS high-water mark"
    return result


def _allow_single_value_norms(model) -> set:
    """At batch 1 the global-average-pooling branch normalises a 1x1 map, which batch statistics
    cannot do on one process (the paper's batch is spread over 8 synchronised GPUs). Such layers
    use their running statistics for that call; the memory involved is a few bytes per channel.
    (:func:`spgnet.models.norm.single_value_norms_use_running_stats`.)"""
    from spgnet.models.norm import single_value_norms_use_running_stats

    return single_value_norms_use_running_stats(model)


def _model_state_bytes(model, optimizer) -> int:
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if hasattr(v, "numel"))
    return total


# --------------------------------------------------------------------------------------------
# One subprocess per network
# --------------------------------------------------------------------------------------------


def measure_in_subprocess(name: str, crop: int, batch_size: int = 1, norm: str | None = None,
                          device: str = "cpu", timeout: float | None = None) -> dict:
    """:func:`measure_step` in a fresh Python process (its own allocator and high-water mark)."""
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # large blocks are mmap'd and given back on free
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "0")
    env.setdefault("PYTHONWARNINGS", "ignore")
    request = json.dumps({"name": name, "crop": crop, "batch_size": batch_size, "norm": norm, "device": device})
    proc = subprocess.run([sys.executable, "-m", "spgnet.analysis.memory", "--worker", request],
                          env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SpgnetError(f"measuring '{name}' failed: {tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise SpgnetError(result["error"])
    return result


def compare(names: list[str], crop: int, batch_size: int = 1, norm: str | None = None,
            device: str = "cpu", norms: list[str] | None = None) -> list[dict]:
    """Measure every name (or one name under every norm of ``norms``); add ``ratio`` to the first."""
    jobs = [(n, norm) for n in names] if not norms else [(n, layer) for n in names for layer in norms]
    results = [measure_in_subprocess(n, crop, batch_size, layer, device) for n, layer in jobs]
    first = results[0]["peak_bytes"]
    for result in results:
        result["peak_mib"] = round(result["peak_bytes"] / MIB, 2)
        if "rss_peak_delta_bytes" in result:
            result["rss_peak_delta_mib"] = round(result["rss_peak_delta_bytes"] / MIB, 2)
        result["ratio"] = round(result["peak_bytes"] / first, 4) if first else None
    return results


def format_table(results: list[dict]) -> str:
    header = f"{'experiment':<24} {'norm':<12} {'params (M)':>10} {'peak (MiB)':>11} {'ratio':>7} {'RSS delta (MiB)':>16}"
    lines = [header, "-" * len(header)]
    for r in results:
        rss = f"{r['rss_peak_delta_mib']:.1f}" if "rss_peak_delta_mib" in r else "-"
        lines.append(f"{r['name']:<24} {r['norm']:<12} {r['params_m']:>10.2f} {r['peak_mib']:>11.1f} "
                     f"{r['ratio']:>7.4f} {rss:>16}")
    if results:
        r = results[0]
        lines.append(f"one training step (forward, loss, backward, SGD) at batch {r['batch_size']} x "
                     f"{r['crop']}x{r['crop']} on {r['device']}; peak = {r['method']}; ratio to {r['name']}")
    notes = sorted({f"{r['name']}: {r['note']}" for r in results if r.get("note")})
    lines.extend(f"note: {note}" for note in notes)
    return "\n".join(lines)


def main(args) -> int:
    """Entry point of ``spgnet memory`` (see :mod:`spgnet.cli`)."""
    if args.crop < 1 or args.batch_size < 1:
        raise SpgnetError("--crop and --batch-size must be positive")
    from spgnet.config import get_experiment

    for name in args.names:
        get_experiment(name)  # unknown names fail before any subprocess starts
    results = compare(list(args.names), args.crop, args.batch_size, args.norm, args.device)
    if getattr(args, "out", None):  # the pipeline's results/<profile>/memory.json (the report's claims)
        from spgnet.atomic import write_json

        write_json(args.out, results)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    return 0


def _worker(request: str) -> int:
    spec = json.loads(request)
    try:
        result = measure_step(spec["name"], int(spec["crop"]), int(spec["batch_size"]), spec.get("norm"),
                              spec.get("device", "cpu"))
    except SpgnetError as err:
        result = {"error": str(err)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="worker of spgnet memory (one measurement, JSON on stdout)")
    parser.add_argument("--worker", required=True)
    sys.exit(_worker(parser.parse_args().worker))
