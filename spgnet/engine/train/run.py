"""A training run as :mod:`spgnet.engine.train.loop` builds it, and what the run says about itself.

:class:`Run` holds everything the loop needs (built once by the loop's ``_prepare``). The rest
describes the run: where the encoders' initial weights come from (:func:`describe_pretrained`), its
norm layers in words (:func:`norm_description`), the MLflow tags and params it starts with, the
final metrics (:func:`final_metrics`, ``train_metrics.json``) and what a finished run writes and
logs (:func:`write_results`, with the trained network as an MLflow model: :func:`log_model`).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import sys
from pathlib import Path

import torch
from torch import nn

from spgnet.atomic import write_json
from spgnet.config import RunConfig, config_hash
from spgnet.engine.train.checkpoint import CHECKPOINT_NAME
from spgnet.engine.train.distributed import DistInfo
from spgnet.engine.train.precision import Precision
from spgnet.engine.train.state import LoopState

LOG_NAME = "train_log.csv"
METRICS_NAME = "train_metrics.json"


@dataclasses.dataclass
class Run:
    """Everything the loop needs, built once by :mod:`spgnet.engine.train.loop`'s ``_prepare``."""

    cfg: RunConfig
    out: Path
    seed: int
    info: DistInfo
    model: nn.Module  # the network (its state_dict is what checkpoints hold)
    net: nn.Module  # the network as trained: DDP-wrapped when there are several processes
    optimizer: torch.optim.Optimizer
    precision: Precision
    scaler: torch.amp.GradScaler | None  # float16's gradient scaler, None otherwise
    fmt: torch.memory_format
    state: LoopState
    pretrained: dict
    mlflow_run_id: str | None
    untrained: dict | None = None  # the untrained reference, scored before the run's first step


def describe_pretrained(model_cfg) -> dict:
    """Where the encoders' initial weights come from: ``{"source": "random" | "imagenet", "path":
    weights_root or None, "files": {backbone: {"file", "path", "url", "sha256", "published_hash"}}}``
    (:func:`spgnet.models.weights.describe_weights`); a missing file is a :class:`SpgnetError`."""
    from spgnet.models.weights import describe_weights

    return describe_weights(model_cfg)


def norm_layer_name(model: nn.Module) -> str:
    names = sorted({type(m).__name__ for m in model.modules()
                    if type(m).__name__ in ("InPlaceABNSync", "InPlaceABN", "ABN", "BatchNormAct2d",
                                            "BatchNorm2d", "SyncBatchNorm")})
    return ",".join(names) or "none"


def norm_description(model: nn.Module, requested: str, info) -> str:
    """What the norm layers are, in words, beside what the config asked for: e.g. ``InPlaceABNSync
    over 2 processes (inplace_abn_sync)`` or ``InPlaceABN (inplace_abn_sync; one process: nothing
    to synchronise)``."""
    built = norm_layer_name(model)
    if "InPlaceABNSync" in built.split(","):
        return f"{built} over {info.world_size} processes ({requested})"
    if requested == "inplace_abn_sync":
        return f"{built} ({requested}; one process: nothing to synchronise)"
    return f"{built} ({requested})"


def run_tags(run: Run) -> dict:
    return {"spgnet.seed": run.seed, "spgnet.pretrained": run.pretrained["path"] or "random",
            "spgnet.resumed_from": run.state.iteration, "spgnet.world_size": run.info.world_size,
            "spgnet.out": str(run.out.resolve())}


def run_params(run: Run) -> dict:
    return {"run.seed": run.seed, "run.pretrained": run.pretrained["source"],
            "run.world_size": run.info.world_size, "run.device": str(run.info.device),
            "run.amp": run.precision.dtype is not None, "run.precision": run.precision.name,
            "run.norm_layer": norm_layer_name(run.model), "run.threads": torch.get_num_threads()}


def final_metrics(run: Run) -> dict:
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
        "threads": torch.get_num_threads(),  # per process: the profile's (spgnet.runtime.threads)
        "device": str(run.info.device),
        "amp": run.precision.dtype is not None,
        "precision": run.precision.name,
        "skipped_steps": state.skipped,
        "best": state.best,
        "norm_layer": norm_layer_name(run.model),
        "schedule": schedule_record(cfg),
        "data": data_record(cfg),
        "segments": state.segments,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "checkpoint": CHECKPOINT_NAME,
    }


def schedule_record(cfg: RunConfig) -> dict:
    """The schedule this run trained with, as the report compares it with a profile's
    (:mod:`spgnet.analysis.report.provenance`)."""
    t = cfg.train
    return {"dataset": t.dataset, "split": t.split, "crop": t.crop, "batch_size": t.batch_size,
            "iterations": t.iterations, "device": t.device}


def data_record(cfg: RunConfig) -> dict:
    """Where the training data came from: its root, and whether ``spgnet make-synthetic`` wrote it
    (its manifest is there), whatever the profile calls it."""
    from spgnet.data.synthetic import is_generated

    root = cfg.data.path()
    return {"root": str(root), "synthetic": is_generated(root)}


def write_results(run: Run, metrics: dict, tracker, *, with_model: bool = True) -> None:
    """``train_metrics.json``, and to MLflow: the final metrics, the config, the metrics file, the
    log and (``with_model``) the trained network."""
    metrics_path, log_path = run.out / METRICS_NAME, run.out / LOG_NAME
    write_json(metrics_path, metrics)
    tracker.log_metrics({"final_loss": metrics["final_loss"], "train_seconds": metrics["seconds"],
                         "train_it_per_s": metrics["it_per_s"] or 0.0}, step=metrics["iterations"])
    tracker.log_dict(run.cfg.to_dict(), "config.json")
    tracker.log_artifact(metrics_path)
    if log_path.exists():
        tracker.log_artifact(log_path)
    if with_model:
        log_model(run, tracker)


def log_model(run: Run, tracker) -> None:
    """With the profile's ``tracking.log_model``: the trained network as an MLflow model, registered
    under the experiment's name (:mod:`spgnet.serving.mlflow_model`). A failure is a warning."""
    from spgnet.config import load_profile
    from spgnet.serving.mlflow_model import log_model_enabled, log_trained_model

    # only the profile's tracking section is read: any data root will do
    if not tracker.run_id or not log_model_enabled(load_profile(run.cfg.profile, data_root=run.cfg.data.root,
                                                                            experiments=run.cfg.experiments_file)):
        return
    try:
        log_trained_model(run.model, run.cfg, tracker.run_id)
    except Exception as err:  # noqa: BLE001 - tracking never ends a finished training
        print(f"spgnet train: warning: the MLflow model was not logged ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else ''})", file=sys.stderr)
