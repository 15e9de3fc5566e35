"""``spgnet train EXPERIMENT``: Sec. 4.2's training recipe, one process or many (``torchrun``).

SGD (momentum 0.9, weight decay 1e-4, lr 0.01, poly 0.9) for ``train.iterations`` iterations of
``train.batch_size`` random ``train.crop`` crops; cross-entropy on the final prediction plus each
earlier stage's per-class logits (:mod:`spgnet.engine.train.losses`), with OHEM where the experiment
enables it. Outputs in ``--out DIR`` (only rank 0 writes; nothing is left behind by a run that
fails before its first checkpoint):

``latest.pt``           the state to resume from, written atomically every
                        ``train.checkpoint_every`` iterations (:mod:`spgnet.engine.train.checkpoint`)
``checkpoint.pt``       the finished run's state (same content), written at the end; ``latest.pt``
                        is then removed. Workflows declare only this one as an output, so a crash
                        or a pre-emption (which makes Snakemake delete a job's outputs) never
                        deletes the state a restarted job resumes from.
``best.pt``             with ``train.val_every``: the weights of the best validation mIoU so far
``train_log.csv``       step, loss, lr and one ``loss_stageK`` column per supervised stage,
                        averaged over each ``train.log_every`` window (and ``val_miou``)
``train_metrics.json``  written at the end: iterations, final loss, seconds, it/s, seed,
                        precision, the ImageNet files used (SHA-256 per backbone) or "random",
                        config hash
``--untrained-out`` / ``--evaluate-out``: the run's untrained reference (before the first
step) and the evaluation of its finished checkpoint (:mod:`spgnet.engine.train.scores`)

Reproducibility: every random draw derives from (seed, iteration): the sample order and each
sample's augmentation through :class:`spgnet.data.sampler.TrainSampler`, anything random inside
the model from ``torch.manual_seed`` reseeded at every iteration. So ``--resume`` after a kill
continues exactly where the last checkpoint left off; on CPU the final weights and losses are
bit-identical to an uninterrupted run's. ``--resume --iterations N`` with a larger N than the run
was trained for extends it: the poly schedule is then that of N iterations from the resumed
iteration on (the learning rate jumps up once), everything else must be unchanged.

Processes: ``torchrun --nproc_per_node=G -m spgnet train ...`` (DistributedDataParallel). Each
iteration's global batch of ``train.batch_size`` crops is dealt out to the processes
(``batch[rank::G]``: 28 crops on 8 GPUs give 4 crops to ranks 0-3 and 3 to ranks 4-7), every loss
is the mean over the global batch and InPlaceABNSync merges batch statistics over the processes,
so ``8x1``, ``4x2`` and ``1x8`` train the same network, but for OHEM, which mines each process's
crops (``train.ohem_scope: process``, the default; ``batch`` mines the global batch; see
:mod:`spgnet.engine.train.losses`). Two CPU processes with gloo work as well (CI).

Precision (``train.amp``, :mod:`spgnet.engine.train.precision`): float16 autocast with a gradient scaler
on CUDA (a step whose loss or gradients overflow is skipped and the scale lowered; only
:data:`NONFINITE_PATIENCE` non-finite steps in a row stop the run), bfloat16 on CPUs that run it
natively, float32 otherwise. On CUDA ``cudnn.benchmark`` is on and networks without InPlaceABN
layers run channels-last.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from spgnet.config import RunConfig, config_from_args, config_hash, load_profile
from spgnet.engine.train import distributed
from spgnet.engine.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, model_state, rng_state, save_checkpoint
from spgnet.engine.train.data import build_train_dataset, build_train_loader
from spgnet.engine.train.precision import resolve_precision, uses_inplace_abn
from spgnet.engine.train.progress import Progress
from spgnet.engine.train.run import (LOG_NAME, METRICS_NAME, Run, describe_pretrained, final_metrics,
                                    norm_description, run_params, run_tags, write_results)
from spgnet.engine.train.schedule import build_optimizer, poly_lr, set_lr
from spgnet.engine.train.scores import evaluate_finished_run, write_untrained_reference
from spgnet.engine.train.state import LoopState, TrainLog
from spgnet.engine.train.step import memory_format, step_seed, train_step
from spgnet.errors import SpgnetError
from spgnet.runtime.allocator import keep_freed_memory
from spgnet.runtime.threads import apply_profile_threads, profile_threads
from spgnet.tracking import start_run

LATEST_NAME = "latest.pt"
BEST_NAME = "best.pt"

#: Non-finite steps in a row that a run with a gradient scaler skips before it stops.
NONFINITE_PATIENCE = 20


class NonFiniteLossError(SpgnetError):
    """The loss stayed NaN or infinite; the run stops and keeps its last good checkpoint."""


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(args) -> int:
    """Entry point of ``spgnet train`` (see :mod:`spgnet.cli`)."""
    keep_freed_memory()
    if args.predictions and not args.evaluate_out:
        raise SpgnetError("--predictions needs --evaluate-out (the predictions are those of that evaluation)")
    cfg = config_from_args(args)
    # the profile's thread counts, a training's shared by the job's processes (spgnet.runtime.threads)
    profile = load_profile(args.profile, data_root=args.data_root, experiments=getattr(args, "experiments", None))
    apply_profile_threads(profile, "train", processes=int(os.environ.get("WORLD_SIZE", "1")))
    train(cfg, Path(args.out), seed=args.seed, resume=args.resume, untrained_out=args.untrained_out,
          evaluate_out=args.evaluate_out, predictions=args.predictions,
          evaluate_threads=profile_threads(profile, "evaluate"))
    return 0


# --------------------------------------------------------------------------------------------
# What a run is built from
# --------------------------------------------------------------------------------------------


def resume_key(cfg: RunConfig) -> str:
    """What a checkpoint must share with the run that resumes it: the model and train sections,
    except ``train.iterations`` (a larger schedule extends a run)."""
    return config_hash(cfg.model, dataclasses.replace(cfg.train, iterations=0))


def build_network(cfg: RunConfig, device: torch.device) -> nn.Module:
    """The experiment's network on ``device`` (the caller seeds it). Looked up by this name at every
    run, like ``build_train_dataset`` and ``build_train_loader``: tests put a small network, their
    own data or a shorter loader in their place (``tests/helpers_train.py``)."""
    from spgnet.models import build_model_from_config
    from spgnet.models.custom import builder_where

    return build_model_from_config(cfg.model, device=device, where=builder_where(cfg) if cfg.model.builder else None)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train(cfg: RunConfig, out: str | Path, seed: int = 0, resume: bool = False, *,
          untrained_out: str | Path | None = None, evaluate_out: str | Path | None = None,
          predictions: str | Path | None = None, evaluate_threads: int | None = None,
          on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``cfg`` into folder ``out``; returns the final metrics (also ``train_metrics.json``).

    ``untrained_out``: also write the untrained reference JSON there; ``evaluate_out`` (and
    ``predictions``): evaluate the finished run's checkpoint into it (see the module docstring),
    with ``evaluate_threads`` threads (the profile's for evaluations, so that the file equals
    ``spgnet evaluate``'s; None: the training's);
    ``on_step(iteration, losses)`` is called after every step, before its log row and checkpoint:
    to watch a run, or to end it by raising (``benchmarks/gpu_check.py`` does both).
    A run that fails before its first checkpoint removes what it wrote (and ``out``, if it made it).
    """
    out = Path(out)
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    made_out = not out.exists()
    info = distributed.setup(cfg.train.device)
    try:
        run = _prepare(cfg, out, seed, resume, info)
        if untrained_out is not None:  # scored once per run: a resumed job writes the checkpoint's copy
            run.untrained = write_untrained_reference(cfg, seed, info, Path(untrained_out), scored=run.untrained)
        metrics = _loop(run, on_step)
        if evaluate_out is not None and run.state.iteration == cfg.train.iterations:
            evaluate_finished_run(cfg, out / CHECKPOINT_NAME, info, Path(evaluate_out), predictions,
                                  threads=evaluate_threads)
        return metrics
    except BaseException:
        if info.is_main and not any((out / name).exists() for name in (LATEST_NAME, CHECKPOINT_NAME)):
            _remove_partial_run(out, made_out, untrained_out)  # nothing to resume from: leave nothing behind
        raise
    finally:
        if owns_group:
            distributed.cleanup()


