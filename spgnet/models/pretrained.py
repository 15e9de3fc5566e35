"""ImageNet weights from a local torchvision-format checkpoint (never downloaded).

One reader for the SPGNet encoders (:func:`spgnet.models.backbone.load_imagenet_weights`) and the
competitors' backbones (:func:`spgnet.models.peers.backbones.load_pretrained`).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

from spgnet.errors import SpgnetError

#: torchvision < 0.4 DenseNet names (``norm.1``) -> today's (``norm1``)
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def read_torchvision_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in the file at ``path``: unwrapped from ``{"state_dict": ...}`` /
    ``{"model": ...}``, without DDP's ``module.`` prefix, old DenseNet names renamed. A missing or
    unreadable file, or one that holds no state dict, is a one-line :class:`SpgnetError`."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SpgnetError(f"{path}: ImageNet checkpoint not found") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's bad input
        raise SpgnetError(f"{path}: not a readable torch checkpoint ({type(err).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise SpgnetError(f"{path}: not a state dict")
    renamed = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        match = _OLD_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def load_torchvision_weights(module: nn.Module, path: str | Path, *, part: str = "encoder",
                             expected: str = "a torchvision checkpoint", warn_missing: bool = False) -> list[str]:
    """Load the tensors of the checkpoint at ``path`` that fit ``module``; returns the module's keys
    the file did not provide (``num_batches_tracked`` aside).

    Tensors the module lacks (``fc``/``classifier``, the stem of a later stage) or whose shape
    differs are skipped. None fitting is an error ("no tensor matches the ``part`` (is it
    ``expected``?)"); with ``warn_missing`` a RuntimeWarning names what stayed unset.
    """
    state = read_torchvision_state(path)
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise SpgnetError(f"{path}: no tensor matches the {part} (is it {expected}?)")
    module.load_state_dict(usable, strict=False)
    missing = sorted(k for k in own if k not in usable and not k.endswith("num_batches_tracked"))
    if missing and warn_missing:
        warnings.warn(f"{path}: {len(missing)} {part} tensors not in the checkpoint (e.g. {missing[0]})",
                      RuntimeWarning, stacklevel=3)
    return missing
