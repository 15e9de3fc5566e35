"""ImageNet weights from a local torchvision-format checkpoint (never downloaded), loaded strictly.

One reader for the SPGNet encoders (:func:`spgnet.models.backbone.load_imagenet_weights`) and the
competitors' backbones (:func:`spgnet.models.peers.backbones.load_pretrained`); which file each
backbone reads is :mod:`spgnet.models.weights`' business.

Strict means: every tensor of the module is filled from the file with the same name and shape,
and every tensor of the file has a place in the module, except

* the ImageNet classifier (``fc.*`` of a ResNet, ``classifier.*`` of a DenseNet: :data:`CLASSIFIER`),
* ``num_batches_tracked`` counters (torchvision's 2017 files have none; ``nn.BatchNorm2d`` has them),
* key prefixes the caller names in ``skip``: layers the module replaces by design (a later SPGNet
  stage has no stem; the peers' deep stem and DenseASPP's extra transition are new layers), whose
  tensors are then taken from neither side.

Anything else is a one-line :class:`SpgnetError` naming the file and the first key that is missing,
has another shape, or is left over: a ResNet-50 file given to a ResNet-18 stage, or a ResNet-101
file given to a ResNet-50 one (whose every tensor it has, with 17 blocks to spare), never loads.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from spgnet.errors import SpgnetError

#: key prefixes of torchvision's ImageNet classifiers: in the files, never used by an encoder
CLASSIFIER = ("fc.", "classifier.")

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
    except IsADirectoryError:
        raise SpgnetError(f"{path}: is a folder, not an ImageNet checkpoint") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's bad input
        raise SpgnetError(f"{path}: not a readable torch checkpoint ({type(err).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpgnetError(f"{path}: not a state dict")
    renamed = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        match = _OLD_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def _ignored(key: str, skip: tuple[str, ...]) -> bool:
    return key.endswith("num_batches_tracked") or key.startswith(skip)


def strict_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> str | None:
    """Why ``state`` (a file's tensors) does not fill ``own`` (a module's state dict) strictly, or
    None when it does: the first module key the file lacks or holds with another shape (module
    order), else the first file key with no place in the module (file order). Shapes only: works
    on ``meta`` tensors."""
    for key, tensor in own.items():
        if _ignored(key, skip):
            continue
        if key not in state:
            return f"no tensor '{key}'"
        if tuple(state[key].shape) != tuple(tensor.shape):
            return f"'{key}' is {tuple(state[key].shape)} in the file, {tuple(tensor.shape)} in the model"
    for key in state:
        if key not in own and not _ignored(key, skip + CLASSIFIER):
            return f"tensor '{key}' has no place in the model"
    return None


def load_torchvision_weights(module: nn.Module, path: str | Path, *, what: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Fill every tensor of ``module`` from the torchvision checkpoint at ``path``, strictly (see the
    module docstring); ``what`` names the expected file in the error ("torchvision's resnet18
    ImageNet file"), ``skip`` the key prefixes that are nobody's. Returns the module's keys left as
    they were (those under ``skip``; ``num_batches_tracked`` aside), sorted.

    Raises :class:`SpgnetError` ``"<path>: not <what>: <first mismatch>"``.
    """
    state = read_torchvision_state(path)
    own = module.state_dict()
    problem = strict_mismatch(own, state, skip)
    if problem is not None:
        raise SpgnetError(f"{path}: not {what}: {problem}")
    module.load_state_dict({k: state[k] for k in own if not _ignored(k, skip)}, strict=False)
    return sorted(k for k in own if k.startswith(skip) and not k.endswith("num_batches_tracked"))
