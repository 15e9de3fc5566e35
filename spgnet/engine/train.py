"""``spgnet train EXPERIMENT``: Sec. 4.2's training recipe, one process or many (``torchrun``).

SGD (momentum 0.9, weight decay 1e-4, lr 0.01, poly 0.9) for ``train.iterations`` iterations of
``train.batch_size`` random ``train.crop`` crops; cross-entropy on the final prediction plus each
earlier stage's per-class logits (:mod:`spgnet.engine.losses`), with OHEM where the experiment
enables it. Outputs in ``--out DIR`` (only rank 0 writes; nothing is left behind by a run that
fails before its first checkpoint):

``latest.pt``           the state to resume from, written atomically every
                        ``train.checkpoint_every`` iterations (:mod:`spgnet.engine.checkpoint`)
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
is the mean over the global batch (OHEM's ``min_kept`` included, see :mod:`spgnet.engine.losses`)
and InPlaceABNSync merges batch statistics over the processes, so ``8x1``, ``4x2`` and ``1x8``
train the same network. Two CPU processes with gloo work as well (CI).

Precision (``train.amp``, :mod:`spgnet.engine.precision`): float16 autocast with a gradient scaler
on CUDA (a step whose loss or gradients overflow is skipped and the scale lowered; only
:data:`NONFINITE_PATIENCE` non-finite steps in a row stop the run), bfloat16 on CPUs that run it
natively, float32 otherwise. On CUDA ``cudnn.benchmark`` is on and networks without InPlaceABN
layers run channels-last.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from spgnet.atomic import write_json
from spgnet.config import RunConfig, config_hash
from spgnet.config_args import config_from_args
from spgnet.engine import distributed
from spgnet.engine.allocator import keep_freed_memory
from spgnet.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint, model_state, rng_state, save_checkpoint
from spgnet.engine.losses import segmentation_loss
from spgnet.engine.precision import Precision, resolve_precision
from spgnet.engine.progress import Progress
from spgnet.engine.schedule import build_optimizer, poly_lr, set_lr
from spgnet.engine.tracking import start_run
from spgnet.errors import SpgnetError

LOG_NAME = "train_log.csv"
METRICS_NAME = "train_metrics.json"
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
    cfg = config_from_args(args)
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
    """``{"image": float32[B,3,H,W], "label": [B,H,W], "name": [str]}``. Labels keep their dtype
    (uint8 from :class:`spgnet.data.transforms.TrainTransform`: 1 byte a pixel through the worker
    pipes and the host-to-device copy); :func:`train_step` makes them int64 on the device."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.stack([torch.as_tensor(s["label"]) for s in samples]),
        "name": [s.get("name", "") for s in samples],
    }


def build_train_loader(cfg: RunConfig, dataset: Dataset, seed: int, start: int, info) -> DataLoader:
    """The batches of iterations ``start`` .. ``train.iterations`` for this process."""
    from spgnet.data.sampler import TrainSampler

    t = cfg.train
    sampler = TrainSampler(len(dataset), t.batch_size, seed, start_iteration=start, iterations=t.iterations)
    return DataLoader(dataset, batch_sampler=RankBatches(sampler, start, t.iterations, info.rank, info.world_size),
                      num_workers=t.workers, collate_fn=_collate, pin_memory=info.device.type == "cuda",
                      persistent_workers=t.workers > 0, prefetch_factor=4 if t.workers > 0 else None)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def step_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """Seed of the global RNGs during ``iteration`` (dropout and the like)."""
    return (int(seed) * 1_000_003 + int(iteration) * 9_973 + int(rank)) % (2**63 - 1)


def describe_pretrained(model_cfg) -> dict:
    """Where the encoders' initial weights come from: ``{"source": "random" | "imagenet", "path":
    weights_root or None, "files": {backbone: {"file", "path", "url", "sha256", "published_hash"}}}``
    (:func:`spgnet.models.weights.describe_weights`); a missing file is a :class:`SpgnetError`."""
    from spgnet.models.weights import describe_weights

    return describe_weights(model_cfg)


