"""Normalisation + activation layers, chosen by name (Sec. 4.2: synchronized Inplace-ABN).

Every layer here fuses a batch normalisation with an optional activation, like inplace-abn's
``ABN`` family: ``norm_act(name)(channels, activation="leaky_relu" | "identity")``. Leaky ReLU with
slope 0.01 is inplace-abn's default and is used throughout, also for plain BatchNorm, so that the
four choices differ only in how they compute, never in what they compute.

==================== =================================================================
``inplace_abn_sync`` :class:`InPlaceABNSync` (``inplace_abn.InPlaceABNSync``, see below): the
                     paper's layer; needs CUDA and an initialised process group (its
                     statistics reduction is CUDA-only; ``spgnet.engine.train.distributed`` adds
                     a CPU one for gloo).
``inplace_abn``      ``inplace_abn.InPlaceABN``: in-place, memory-saving, one device.
``abn``              ``inplace_abn.ABN``: the same maths out of place (works on ``meta``).
``batchnorm``        ``torch.nn.BatchNorm2d`` followed by the activation.
==================== =================================================================

All four keep ``weight``, ``bias``, ``running_mean`` and ``running_var`` under the same names, so a
checkpoint (or torchvision's ImageNet weights) loads into any of them.

One value per channel (the decoder's global-average-pooling branch normalises a 1x1 map, so a
process with one crop gives each channel one value):

* :class:`InPlaceABNSync` is inplace-abn's layer with one change: inplace-abn refuses to train on
  one value per channel *per process* even when the statistics are merged over several processes;
  here that is allowed whenever the layer's process group has at least 2 processes, so the
  statistics come from at least 2 values. That is the paper's setting (8 GPUs x 1 crop,
  synchronised Inplace-ABN) and what ``torch.nn.SyncBatchNorm`` does too. Everything else,
  eval mode included, is inplace-abn's code.
* A norm that is not synchronised (or is, over one process) still raises ``ValueError`` in
  training, like ``torch.nn.BatchNorm2d`` in torchvision's DeepLabV3 ``ASPPPooling`` and the
  BN of mmsegmentation's ASPP image pooling: batch statistics of one value do not exist, and
  quietly normalising with something else would change the network the experiment trains.
  (detectron2's ASPP drops the norm from its pooling branch altogether; here that would change
  the parameter and FLOP counts the paper gives.)
  ``spgnet train`` turns the error into one that names the two fixes (``norm:
  inplace_abn_sync`` over several processes, or at least 2 crops per process).
  :func:`single_value_norms_use_running_stats` is the explicit opt-out for measurements that do
  not train (the memory benchmark at batch 1): such calls use the running statistics.
"""

from __future__ import annotations

import functools
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

    if class_name == "InPlaceABNSync":
        return _sync_class()
    return getattr(inplace_abn, class_name)


def _group_size(group) -> int:
    """Processes in ``group`` (1 when it is None or no process group is initialised)."""
    if group is None or not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group=group)


@functools.cache
def _sync_class():
    import inplace_abn
    from inplace_abn.functions import InPlaceABN as InPlaceABNFunction
    from inplace_abn.functions import _count_samples

    class InPlaceABNSync(inplace_abn.InPlaceABNSync):
        """``inplace_abn.InPlaceABNSync`` that trains on one value per channel per process when
        its group has >= 2 processes (the statistics merged over the group are then of >= 2
        values). Same parameters, buffers, state dict keys and eval-mode maths."""

        _same_eval_maths = True  # spgnet.models.fuse may fold it like inplace-abn's

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training and _count_samples(x) <= 1 and _group_size(self.group) > 1:
                momentum, training = self._get_momentum_and_training()
                running_mean, running_var = self._get_running_stats()
                # inplace_abn_sync() minus its per-process check; the merged count is >= 2
                return InPlaceABNFunction.apply(x, self.weight, self.bias, running_mean, running_var, training,
                                                momentum, self.eps, self.activation, self.activation_param,
                                                self.group)
            return super().forward(x)

    InPlaceABNSync.__module__ = __name__
    InPlaceABNSync.__qualname__ = "InPlaceABNSync"
    return InPlaceABNSync


