"""Normalisation + activation layers, chosen by name (Sec. 4.2: synchronized Inplace-ABN).

Every layer here fuses a batch normalisation with an optional activation, like inplace-abn's
``ABN`` family: ``norm_act(name)(channels, activation="leaky_relu" | "identity")``. Leaky ReLU with
slope 0.01 is inplace-abn's default and is used throughout, also for plain BatchNorm, so that the
four choices differ only in how they compute, never in what they compute.

==================== =================================================================
``inplace_abn_sync`` ``inplace_abn.InPlaceABNSync``: the paper's layer; needs CUDA and an
                     initialised process group (its statistics reduction is CUDA-only).
``inplace_abn``      ``inplace_abn.InPlaceABN``: in-place, memory-saving, one device.
``abn``              ``inplace_abn.ABN``: the same maths out of place (works on ``meta``).
``batchnorm``        ``torch.nn.BatchNorm2d`` followed by the activation.
==================== =================================================================

All four keep ``weight``, ``bias``, ``running_mean`` and ``running_var`` under the same names, so a
checkpoint (or torchvision's ImageNet weights) loads into any of them.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from spgnet.errors import SpgnetError

LEAKY_SLOPE = 0.01

NormAct = Callable[..., nn.Module]


class BatchNormAct2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` + activation, with inplace-abn's constructor arguments."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, activation: str = "leaky_relu", activation_param: float = LEAKY_SLOPE):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        if activation not in ("leaky_relu", "relu", "elu", "identity"):
            raise SpgnetError(f"unknown activation '{activation}' (valid: elu, identity, leaky_relu, relu)")
        self.activation = activation
        self.activation_param = activation_param

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.activation == "leaky_relu":
            return F.leaky_relu(x, self.activation_param)
        if self.activation == "relu":
            return F.relu(x)
        if self.activation == "elu":
            return F.elu(x, self.activation_param)
        return x

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"


def _inplace_abn(class_name: str):
    import inplace_abn  # imported lazily: building it is the slow part of the environment

    return getattr(inplace_abn, class_name)


NORM_LAYERS = ("inplace_abn_sync", "inplace_abn", "abn", "batchnorm")


def _layer_class(name: str):
    if name == "batchnorm":
        return BatchNormAct2d
    if name == "abn":
        return _inplace_abn("ABN")
    if name == "inplace_abn":
        return _inplace_abn("InPlaceABN")
    if name == "inplace_abn_sync":
        return _inplace_abn("InPlaceABNSync")
    raise SpgnetError(f"unknown norm layer '{name}' (valid: {', '.join(NORM_LAYERS)})")


def usable_norm(name: str, device: str | torch.device = "cpu") -> str:
    """``name``, or the closest layer that runs on ``device``, with a warning when it differs.

    ``InPlaceABNSync`` reduces its statistics with a CUDA-only kernel, so on CPU (tests, the
    embedded profile, profiling on ``meta``) it becomes ``InPlaceABN`` (one process) or ``ABN``
    (``meta`` device, where in-place kernels cannot run). The maths is the same.
    """
    device_type = torch.device(device).type
    if name not in NORM_LAYERS:
        _layer_class(name)  # raises with the list of valid names
    if device_type == "meta" and name in ("inplace_abn_sync", "inplace_abn"):
        return "abn"  # the FLOP/parameter counts are identical; meta tensors cannot run the kernel
    if name == "inplace_abn_sync" and device_type != "cuda":
        replacement = "inplace_abn"
        warnings.warn(
            f"norm 'inplace_abn_sync' needs CUDA; using '{replacement}' on {device_type}",
            RuntimeWarning,
            stacklevel=2,
        )
        return replacement
    if name == "inplace_abn_sync" and not (dist.is_available() and dist.is_initialized()):
        return "inplace_abn"  # one process: nothing to synchronise
    return name


def norm_act(name: str, activation: str = "leaky_relu") -> NormAct:
    """Factory ``f(channels, activation=...) -> nn.Module`` for the layer called ``name``.

    ``activation`` is the default for layers the factory makes; pass ``activation="identity"``
    for a normalisation that feeds a residual sum.
    """
    layer = _layer_class(name)

    def make(num_features: int, activation: str = activation) -> nn.Module:
        return layer(num_features, activation=activation, activation_param=LEAKY_SLOPE)

    make.layer_name = name  # type: ignore[attr-defined]
    return make


def norm_only(factory: NormAct) -> NormAct:
    """The same layer without activation (``norm_layer`` for torchvision constructors)."""
    return functools.partial(factory, activation="identity")


def conv_norm_act(in_ch: int, out_ch: int, kernel_size: int, factory: NormAct,
                  activation: str = "leaky_relu", stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """``Conv2d`` (no bias) followed by ``factory``'s normalisation and ``activation``."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False),
        factory(out_ch, activation=activation),
    )