def _norm_layer_name(model: nn.Module) -> str:
    names = sorted({type(m).__name__ for m in model.modules()
                    if type(m).__name__ in ("InPlaceABNSync", "InPlaceABN", "ABN", "BatchNormAct2d",
                                            "BatchNorm2d", "SyncBatchNorm")})
    return ",".join(names) or "none"


def resume_key(cfg: RunConfig) -> str:
    """What a checkpoint must share with the run that resumes it: the model and train sections,
    except ``train.iterations`` (a larger schedule extends a run)."""
    return config_hash(cfg.model, dataclasses.replace(cfg.train, iterations=0))


def memory_format(model: nn.Module, device: torch.device) -> torch.memory_format:
    """Channels-last on CUDA (tensor cores read NHWC without transposes), except for networks with
    InPlaceABN layers, whose kernels are written for NCHW-contiguous tensors."""
    if device.type != "cuda" or any("ABN" in type(m).__name__ for m in model.modules()):
        return torch.contiguous_format
    return torch.channels_last


# --------------------------------------------------------------------------------------------
# The log and the loop's state
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoopState:
    """What the loop carries from one iteration to the next and across ``--resume`` (saved in each
    checkpoint under ``"state"``, its rows under ``"log"``)."""

    iteration: int = 0
    rows: list = dataclasses.field(default_factory=list)  # train_log.csv so far
    window: dict | None = None  # sums of the losses since the last log row
    seconds: float = 0.0  # training time so far, over every segment
    segments: list = dataclasses.field(default_factory=list)  # iteration each (re)start began at
    saved: int = 0  # iteration of the last checkpoint
    last: dict | None = None  # the last step's losses
    skipped: int = 0  # steps skipped for a non-finite loss (gradient scaler)
    nonfinite_run: int = 0  # ... of them in a row, now
    best: dict | None = None  # {"val_miou", "iteration"} of best.pt

    def checkpoint_entries(self) -> dict:
        state = dataclasses.asdict(self)
        return {"log": state.pop("rows"), "state": state}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "LoopState":
        known = {f.name for f in dataclasses.fields(cls)}
        state = {k: v for k, v in (checkpoint.get("state") or {}).items() if k in known}
        state.update(iteration=int(checkpoint["iteration"]), rows=list(checkpoint.get("log") or []))
        return cls(**state)

    def add(self, values: dict) -> None:
        """Count one step's losses into the logging window."""
        self.last = values
        if self.window is None:
            self.window = {"count": 0, "sums": {}}
        self.window["count"] += 1
        for name, value in values.items():
            self.window["sums"][name] = self.window["sums"].get(name, 0.0) + value

    def close_window(self, lr: float, extra: dict | None = None) -> dict:
        """The log row of the window that ends at this iteration (the window restarts)."""
        count, sums = self.window["count"], self.window["sums"]
        row = {"step": self.iteration, "loss": sums["loss"] / count, "lr": lr}
        row.update({name: total / count for name, total in sums.items() if name != "loss"})
        row.update(extra or {})
        self.window = None
        self.rows.append(row)
        return row


class TrainLog:
    """``train_log.csv``: rewritten from the checkpoint's rows on resume, one row appended per window."""

    def __init__(self, path: Path, rows: list[dict], enabled: bool):
        self.path, self.enabled = path, enabled
        self.columns = list(rows[0]) if rows else None
        if enabled and rows:
            self._write(rows)
        elif enabled and path.exists():
            path.unlink()  # a fresh run replaces an old log

    def _write(self, rows: list[dict]) -> None:
        from spgnet.atomic import atomic_path

        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict) -> None:
        if not self.enabled:
            return
        if self.columns is None:
            self.columns = list(row)
            self._write([row])
            return
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(row)


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------


