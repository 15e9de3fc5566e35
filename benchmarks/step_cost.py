"""CPU seconds of one training step of every run a profile trains (default: mini), one thread.

    python benchmarks/step_cost.py [--profile mini] [--amp auto|true|false]

Builds each run's model from its resolved config, then times a full step (forward in the precision
:func:`spgnet.engine.train.precision.resolve_precision` picks for the profile's ``train.amp`` on this CPU,
the training loss on every stage, backward, SGD) on random data of the run's batch and crop;
prints the CPU it ran on, the best of two timed steps after one warm-up, and the sum over all
runs, each counted once per seed it trains under: the cost of one iteration of the whole profile,
which with the evaluations and per-job start-up bounds how many iterations fit a time budget.
``--amp false`` times float32 instead (what a CPU without native bfloat16 runs under ``auto``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from spgnet.runtime.allocator import keep_freed_memory
from spgnet.engine.train.losses import segmentation_loss
from spgnet.runtime.hardware import describe_line
from spgnet.engine.train.precision import resolve_precision
from spgnet.models import build_model_from_config
from spgnet.workflow.plan import make_plan


def step_seconds(cfg) -> float:
    model = build_model_from_config(cfg.model).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum)
    crop, batch = cfg.train.crop, cfg.train.batch_size
    images = torch.randn(batch, 3, crop, crop)
    labels = torch.randint(0, cfg.model.num_classes, (batch, crop, crop))
    precision = resolve_precision(cfg.train.amp, "cpu")
    times = []
    for _ in range(3):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=precision.dtype, enabled=precision.enabled):
            loss, _ = segmentation_loss(model(images), labels, cfg.train, supervise=cfg.model.supervise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--amp", default=None, choices=["auto", "true", "false"],
                        help="replace the profile's train.amp (default: the profile's)")
    args = parser.parse_args()
    keep_freed_memory()  # as spgnet train does
    torch.set_num_threads(1)
    plan = make_plan(args.profile)
    print(f"on {describe_line()}", flush=True)
    amp = {"true": True, "false": False}.get(args.amp, args.amp)
    total, jobs = 0.0, 0
    for run, cfg in plan.runs.items():
        if amp is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=amp))
        seconds = step_seconds(cfg)
        seeds = len(plan.seeds_of_run(run))
        total += seconds * seeds
        jobs += seeds
        print(f"{run:24s} {cfg.model.arch:10s} crop {cfg.train.crop} x {cfg.train.batch_size} "
              f"({resolve_precision(cfg.train.amp, 'cpu').name}, {seeds} seed{'s' if seeds > 1 else ''}): "
              f"{seconds:.2f} s", flush=True)
    print(f"one iteration of all {jobs} training jobs ({len(plan.runs)} runs): {total:.1f} CPU-seconds")


if __name__ == "__main__":
    main()