def _remove_partial_run(out: Path, made_out: bool, untrained_out: str | Path | None) -> None:
    for name in (LOG_NAME, METRICS_NAME):
        (out / name).unlink(missing_ok=True)
    if untrained_out is not None:
        Path(untrained_out).unlink(missing_ok=True)
    if made_out and out.is_dir() and not any(out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)


def _find_resume_checkpoint(out: Path, cfg: RunConfig, seed: int) -> tuple[Path, dict] | None:
    """The newest of ``latest.pt`` / ``checkpoint.pt`` in ``out``, checked against ``cfg``. The
    partial checkpoint a killed job left (SIGTERM at a time limit or ``scancel`` ends the process
    without cleaning up: ``.latest.pt.<random>.tmp``, :func:`spgnet.atomic.atomic_path`) is removed:
    every rank passes here before the first step, so no write of this run is under way."""
    for name in (LATEST_NAME, CHECKPOINT_NAME):
        for partial in out.glob(f".{name}.*.tmp"):
            partial.unlink(missing_ok=True)
    found = [(path, load_checkpoint(path)) for path in (out / LATEST_NAME, out / CHECKPOINT_NAME) if path.is_file()]
    if not found:
        return None
    path, checkpoint = max(found, key=lambda item: int(item[1]["iteration"]))
    key = resume_key(cfg)
    if checkpoint.get("resume_key", checkpoint.get("config_hash")) not in (key, config_hash(cfg.model, cfg.train)):
        raise SpgnetError(
            f"{path}: trained with another configuration (hash {checkpoint.get('config_hash')}, "
            f"now {config_hash(cfg.model, cfg.train)}); use a new --out folder, drop --resume, or delete "
            f"{path.name} to start this folder afresh"
        )
    if int(checkpoint.get("seed", seed)) != seed:
        raise SpgnetError(f"{path}: trained with --seed {checkpoint.get('seed')}, not {seed}")
    if int(checkpoint["iteration"]) > cfg.train.iterations:
        raise SpgnetError(f"{path}: already at iteration {checkpoint['iteration']}, beyond "
                          f"train.iterations {cfg.train.iterations}")
    return path, checkpoint