def __getattr__(name: str):
    if name == "InPlaceABNSync":  # created on first use: importing inplace-abn is slow
        return _sync_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    """The layer to build for ``name`` on ``device``: the same maths in a form that runs there.

    * ``meta`` (parameter and FLOP counts): ``ABN`` for the in-place layers, whose kernels cannot
      run on meta tensors (the counts are identical).
    * ``inplace_abn_sync`` in one process: ``InPlaceABN``, nothing to synchronise.
    * ``inplace_abn_sync`` on CPU under ``torchrun``: ``InPlaceABN``, which ``spgnet train`` then
      turns into ``InPlaceABNSync`` with a CPU statistics reduction over gloo
      (:func:`spgnet.engine.train.distributed.convert_inplace_abn_sync`; inplace-abn's own reduction is
      CUDA-only), and says so in its log.
    * otherwise ``name``.
    """
    device_type = torch.device(device).type
    if name not in NORM_LAYERS:
        _layer_class(name)  # raises with the list of valid names
    if device_type == "meta" and name in ("inplace_abn_sync", "inplace_abn"):
        return "abn"  # the FLOP/parameter counts are identical; meta tensors cannot run the kernel
    if name == "inplace_abn_sync" and (device_type != "cuda" or not (dist.is_available() and dist.is_initialized())):
        return "inplace_abn"
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


def single_value_norms_use_running_stats(model: nn.Module) -> set:
    """Let every normalisation layer of ``model`` that gets one value per channel in training
    use its running statistics for that call instead of raising (see the module docstring).

    For measurements that run training steps without training a network (peak memory at batch
    1, where the global-average-pooling branch normalises a 1x1 map): the memory involved is a
    few bytes per channel either way. Registers forward hooks; returns a set that collects
    ``id(module)`` of every layer that used the fallback.
    """
    hit: set = set()

    def pre(module, inputs):
        x = inputs[0]
        single = x.dim() >= 2 and x.numel() // x.shape[1] == 1
        module._spgnet_was_training = module.training
        if single and module.training:
            module.train(False)
            hit.add(id(module))

    def post(module, inputs, output):
        module.train(module._spgnet_was_training)

    for module in model.modules():
        if _is_norm_layer(module):
            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post)
    return hit


def scales_by_abs_weight(module: nn.Module) -> bool:
    """Whether ``module`` scales by ``|weight| + eps`` rather than ``weight``: inplace-abn's
    ``InPlaceABN`` and ``InPlaceABNSync`` (and :class:`InPlaceABNSync` here) do, in their kernels
    (``x <- act(x_hat * (|weight| + eps) + bias)``, inplace_abn/functions.py), so a BatchNorm
    ``weight`` with negative entries cannot simply be copied into them
    (:func:`spgnet.models.pretrained.fit_to_abs_weight_norms`, ``docs/imagenet-init.md``);
    ``ABN`` and the BatchNorm layers scale by ``weight``."""
    try:
        from inplace_abn import InPlaceABN
        from inplace_abn import InPlaceABNSync as _InPlaceABNSync
    except ImportError:  # pragma: no cover - inplace-abn is a dependency of the project
        return False
    return isinstance(module, (InPlaceABN, _InPlaceABNSync))


#: name of the per-channel input sign buffer of a norm that no convolution feeds (:func:`add_input_sign`)
INPUT_SIGN = "input_sign"


def _apply_input_sign(module: nn.Module, inputs: tuple) -> tuple:
    sign = getattr(module, INPUT_SIGN)
    return (inputs[0] * sign.view(1, -1, *([1] * (inputs[0].dim() - 2))).to(inputs[0].dtype),) + tuple(inputs[1:])


def add_input_sign(norm: nn.Module) -> nn.Module:
    """Give ``norm`` a fixed per-channel sign (buffer ``input_sign``, float ``[C]``, all +1 when
    built) by which its input is multiplied before it normalises: ``norm(x * input_sign)``.

    For normalisations fed by a concatenation rather than by one convolution (DenseNet's
    pre-activation ``norm1`` and transition norms), where the sign of a negative ImageNet gamma has
    no convolution to move into: :func:`spgnet.models.pretrained.fit_to_abs_weight_norms` sets
    ``input_sign = -1`` and negates the running mean on those channels, which is exact for a layer
    that scales by ``|weight|`` (``docs/imagenet-init.md``). The buffer is in the state dict
    (``<norm>.input_sign``), so checkpoints keep it; it is a constant, not a parameter. Returns
    ``norm``."""
    norm.register_buffer(INPUT_SIGN, torch.ones(norm.num_features))
    norm.register_forward_pre_hook(_apply_input_sign)
    return norm


def has_input_sign(norm: nn.Module) -> bool:
    """Whether ``norm`` multiplies its input by an ``input_sign`` buffer (:func:`add_input_sign`)."""
    return INPUT_SIGN in getattr(norm, "_buffers", {})


def _is_norm_layer(module: nn.Module) -> bool:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True
    return type(module).__name__ in {"ABN", "InPlaceABN", "InPlaceABNSync"} and hasattr(module, "running_var")


def conv_norm_act(in_ch: int, out_ch: int, kernel_size: int, factory: NormAct,
                  activation: str = "leaky_relu", stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """``Conv2d`` (no bias) followed by ``factory``'s normalisation and ``activation``."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False),
        factory(out_ch, activation=activation),
    )