def forward(net: nn.Module, images: torch.Tensor, cfg: RunConfig, world_size: int) -> dict:
    """``net(images)``, with the error of a norm layer that sees one value per channel (the GAP
    branch on one crop per process, unsynchronised) turned into one line naming the fixes."""
    try:
        return net(images)
    except ValueError as err:
        if "per channel" not in str(err):
            raise
        # see spgnet.models.norm for why this stays an error
        if cfg.model.norm != "inplace_abn_sync":
            why = f"norm '{cfg.model.norm}' is not synchronised"
        elif world_size == 1:
            why = "norm 'inplace_abn_sync' is synchronised over one process"
        else:
            why = "that layer is not synchronised over the processes"
        raise SpgnetError(
            f"a normalisation layer got one value per channel ({str(err).splitlines()[0]}); "
            f"each of the {world_size} process(es) has {images.shape[0]} crop(s) of the "
            f"batch of {cfg.train.batch_size} and {why}: use at least 2 crops per process "
            "(train.batch_size), or norm 'inplace_abn_sync' over at least 2 processes "
            "(the paper: 8 GPUs x 1 crop)"
        ) from None


def train_step(net: nn.Module, batch: dict, optimizer: torch.optim.Optimizer, cfg: RunConfig, *,
               precision: Precision, scaler, info, fmt=torch.contiguous_format) -> tuple[dict[str, float], bool]:
    """One SGD step on this process's part of a global batch.

    Returns the global batch's losses ``{"loss": total, "loss_stage1": ..., ...}`` (the same on
    every process) and whether the update was skipped: with a gradient scaler when the loss or
    the gradients were not finite (the scaler lowers its scale; a non-finite forward pass also
    leaves the norm layers' running statistics as they were), without one when the loss was not
    finite (the caller then stops).
    """
    images = batch["image"].to(info.device, non_blocking=True).contiguous(memory_format=fmt)
    labels = batch["label"].to(info.device, non_blocking=True).long()
    buffers = [b for b in net.buffers() if b.is_floating_point()] if scaler is not None else []
    before = [b.clone() for b in buffers]
    # forward under autocast; each loss is this process's share of the global batch's mean
    with torch.autocast(device_type=info.device.type, dtype=precision.dtype, enabled=precision.dtype is not None):
        outputs = forward(net, images, cfg, info.world_size)
        loss, terms = segmentation_loss(outputs, labels, cfg.train, supervise=cfg.model.supervise,
                                        sync=info.distributed)
    shares = torch.stack([loss.detach().float()] + [v.detach().float() for v in terms.values()])
    values = distributed.all_reduce_sum(shares, info)  # the global batch's losses
    finite = bool(torch.isfinite(values).all())
    # backward: DDP averages gradients over processes, the shares must add up: scale by world size
    optimizer.zero_grad(set_to_none=True)
    skipped = not finite
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.scale(loss * info.world_size).backward()
        scaler.step(optimizer)  # skips the update when the gradients are not finite
        scaler.update()
        skipped = skipped or scaler.get_scale() < scale
        if not finite:
            torch._foreach_copy_(buffers, before) if buffers else None
    elif finite:
        (loss * info.world_size).backward()
        optimizer.step()
    names = ["loss"] + [f"loss_{k}" for k in terms]
    return dict(zip(names, values.tolist())), skipped


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
    A run that fails before its first checkpoint removes what it wrote (and ``out``, if it made it).
    """
    out = Path(out)
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    made_out = not out.exists()
    info = distributed.setup(cfg.train.device)
    try:
        run = _prepare(cfg, out, seed, resume, info, model)
        return _loop(run, dataset, stop_after, on_step)
    except BaseException:
        if info.is_main and not any((out / name).exists() for name in (LATEST_NAME, CHECKPOINT_NAME)):
            _remove_partial_run(out, made_out)  # nothing to resume from: leave nothing behind
        raise
    finally:
        if owns_group:
            distributed.cleanup()


def _remove_partial_run(out: Path, made_out: bool) -> None:
    for name in (LOG_NAME, METRICS_NAME):
        (out / name).unlink(missing_ok=True)
    if made_out and out.is_dir() and not any(out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)


@dataclasses.dataclass
class _Run:
    """Everything the loop needs, built once by :func:`_prepare`."""

    cfg: RunConfig
    out: Path
    seed: int
    info: object
    model: nn.Module  # the network (its state_dict is what checkpoints hold)
    net: nn.Module  # the network as trained: DDP-wrapped when there are several processes
    optimizer: torch.optim.Optimizer
    precision: Precision
    scaler: object
    fmt: torch.memory_format
    state: LoopState
    pretrained: dict
    mlflow_run_id: str | None


def _find_resume_checkpoint(out: Path, cfg: RunConfig, seed: int) -> tuple[Path, dict] | None:
    """The newest of ``latest.pt`` / ``checkpoint.pt`` in ``out``, checked against ``cfg``."""
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


def _prepare(cfg: RunConfig, out: Path, seed: int, resume: bool, info, model: nn.Module | None) -> _Run:
    """Build the network, optimiser and precision, and restore them from a checkpoint on resume."""
    t, device = cfg.train, info.device
    found = _find_resume_checkpoint(out, cfg, seed) if resume else None
    checkpoint = found[1] if found else None
    if found and info.is_main:
        print(f"spgnet train: resuming from iteration {checkpoint['iteration']} ({found[0]})", file=sys.stderr)

    # The same initial weights on every process (seeded), ImageNet weights if given.
    pretrained = checkpoint["pretrained"] if checkpoint else describe_pretrained(cfg.model)
    torch.manual_seed(seed)
    if model is None:
        from spgnet.models import build_model_from_config

        model = build_model_from_config(cfg.model, device=device)
    if info.distributed and device.type == "cpu" and cfg.model.norm == "inplace_abn_sync":
        model = distributed.convert_inplace_abn_sync(model)
    if info.distributed:
        distributed.set_sync_groups(model)
    fmt = memory_format(model, device)
    model.to(device, memory_format=fmt)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
    optimizer = build_optimizer(model, t)
    precision = resolve_precision(t.amp, device)
    scaler = torch.amp.GradScaler(device.type) if precision.use_grad_scaler else None
    if info.is_main:
        precision.log()

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
    return _Run(cfg, out, seed, info, model, net, optimizer, precision, scaler, fmt, state, pretrained,
                (checkpoint or {}).get("mlflow_run_id"))


def _loop(run: _Run, dataset: Dataset | None, stop_after: int | None, on_step) -> dict:
    """The training loop: step, log, validate, checkpoint; then the final metrics."""
    cfg, t, info, state = run.cfg, run.cfg.train, run.info, run.state
    if dataset is None:
        dataset = build_train_dataset(cfg, run.seed)
    loader = build_train_loader(cfg, dataset, run.seed, state.iteration, info)
    log = TrainLog(run.out / LOG_NAME, state.rows, enabled=info.is_main)
    if info.is_main:
        (run.out / METRICS_NAME).unlink(missing_ok=True)  # written again at the end, never stale
    progress = Progress(t.iterations, state.iteration, t.log_every, label=cfg.experiment, enabled=info.is_main)
    with start_run("train", cfg, f"{cfg.experiment}/train/seed{run.seed}", tags=_run_tags(run),
                   enabled=None if info.is_main else False, resume_run_id=run.mlflow_run_id) as tracker:
        run.mlflow_run_id = tracker.run_id
        tracker.log_params(_run_params(run))
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
            if stop_after is not None and state.iteration >= stop_after:
                break  # as if killed here: no checkpoint beyond the last scheduled one
        progress.close()
        state.seconds += time.perf_counter() - segment_t0
        metrics = _final_metrics(run)
        if state.iteration == t.iterations and info.is_main:
            _write_results(run, metrics, tracker)
    return metrics


def _count_skipped(run: _Run, values: dict, skipped: bool) -> None:
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


def _validate(run: _Run, end: bool) -> dict | None:
    """The validation column of this log row: None without ``train.val_every``; else
    ``{"val_miou": mIoU %}`` on the val split (single scale, the experiment's strategy) every
    ``val_every`` iterations and at the end, ``{"val_miou": ""}`` on the other rows. Keeps
    ``best.pt`` when the mIoU is the best so far. Rank 0 evaluates, the others wait."""
    every = run.cfg.train.val_every
    if every <= 0:
        return None
    if not (run.state.iteration % every == 0 or end):
        return {"val_miou": ""}
    from spgnet.engine.evaluate import validation_miou

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


def _save(run: _Run, final: bool) -> None:
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
    })
    if final:
        (run.out / LATEST_NAME).unlink(missing_ok=True)


def _run_tags(run: _Run) -> dict:
    return {"spgnet.seed": run.seed, "spgnet.pretrained": run.pretrained["path"] or "random",
            "spgnet.resumed_from": run.state.iteration, "spgnet.world_size": run.info.world_size,
            "spgnet.out": str(run.out.resolve())}


def _run_params(run: _Run) -> dict:
    return {"run.seed": run.seed, "run.pretrained": run.pretrained["source"],
            "run.world_size": run.info.world_size, "run.device": str(run.info.device),
            "run.amp": run.precision.dtype is not None, "run.precision": run.precision.name,
            "run.norm_layer": _norm_layer_name(run.model)}


def _final_metrics(run: _Run) -> dict:
    state, cfg = run.state, run.cfg
    last = state.last or {}
    return {
        "experiment": cfg.experiment,
        "profile": cfg.profile,
        "iterations": state.iteration,
        "final_loss": last.get("loss", math.nan),
        "final_losses": {k: v for k, v in last.items() if k != "loss"},
        "final_loss_logged": state.rows[-1]["loss"] if state.rows else math.nan,
        "seconds": round(state.seconds, 3),
        "it_per_s": round(state.iteration / state.seconds, 4) if state.seconds > 0 else None,
        "seed": run.seed,
        "pretrained": run.pretrained,
        "config_hash": config_hash(cfg.model, cfg.train),
        "world_size": run.info.world_size,
        "device": str(run.info.device),
        "amp": run.precision.dtype is not None,
        "precision": run.precision.name,
        "skipped_steps": state.skipped,
        "best": state.best,
        "norm_layer": _norm_layer_name(run.model),
        "segments": state.segments,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "checkpoint": CHECKPOINT_NAME,
    }


def _write_results(run: _Run, metrics: dict, tracker) -> None:
    metrics_path, log_path = run.out / METRICS_NAME, run.out / LOG_NAME
    write_json(metrics_path, metrics)
    tracker.log_metrics({"final_loss": metrics["final_loss"], "train_seconds": metrics["seconds"],
                         "train_it_per_s": metrics["it_per_s"] or 0.0}, step=metrics["iterations"])
    tracker.log_dict(run.cfg.to_dict(), "config.json")
    tracker.log_artifact(metrics_path)
    if log_path.exists():
        tracker.log_artifact(log_path)
    _log_model(run, tracker)


def _log_model(run: _Run, tracker) -> None:
    """With the profile's ``tracking.log_model``: the trained network as an MLflow model, registered
    under the experiment's name (:mod:`spgnet.engine.model_registry`). A failure is a warning."""
    from spgnet.config import load_profile
    from spgnet.engine.model_registry import log_model_enabled, log_trained_model

    # only the profile's tracking section is read: any data root will do
    if not tracker.run_id or not log_model_enabled(load_profile(run.cfg.profile, data_root=run.cfg.data.root)):
        return
    try:
        log_trained_model(run.model, run.cfg, tracker.run_id)
    except Exception as err:  # noqa: BLE001 - tracking never ends a finished training
        print(f"spgnet train: warning: the MLflow model was not logged ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else ''})", file=sys.stderr)