def _prepare(cfg: RunConfig, out: Path, seed: int, resume: bool, info: distributed.DistInfo) -> Run:
    """Build the network, optimiser and precision, and restore them from a checkpoint on resume."""
    t, device = cfg.train, info.device
    found = _find_resume_checkpoint(out, cfg, seed) if resume else None
    checkpoint = found[1] if found else None
    if found and info.is_main:
        print(f"spgnet train: resuming from iteration {checkpoint['iteration']} ({found[0]})", file=sys.stderr)

    # The same initial weights on every process (seeded), ImageNet weights if given.
    pretrained = checkpoint["pretrained"] if checkpoint else describe_pretrained(cfg.model)
    torch.manual_seed(seed)
    model = build_network(cfg, device)
    if not checkpoint:  # what loading each ImageNet file converted for Inplace-ABN
        from spgnet.models.weights import with_norm_conversions

        pretrained = with_norm_conversions(pretrained, model)
    if info.distributed and device.type == "cpu" and cfg.model.norm == "inplace_abn_sync":
        model = distributed.convert_inplace_abn_sync(model)
    if info.distributed:
        distributed.set_sync_groups(model)
    fmt = memory_format(model, device)
    model.to(device, memory_format=fmt)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
    optimizer = build_optimizer(model, t)
    precision = resolve_precision(t.amp, device, inplace_abn=uses_inplace_abn(model))
    scaler = torch.amp.GradScaler(device.type) if precision.use_grad_scaler else None
    if info.is_main:
        precision.log()
        print(f"spgnet train: norm {norm_description(model, cfg.model.norm, info)}", file=sys.stderr, flush=True)

    state = LoopState()
    if checkpoint:
        model.load_state_dict(model_state(checkpoint))
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        state = LoopState.from_checkpoint(checkpoint)
    state.segments = list(state.segments) + [state.iteration]

    net = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not cfg.model.supervise,
        )
    return Run(cfg, out, seed, info, model, net, optimizer, precision, scaler, fmt, state, pretrained,
                (checkpoint or {}).get("mlflow_run_id"), (checkpoint or {}).get("untrained"))


