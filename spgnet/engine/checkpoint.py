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

:func:`save_checkpoint` writes to a temporary file in the same folder, flushes it to disk and
renames it over the target with ``os.replace``, so a run killed at any moment leaves either the
previous checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spgnet.errors import SpgnetError

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (one-line error when unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise SpgnetError(f"{path}: no checkpoint there")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise SpgnetError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})".splitlines()[0]) from None


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
