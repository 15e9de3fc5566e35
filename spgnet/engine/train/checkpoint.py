"""Atomic checkpoints: ``checkpoint.pt`` in the run folder, replaced whole or not at all.

A checkpoint is a plain dict (loadable with ``torch.load(path, weights_only=True)``):

==================  ==========================================================================
``model``           the network's ``state_dict`` (never DDP-prefixed)
``optimizer``       the SGD state (momentum buffers)
``scaler``          the AMP grad scaler's state, or None
``iteration``       iterations completed
``seed``            the run's seed
``rng``             torch / numpy / python / CUDA RNG states at the checkpoint
``config``          ``RunConfig.to_dict()``; ``config_hash`` its model+train hash
``log``             the rows of ``train_log.csv`` so far (a resumed run rewrites the file)
``state``           loop bookkeeping (logging window, elapsed seconds, last loss)
``pretrained``      where the initial weights came from
==================  ==========================================================================

:func:`save_checkpoint` writes through :func:`spgnet.atomic.atomic_path` (a temporary file in the
same folder, flushed to disk, renamed over the target with ``os.replace``, mode 0644 less the
umask like every other output), so a run killed at any moment leaves either the previous
checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spgnet.atomic import atomic_path
from spgnet.errors import SpgnetError, first_line

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`spgnet.atomic.atomic_path`); returns ``path``.

    A write that fails for lack of space (torch's zip writer says ``unexpected pos`` or ``failed
    writing``; the OS ``No space left on device``) is one :class:`SpgnetError` naming ``path``; the
    file already at ``path`` (the last checkpoint a rerun resumes from) is untouched."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            torch.save(state, handle)
    except RuntimeError as err:
        text = str(err)
        if "unexpected pos" not in text and "failed writing" not in text:
            raise
        kept = "; the checkpoint already there is untouched" if path.exists() else ""
        raise SpgnetError(f"{path}: cannot write the checkpoint ({first_line(err)}: is the disk full?){kept}") from None
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (one-line error naming the file when it
    is missing or unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise SpgnetError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise SpgnetError(f"{path}: not a readable checkpoint ({first_line(err)})") from None


def load_model_weights(model: torch.nn.Module, path: str | Path, experiment: str | None = None) -> dict[str, Any]:
    """Load the ``"model"`` weights of the trained checkpoint at ``path`` into ``model``; returns the
    checkpoint. DDP's ``module.`` prefix is dropped. A missing or unreadable file, a file without
    ``"model"``, or weights that do not fit ``model`` (missing, unexpected or differently shaped
    tensors) is a one-line :class:`SpgnetError` naming the file (and ``experiment`` when given).
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise SpgnetError(f"{path}: not a spgnet checkpoint (no 'model' entry)")
    state = ckpt["model"]
    if state and all(key.startswith("module.") for key in state):  # saved from DistributedDataParallel
        state = model_state(state)
    target = f"experiment '{experiment}'" if experiment else "the experiment's network"
    own = model.state_dict()
    for key, value in state.items():
        if key in own and hasattr(value, "shape") and tuple(own[key].shape) != tuple(value.shape):
            raise SpgnetError(
                f"{path}: checkpoint does not fit {target} ('{key}' is {list(value.shape)}, "
                f"expected {list(own[key].shape)})"
            )
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # anything the shape check did not foresee: still one line
        raise SpgnetError(f"{path}: checkpoint does not fit {target} ({first_line(err)})") from None
    if result.missing_keys or result.unexpected_keys:
        what = (f"missing '{result.missing_keys[0]}'" if result.missing_keys
                else f"unexpected '{result.unexpected_keys[0]}'")
        raise SpgnetError(
            f"{path}: checkpoint does not fit {target} ({what}; "
            f"{len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected keys)"
        )
    return ckpt


def load_trained_model(path: str | Path, cfg, device: str | torch.device = "cpu", build=None) -> torch.nn.Module:
    """The network of run config ``cfg`` with the trained weights of ``path``, on ``device``, in eval
    mode. ``build(model_cfg, device)`` makes the network (default
    :func:`spgnet.models.build_model_from_config`); it gets ``cfg.model`` with the norm layer that
    runs on ``device`` and no ImageNet weights (the checkpoint replaces them). Errors as
    :func:`load_model_weights`.
    """
    import dataclasses
    import sys
    import warnings

    from spgnet.models.norm import usable_norm

    if build is None:
        from spgnet.models import build_model_from_config as build
    with warnings.catch_warnings():
        if not sys.stderr.isatty():  # the norm substitution warning is for people, not logs
            warnings.simplefilter("ignore", RuntimeWarning)
        model_cfg = dataclasses.replace(cfg.model, norm=usable_norm(cfg.model.norm, device), pretrained=None)
        model = build(model_cfg, device=device)
    check_trained_as(load_model_weights(model, path, experiment=cfg.experiment), cfg, path)
    return model.to(device).eval()


#: Model settings a checkpoint may be evaluated under other values of: the norm layer runs as the
#: device allows (inplace_abn_sync -> abn on a CPU, the same weights) and the ImageNet files only
#: start a training.
EVALUATED_ANYWAY = ("norm", "pretrained")


def check_trained_as(checkpoint: dict[str, Any], cfg, path: str | Path) -> None:
    """Raise :class:`SpgnetError` when ``checkpoint`` was trained with other model settings than
    ``cfg``'s (but for :data:`EVALUATED_ANYWAY`) or on another data set: weights of the same shapes
    (SPG's sum and sigmoid links, with and without the identity path, GAP or not) would otherwise
    load and be scored as the wrong network. A checkpoint that records no configuration (one not
    written by ``spgnet train``) is not checked."""
    import dataclasses

    recorded = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if not isinstance(recorded, dict):
        return
    sections = (("model", dataclasses.asdict(cfg.model), recorded.get("model")),
                ("train", {"dataset": cfg.train.dataset}, recorded.get("train")))
    def plain(value):  # a saved tuple may come back a list
        return list(value) if isinstance(value, (tuple, list)) else value

    for section, wanted, trained in sections:
        if not isinstance(trained, dict):
            continue
        for key, value in wanted.items():
            if key in EVALUATED_ANYWAY or key not in trained:
                continue
            if plain(trained[key]) != plain(value):
                raise SpgnetError(f"{path}: trained with {section}.{key}={plain(trained[key])!r}, but experiment "
                                  f"'{cfg.experiment}' has {section}.{key}={plain(value)!r}: the checkpoint of "
                                  f"another network (pass the checkpoint of '{cfg.experiment}'s training run)")


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network weights of a checkpoint (or of a bare state_dict), without DDP's prefix."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": _python_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    if not state:
        return
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)]


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [int(version), list(internal), gauss]
