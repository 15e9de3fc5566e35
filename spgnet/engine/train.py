"""``spgnet train EXPERIMENT``: Sec. 4.2's training recipe, one process or many (``torchrun``).

SGD (momentum 0.9, weight decay 1e-4, lr 0.01, poly 0.9) for ``train.iterations`` iterations of
``train.batch_size`` random ``train.crop`` crops; cross-entropy on the final prediction plus each
earlier stage's per-class logits (:mod:`spgnet.engine.losses`), with OHEM where the experiment
enables it. Outputs in ``--out DIR`` (only rank 0 writes):

``checkpoint.pt``       latest state, written atomically every ``train.checkpoint_every``
                        iterations and at the end (:mod:`spgnet.engine.checkpoint`)
``train_log.csv``       step, loss, lr and one ``loss_stageK`` column per supervised stage,
                        averaged over each ``train.log_every`` window
``train_metrics.json``  written at the end: iterations, final loss, seconds, it/s, seed,
                        pretrained source, config hash

Reproducibility: every random draw derives from (seed, iteration): the sample order and each
sample's augmentation through :class:`spgnet.data.sampler.TrainSampler`, anything random inside
the model from ``torch.manual_seed`` reseeded at every iteration. So ``--resume`` after a kill
continues exactly where the last checkpoint left off; on CPU the final weights and losses are
bit-identical to an uninterrupted run's.

Multi-GPU: ``torchrun --nproc_per_node=G -m spgnet train ...`` (DistributedDataParallel; each
iteration's global batch is split between the processes; InPlaceABNSync synchronises the batch
statistics). Two CPU processes with gloo work as well (CI). Mixed precision per ``train.amp``
(``auto``/``true``/``false``, :mod:`spgnet.engine.precision`): float16 with a gradient scaler on
CUDA, bfloat16 only on CPUs that run it natively (AVX-512 BF16 or AMX), float32 otherwise; the
precision used is logged on stderr and recorded (``run.precision``, ``precision``).
"""

from __future__ import annotations

import csv
import hashlib
import math
import platform
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from spgnet.atomic import write_json
from spgnet.config import RunConfig, config_hash, load_profile, resolve
from spgnet.engine import distributed
from spgnet.engine.allocator import keep_freed_memory
from spgnet.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, model_state, rng_state, save_checkpoint
from spgnet.engine.losses import segmentation_loss
from spgnet.engine.precision import resolve_precision
from spgnet.engine.progress import Progress
from spgnet.engine.schedule import build_optimizer, poly_lr, set_lr
from spgnet.engine.tracking import start_run
from spgnet.errors import SpgnetError

LOG_NAME = "train_log.csv"
METRICS_NAME = "train_metrics.json"


class NonFiniteLossError(SpgnetError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(args) -> int:
    """Entry point of ``spgnet train`` (see :mod:`spgnet.cli`)."""
    keep_freed_memory()
    profile = load_profile(args.profile, data_root=getattr(args, "data_root", None))
    train_overrides, model_overrides = {}, {}
    if getattr(args, "iterations", None) is not None:
        if args.iterations < 1:
            raise SpgnetError(f"--iterations must be positive, got {args.iterations}")
        train_overrides["iterations"] = args.iterations
    if getattr(args, "pretrained", None):
        model_overrides["pretrained"] = str(Path(args.pretrained).expanduser().resolve())
    cfg = resolve(args.experiment, profile, train=train_overrides, model=model_overrides)
    train(cfg, Path(args.out), seed=args.seed, resume=args.resume)
    return 0


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


class RankBatches(Sampler):
    """This process's share of each iteration's global batch, from ``start`` to ``stop``."""

    def __init__(self, sampler, start: int, stop: int, rank: int = 0, world_size: int = 1):
        self.sampler, self.start, self.stop = sampler, start, stop
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        for iteration in range(self.start, self.stop):
            yield distributed.shard(self.sampler.keys(iteration), self.rank, self.world_size)


def build_train_dataset(cfg: RunConfig, seed: int) -> Dataset:
    from spgnet.data import build_dataset
    from spgnet.data.transforms import TrainTransform

    t = cfg.train
    transform = TrainTransform(t.crop, t.scale_min, t.scale_max, t.scale_step, seed=seed)
    return build_dataset(t.dataset, cfg.data.path(), t.split, transform=transform)


def _collate(samples: list[dict]) -> dict:
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.stack([torch.as_tensor(s["label"], dtype=torch.long) for s in samples]),
        "name": [s.get("name", "") for s in samples],
    }


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def step_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """Seed of the global RNGs during ``iteration`` (dropout and the like)."""
    return (int(seed) * 1_000_003 + int(iteration) * 9_973 + int(rank)) % (2**63 - 1)


