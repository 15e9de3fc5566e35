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

The files hold BatchNorm weights; Inplace-ABN scales by ``|weight| + eps`` instead of ``weight``
(:func:`spgnet.models.norm.scales_by_abs_weight`). :func:`fit_to_abs_weight_norms` therefore turns
the loaded tensors into the same network under those layers: the sign of a negative gamma moves
into the convolution that feeds the norm (or into the norm's ``input_sign`` where a concatenation
feeds it), and ``eps`` is taken off every ``|gamma|`` (``docs/imagenet-init.md``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
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


#: module tensors that no torchvision file holds: BatchNorm's counter, and the input sign of norms
#: fed by a concatenation (:func:`spgnet.models.norm.add_input_sign`), set by the conversion
_OWN_TENSORS = ("num_batches_tracked", ".input_sign")


def _ignored(key: str, skip: tuple[str, ...]) -> bool:
    return key.endswith(_OWN_TENSORS) or key.startswith(skip)


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


def load_torchvision_weights(module: nn.Module, path: str | Path, *, what: str, skip: tuple[str, ...] = (),
                             example: torch.Tensor | None = None) -> list[str]:
    """Fill every tensor of ``module`` from the torchvision checkpoint at ``path``, strictly (see the
    module docstring), then fit the loaded norms to the layers that scale by ``|weight| + eps``
    (:func:`fit_to_abs_weight_norms`; ``example``: an input ``module`` accepts, for finding which
    convolution feeds which norm; default a 1x3x64x64 zero image). ``what`` names the expected file
    in the error ("torchvision's resnet18 ImageNet file"), ``skip`` the key prefixes that are
    nobody's. Returns the module's keys left as they were (those under ``skip``; ``num_batches_tracked``
    aside), sorted. What the conversion did is kept on the module as ``module.imagenet_init``
    (:class:`NormConversion` as a dict, plus ``"file"``).

    Raises :class:`SpgnetError` ``"<path>: not <what>: <first mismatch>"``.
    """
    state = read_torchvision_state(path)
    own = module.state_dict()
    problem = strict_mismatch(own, state, skip)
    if problem is not None:
        raise SpgnetError(f"{path}: not {what}: {problem}")
    module.load_state_dict({k: state[k] for k in own if not _ignored(k, skip)}, strict=False)
    conversion = fit_to_abs_weight_norms(module, skip=skip, example=example, source=str(path))
    module.imagenet_init = {"file": Path(path).name, **dataclasses.asdict(conversion)}
    return sorted(k for k in own if k.startswith(skip) and not k.endswith(_OWN_TENSORS))


# --------------------------------------------------------------------------------------------
# BatchNorm weights into layers that scale by |weight| + eps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormConversion:
    """What :func:`fit_to_abs_weight_norms` changed in one module (counts of channels)."""

    norm_layers: int = 0  # loaded norms that scale by |weight| + eps (0 under abn / batchnorm)
    channels: int = 0  # their channels
    sign_to_conv: int = 0  # negative gammas whose sign moved into the feeding convolution
    sign_to_input: int = 0  # negative gammas whose sign moved into the norm's input_sign
    below_eps: int = 0  # channels with |gamma| < eps: scaled by eps instead (the only inexact ones)


def fit_to_abs_weight_norms(module: nn.Module, *, skip: tuple[str, ...] = (), example: torch.Tensor | None = None,
                            source: str = "") -> NormConversion:
    """Make ``module``'s BatchNorm-convention norm tensors (just loaded from an ImageNet file) compute
    the same function under layers that scale by ``|weight| + eps`` (Inplace-ABN; no-op for
    ``abn`` / ``batchnorm``). For each such norm not under ``skip``, per channel with gamma ``g``:

    * ``g < 0`` and a convolution feeds the norm (its output goes to the norm and nowhere else, as
      :func:`spgnet.models.fuse.conv_norm_pairs` traces it on ``example``): negate that output
      channel of the convolution (weight and bias) and the norm's running mean; batch statistics
      negate with it, so training-mode outputs are the same too;
    * ``g < 0`` and a concatenation feeds it (DenseNet's pre-activation norms): set the norm's
      ``input_sign`` to -1 there and negate the running mean (:func:`spgnet.models.norm.add_input_sign`);
    * every channel: ``weight = max(|g| - eps, 0)``, so that ``|weight| + eps == |g|`` exactly
      where ``|g| >= eps``; where ``|g| < eps`` the layer scales by ``eps`` instead of ``|g|``
      (counted as ``below_eps``; an error of at most ``eps`` times the normalised input).

    Raises :class:`SpgnetError` naming ``source`` and the norm when a negative gamma has neither
    route (a norm fed by something else, without ``input_sign``). Needs real tensors, not ``meta``
    ones (it reads the gammas).
    """
    from spgnet.models.fuse import conv_norm_pairs
    from spgnet.models.norm import has_input_sign, scales_by_abs_weight

    norms = {name: m for name, m in module.named_modules()
             if scales_by_abs_weight(m) and m.weight is not None and not (name + ".").startswith(skip)}
    if not norms:
        return NormConversion()
    feeding = {norm: conv for conv, norm in conv_norm_pairs(module, example)}
    counts = {"sign_to_conv": 0, "sign_to_input": 0, "below_eps": 0, "channels": 0}
    with torch.no_grad():
        for name, norm in norms.items():
            gamma = norm.weight.detach().clone()
            negative = gamma < 0
            flipped = int(negative.sum())
            if flipped and name in feeding:
                conv = module.get_submodule(feeding[name])
                conv.weight[negative] *= -1
                if conv.bias is not None:
                    conv.bias[negative] *= -1
                counts["sign_to_conv"] += flipped
            elif flipped and has_input_sign(norm):
                norm.input_sign[negative] *= -1
                counts["sign_to_input"] += flipped
            elif flipped:
                raise SpgnetError(f"{source}: '{name}' has {flipped} negative gammas and neither a convolution "
                                  f"feeding it nor an input sign to carry them (docs/imagenet-init.md)")
            if flipped and norm.running_mean is not None:
                norm.running_mean[negative] *= -1
            counts["below_eps"] += int((gamma.abs() < norm.eps).sum())
            counts["channels"] += gamma.numel()
            norm.weight.copy_((gamma.abs() - norm.eps).clamp_min(0))
    return NormConversion(norm_layers=len(norms), **counts)