def _loop(run: Run, on_step: Callable[[int, dict], None] | None) -> dict:
    """The training loop: step, log, validate, checkpoint; then the final metrics."""
    cfg, t, info, state = run.cfg, run.cfg.train, run.info, run.state
    dataset = build_train_dataset(cfg, run.seed)
    loader = build_train_loader(cfg, dataset, run.seed, state.iteration, info)
    log = TrainLog(run.out / LOG_NAME, state.rows, enabled=info.is_main)
    if info.is_main:
        (run.out / METRICS_NAME).unlink(missing_ok=True)  # written again at the end, never stale
    progress = Progress(t.iterations, state.iteration, t.log_every, label=cfg.experiment, enabled=info.is_main)
    first_iteration = state.iteration
    with start_run("train", cfg, f"{cfg.experiment}/train/seed{run.seed}", tags=run_tags(run),
                   enabled=None if info.is_main else False, resume_run_id=run.mlflow_run_id) as tracker:
        run.mlflow_run_id = tracker.run_id
        tracker.log_params(run_params(run))
        run.net.train()
        segment_t0 = time.perf_counter()
        for batch in loader:
            lr = poly_lr(t.lr, state.iteration, t.iterations, t.poly_power)
            set_lr(run.optimizer, lr)
            torch.manual_seed(step_seed(run.seed, state.iteration, info.rank))
            values, skipped = train_step(run.net, batch, run.optimizer, cfg, precision=run.precision,
                                         scaler=run.scaler, info=info, fmt=run.fmt)
            state.iteration += 1
            _count_skipped(run, values, skipped)
            state.add(values)
            progress.update(values["loss"], lr)
            if on_step is not None:
                on_step(state.iteration, values)

            end = state.iteration == t.iterations
            if state.iteration % t.log_every == 0 or end:
                row = state.close_window(lr, _validate(run, end))
                log.append(row)
                tracker.log_metrics({**{k: v for k, v in row.items() if k != "step" and v != ""},
                                     "it_per_s": progress.speed,
                                     "seconds": state.seconds + time.perf_counter() - segment_t0},
                                    step=state.iteration)
            if state.iteration % t.checkpoint_every == 0 or end:
                state.seconds += time.perf_counter() - segment_t0
                segment_t0 = time.perf_counter()
                _save(run, final=end)
        progress.close()
        state.seconds += time.perf_counter() - segment_t0
        metrics = final_metrics(run)
        if state.iteration == t.iterations and info.is_main:
            # the MLflow model once per finished training: not again when a rerun trained nothing
            write_results(run, metrics, tracker, with_model=state.iteration > first_iteration)
    return metrics


def _count_skipped(run: Run, values: dict, skipped: bool) -> None:
    """Count a skipped step; stop when it cannot be skipped (a non-finite loss without a gradient
    scaler) or when :data:`NONFINITE_PATIENCE` steps in a row were skipped."""
    state = run.state
    if not skipped:
        state.nonfinite_run = 0
        return
    state.skipped += 1
    state.nonfinite_run += 1
    if run.scaler is not None and state.nonfinite_run < NONFINITE_PATIENCE:
        return  # the scaler skipped the update and lowered its scale
    path = run.out / (LATEST_NAME if (run.out / LATEST_NAME).is_file() else CHECKPOINT_NAME)
    last = f"{path} (iteration {state.saved})" if path.is_file() else "none written yet"
    raise NonFiniteLossError(
        f"loss is {values['loss']} at iteration {state.iteration}"
        + (f" ({state.nonfinite_run} non-finite steps in a row)" if run.scaler is not None else "")
        + f"; stopping. Last good checkpoint: {last}"
    )


def _validate(run: Run, end: bool) -> dict | None:
    """The validation column of this log row: None without ``train.val_every``; else
    ``{"val_miou": mIoU %}`` on the val split (single scale, the experiment's strategy) every
    ``val_every`` iterations and at the end, ``{"val_miou": ""}`` on the other rows. Keeps
    ``best.pt`` when the mIoU is the best so far. Rank 0 evaluates, the others wait."""
    every = run.cfg.train.val_every
    if every <= 0:
        return None
    if not (run.state.iteration % every == 0 or end):
        return {"val_miou": ""}
    from spgnet.engine.evaluation.evaluate import validation_miou

    miou = None
    if run.info.is_main:
        run.model.eval()
        try:
            miou = validation_miou(run.model, run.cfg, run.info.device)
        finally:
            run.net.train()
        best = run.state.best
        if best is None or miou > best["val_miou"]:
            run.state.best = {"val_miou": miou, "iteration": run.state.iteration}
            save_checkpoint(run.out / BEST_NAME, {
                "model": run.model.state_dict(), "iteration": run.state.iteration, "val_miou": miou,
                "config": run.cfg.to_dict(), "config_hash": config_hash(run.cfg.model, run.cfg.train),
                "experiment": run.cfg.experiment, "seed": run.seed})
    return {"val_miou": distributed.broadcast_object(miou, run.info)}


def _save(run: Run, final: bool) -> None:
    """Write the loop's state: ``latest.pt`` on the way, ``checkpoint.pt`` (and no latest.pt) at the end."""
    run.state.saved = run.state.iteration
    if not run.info.is_main:
        return
    path = run.out / (CHECKPOINT_NAME if final else LATEST_NAME)
    save_checkpoint(path, {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "iteration": run.state.iteration,
        "seed": run.seed,
        "rng": rng_state(),
        "config": run.cfg.to_dict(),
        "config_hash": config_hash(run.cfg.model, run.cfg.train),
        "resume_key": resume_key(run.cfg),
        "experiment": run.cfg.experiment,
        **run.state.checkpoint_entries(),
        "pretrained": run.pretrained,
        "mlflow_run_id": run.mlflow_run_id,
        "untrained": run.untrained,
    })
    if final:
        (run.out / LATEST_NAME).unlink(missing_ok=True)