def describe_pretrained(path: str | None) -> dict:
    if not path:
        return {"source": "random", "path": None, "sha256": None}
    file = Path(path)
    if not file.is_file():
        raise SpgnetError(f"pretrained weights {file}: no such file")
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"source": "file", "path": str(file), "sha256": digest.hexdigest()}


def _norm_layer_name(model: nn.Module) -> str:
    names = sorted({type(m).__name__ for m in model.modules()
                    if type(m).__name__ in ("InPlaceABNSync", "InPlaceABN", "ABN", "BatchNormAct2d",
                                            "BatchNorm2d", "SyncBatchNorm")})
    return ",".join(names) or "none"


def _write_log(path: Path, rows: list[dict], columns: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _append_log(path: Path, row: dict, columns: list[str]) -> None:
    with open(path, "a", newline="", encoding="utf-8") as handle:
        csv.DictWriter(handle, fieldnames=columns).writerow(row)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def train(cfg: RunConfig, out: str | Path, seed: int = 0, resume: bool = False, *,
          model: nn.Module | None = None, dataset: Dataset | None = None,
          stop_after: int | None = None, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``cfg`` into folder ``out``; returns the final metrics (also ``train_metrics.json``).

    ``model``/``dataset`` replace the experiment's network and training set (tests);
    ``stop_after=k`` ends the run after iteration ``k`` as if it were killed there (no
    ``train_metrics.json``); ``on_step(iteration, losses)`` is called after every step.
    """
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = distributed.setup(cfg.train.device)
    try:
        return _train(cfg, Path(out), seed, resume, info, model, dataset, stop_after, on_step)
    finally:
        if owns_group:
            distributed.cleanup()


def _train(cfg, out, seed, resume, info, model, dataset, stop_after, on_step) -> dict:
    t = cfg.train
    device = info.device
    total = int(t.iterations)
    ckpt_path = out / CHECKPOINT_NAME
    log_path, metrics_path = out / LOG_NAME, out / METRICS_NAME
    chash = config_hash(cfg.model, cfg.train)
    if t.batch_size % info.world_size:
        raise SpgnetError(f"train.batch_size {t.batch_size} is not divisible by the {info.world_size} processes")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)

    checkpoint = None
    if resume and ckpt_path.is_file():
        checkpoint = load_checkpoint(ckpt_path)
        if checkpoint.get("config_hash") != chash:
            raise SpgnetError(
                f"{ckpt_path}: trained with another configuration (hash {checkpoint.get('config_hash')}, "
                f"now {chash}); use a new --out folder or drop --resume"
            )
        if int(checkpoint.get("seed", seed)) != seed:
            raise SpgnetError(f"{ckpt_path}: trained with --seed {checkpoint.get('seed')}, not {seed}")

    # Model: the same initial weights on every rank (seeded), ImageNet weights if given.
    pretrained = checkpoint["pretrained"] if checkpoint else describe_pretrained(cfg.model.pretrained)
    torch.manual_seed(seed)
    if model is None:
        from spgnet.models import build_model_from_config

        model = build_model_from_config(cfg.model, device=device)
    if info.distributed and device.type == "cpu" and cfg.model.norm == "inplace_abn_sync":
        model = distributed.convert_inplace_abn_sync(model)
    if info.distributed:
        distributed.set_sync_groups(model)
    model.to(device)
    optimizer = build_optimizer(model, t)
    precision = resolve_precision(t.amp, device)
    amp, amp_dtype = precision.enabled, precision.dtype
    scaler = torch.amp.GradScaler(device.type) if precision.use_grad_scaler else None
    if info.is_main:
        precision.log()

    start, rows, state = 0, [], {"window": None, "seconds": 0.0, "last": None, "segments": []}
    if checkpoint:
        model.load_state_dict(model_state(checkpoint))
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        start = int(checkpoint["iteration"])
        rows = list(checkpoint.get("log") or [])
        state = dict(checkpoint.get("state") or state)
    state["segments"] = list(state.get("segments") or []) + [start]

    net = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not cfg.model.supervise,
        )

    if dataset is None:
        dataset = build_train_dataset(cfg, seed)
    from spgnet.data.sampler import TrainSampler

    sampler = TrainSampler(len(dataset), t.batch_size, seed, start_iteration=start, iterations=total)
    loader = DataLoader(dataset, batch_sampler=RankBatches(sampler, start, total, info.rank, info.world_size),
                        num_workers=t.workers, collate_fn=_collate, pin_memory=device.type == "cuda")

    run_name = f"{cfg.experiment}/train/seed{seed}"
    tags = {"spgnet.seed": seed, "spgnet.pretrained": pretrained["path"] or "random",
            "spgnet.resumed_from": start, "spgnet.world_size": info.world_size, "spgnet.out": str(out.resolve())}
    progress = Progress(total, start, t.log_every, label=cfg.experiment, enabled=info.is_main)
    with start_run("train", cfg, run_name, tags=tags, enabled=None if info.is_main else False,
                   resume_run_id=(checkpoint or {}).get("mlflow_run_id")) as tracker:
        tracker.log_params({"run.seed": seed, "run.pretrained": pretrained["source"],
                            "run.world_size": info.world_size, "run.device": str(device),
                            "run.amp": amp, "run.precision": precision.name,
                            "run.norm_layer": _norm_layer_name(model)})
        columns = None
        if info.is_main and rows:
            columns = list(rows[0])
            _write_log(log_path, rows, columns)
        elif info.is_main and log_path.exists():
            log_path.unlink()  # a fresh run replaces an old log
        if info.is_main and metrics_path.exists():
            metrics_path.unlink()  # written again at the end; never left stale beside a new run

        net.train()
        iteration = start
        segment_t0 = time.perf_counter()
        window = state.get("window")
        for batch in loader:
            lr = poly_lr(t.lr, iteration, total, t.poly_power)
            set_lr(optimizer, lr)
            torch.manual_seed(step_seed(seed, iteration, info.rank))
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp):
                try:
                    outputs = net(images)
                except ValueError as err:
                    if "per channel" not in str(err):
                        raise
                    # e.g. the decoder's GAP branch (a 1x1 map) with one crop per process and a norm
                    # that is not synchronised: see spgnet.models.norm for why this stays an error
                    if cfg.model.norm != "inplace_abn_sync":
                        why = f"norm '{cfg.model.norm}' is not synchronised"
                    elif info.world_size == 1:
                        why = "norm 'inplace_abn_sync' is synchronised over one process"
                    else:
                        why = "that layer is not synchronised over the processes"
                    raise SpgnetError(
                        f"a normalisation layer got one value per channel ({str(err).splitlines()[0]}); "
                        f"each of the {info.world_size} process(es) has {images.shape[0]} crop(s) of the "
                        f"batch of {t.batch_size} and {why}: use at least 2 crops per process "
                        "(train.batch_size), or norm 'inplace_abn_sync' over at least 2 processes "
                        "(the paper: 8 GPUs x 1 crop)"
                    ) from None
                loss, terms = segmentation_loss(outputs, labels, t, supervise=cfg.model.supervise)
            names = ["loss"] + [f"loss_{k}" for k in terms]
            values = distributed.all_reduce_mean(
                torch.stack([loss.detach().float()] + [v.detach().float() for v in terms.values()]), info)
            if not bool(torch.isfinite(values).all()):
                last = f"{ckpt_path} (iteration {state.get('saved', 0)})" if ckpt_path.is_file() else "none written yet"
                raise NonFiniteLossError(
                    f"loss is {values[0].item()} at iteration {iteration + 1}; stopping. "
                    f"Last good checkpoint: {last}"
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            iteration += 1

            current = {n: float(v) for n, v in zip(names, values.tolist())}
            state["last"] = current
            if window is None:
                window = {"count": 0, "sums": {n: 0.0 for n in names}}
            window["count"] += 1
            for n in names:
                window["sums"][n] = window["sums"].get(n, 0.0) + current[n]
            progress.update(current["loss"], lr)
            if on_step is not None:
                on_step(iteration, current)

            if iteration % t.log_every == 0 or iteration == total:
                row = {"step": iteration, "loss": window["sums"]["loss"] / window["count"], "lr": lr}
                row.update({n: window["sums"][n] / window["count"] for n in names[1:]})
                window = None
                rows.append(row)
                if info.is_main:
                    if columns is None:
                        columns = list(row)
                        _write_log(log_path, [row], columns)
                    else:
                        _append_log(log_path, row, columns)
                    elapsed = state["seconds"] + time.perf_counter() - segment_t0
                    tracker.log_metrics({**{k: v for k, v in row.items() if k != "step"},
                                         "it_per_s": progress.speed, "seconds": elapsed}, step=iteration)

            if iteration % t.checkpoint_every == 0 or iteration == total:
                state["window"] = window
                state["seconds"] += time.perf_counter() - segment_t0
                segment_t0 = time.perf_counter()
                state["saved"] = iteration
                if info.is_main:
                    save_checkpoint(ckpt_path, {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "iteration": iteration,
                        "seed": seed,
                        "rng": rng_state(),
                        "config": cfg.to_dict(),
                        "config_hash": chash,
                        "experiment": cfg.experiment,
                        "log": rows,
                        "state": state,
                        "pretrained": pretrained,
                        "mlflow_run_id": tracker.run_id,
                    })
            if stop_after is not None and iteration >= stop_after:
                break  # as if killed here: no checkpoint beyond the last scheduled one
        progress.close()
        state["seconds"] += time.perf_counter() - segment_t0

        last = state.get("last") or {}
        metrics = {
            "experiment": cfg.experiment,
            "profile": cfg.profile,
            "iterations": iteration,
            "final_loss": last.get("loss", math.nan),
            "final_losses": {k: v for k, v in last.items() if k != "loss"},
            "final_loss_logged": rows[-1]["loss"] if rows else math.nan,
            "seconds": round(state["seconds"], 3),
            "it_per_s": round(iteration / state["seconds"], 4) if state["seconds"] > 0 else None,
            "seed": seed,
            "pretrained": pretrained,
            "config_hash": chash,
            "world_size": info.world_size,
            "device": str(device),
            "amp": amp,
            "precision": precision.name,
            "norm_layer": _norm_layer_name(model),
            "segments": state["segments"],
            "torch": torch.__version__,
            "python": platform.python_version(),
            "checkpoint": CHECKPOINT_NAME,
        }
        if iteration < total:  # stopped early (stop_after): like a killed run, no final metrics
            return metrics
        if info.is_main:
            write_json(metrics_path, metrics)
            tracker.log_metrics({"final_loss": metrics["final_loss"], "train_seconds": metrics["seconds"],
                                 "train_it_per_s": metrics["it_per_s"] or 0.0}, step=iteration)
            tracker.log_dict(cfg.to_dict(), "config.json")
            tracker.log_artifact(metrics_path)
            if log_path.exists():
                tracker.log_artifact(log_path)
        return metrics
