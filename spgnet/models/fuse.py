"""Inference-time folding of normalisation layers into the convolutions that feed them.

In eval mode a batch normalisation is a fixed per-channel affine map,
``y = (x - running_mean) / sqrt(running_var + eps) * w + b``, so when ``x`` is the output of a
convolution the map can be folded into that convolution's weight and bias:

    W' = W * s[:, None, ...],   b' = (b_conv - running_mean) * s + b,   s = w / sqrt(running_var + eps)

:func:`fuse_for_inference` does this for every (convolution, normalisation) pair of a network and
replaces each folded normalisation by what is left of it: nothing (:class:`torch.nn.Identity`) for
a plain batch norm, the activation alone, applied in place (:class:`Activation`), for the
norm+activation layers of :mod:`spgnet.models.norm` and inplace-abn. The network computes the same
function (to float rounding) with one memory-bound pass fewer per normalisation; the activation
keeps its own pass (PyTorch's eager CPU convolution has no fused post-op).

Normalisation layers understood (``eval`` mode, running statistics present):

* ``torch.nn.BatchNorm1d/2d/3d``, ``torch.nn.SyncBatchNorm``, torchvision's ``FrozenBatchNorm2d``
  (no activation);
* :class:`spgnet.models.norm.BatchNormAct2d` (``activation`` / ``activation_param``);
* inplace-abn's ``ABN`` (scale ``w``) and ``InPlaceABN`` / ``InPlaceABNSync`` (their kernels scale
  by ``|w| + eps``, which is folded as such), with ``activation`` in leaky_relu, relu, elu,
  identity.

Which convolution feeds which normalisation is found by running the network once on an example
input (``example``; a small zero image by default) with hooks on every module and a
:class:`~torch.overrides.TorchFunctionMode` that sees every tensor operation: a pair is folded only
if, on every call, the normalisation's input is the very tensor the convolution returned and
nothing else reads that tensor (a convolution whose raw output also feeds a residual sum, say,
is left alone). So any network built from ordinary modules works -- SPGNet, the peers, torchvision
ResNets, DeepLabV3 -- whatever its ``forward`` looks like. Only the code paths the example input
takes are examined: pairs on other paths stay unfused, which is safe. Convolutions are plain
``torch.nn.Conv1d/2d/3d`` (not transposed, ``forward`` not overridden).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

ACTIVATIONS = ("identity", "relu", "leaky_relu", "elu")

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PLAIN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class Activation(nn.Module):
    """The activation of a folded norm+activation layer, applied in place."""

    def __init__(self, activation: str, activation_param: float = 0.01):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}' (valid: {', '.join(ACTIVATIONS)})")
        self.activation = activation
        self.activation_param = float(activation_param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation == "leaky_relu":
            return F.leaky_relu(x, self.activation_param, inplace=True)
        if self.activation == "relu":
            return F.relu(x, inplace=True)
        if self.activation == "elu":
            return F.elu(x, self.activation_param, inplace=True)
        return x

    def extra_repr(self) -> str:
        if self.activation in ("leaky_relu", "elu"):
            return f"{self.activation}[{self.activation_param}]"
        return self.activation


# --------------------------------------------------------------------------------------------
# What a normalisation layer computes in eval mode
# --------------------------------------------------------------------------------------------


def _inplace_abn_classes() -> tuple[tuple, tuple]:
    """(inplace-abn layers scaling by w, layers scaling by |w| + eps); empty without the package."""
    try:
        from inplace_abn import ABN, InPlaceABN, InPlaceABNSync
    except ImportError:  # pragma: no cover - inplace-abn is a dependency of the project
        return (), ()
    return (ABN,), (InPlaceABN, InPlaceABNSync)


def norm_folding(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor, str, float] | None:
    """``(scale, shift, activation, activation_param)`` of an eval-mode normalisation layer, such
    that ``norm(x) == act(x * scale + shift)`` per channel; ``None`` for anything else."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    from spgnet.models.norm import BatchNormAct2d

    plain_abn, abs_abn = _inplace_abn_classes()
    if getattr(norm, "training", False):
        return None  # batch statistics: not a fixed map
    if "input_sign" in getattr(norm, "_buffers", {}):
        return None  # multiplies its input first (spgnet.models.norm.add_input_sign): fed by no convolution
    kind = type(norm)
    if kind is FrozenBatchNorm2d:
        weight, bias, mean, var, eps = norm.weight, norm.bias, norm.running_mean, norm.running_var, norm.eps
        activation, param = "identity", 0.0
    elif kind in _PLAIN_BATCHNORMS or kind is BatchNormAct2d or kind in plain_abn or _is_abs_abn(norm, abs_abn):
        mean, var, eps = norm.running_mean, norm.running_var, norm.eps
        if mean is None or var is None:
            return None  # no running statistics: normalises with batch statistics even in eval
        weight = norm.weight if norm.affine else None
        bias = norm.bias if norm.affine else None
        if _is_abs_abn(norm, abs_abn):
            if weight is not None:
                weight = weight.abs() + eps
        activation = getattr(norm, "activation", "identity") if kind not in _PLAIN_BATCHNORMS else "identity"
        param = float(getattr(norm, "activation_param", 0.0) or 0.0)
        if activation not in ACTIVATIONS:
            return None
    else:
        return None
    inv_std = torch.rsqrt(var.double() + eps)
    scale = inv_std if weight is None else weight.double() * inv_std
    shift = -mean.double() * scale
    if bias is not None:
        shift = shift + bias.double()
    return scale, shift, activation, param


def _is_abs_abn(norm: nn.Module, abs_abn: tuple) -> bool:
    """An ``InPlaceABN``/``InPlaceABNSync``, or a subclass that declares the same eval-mode maths
    (``_same_eval_maths = True``, like :class:`spgnet.models.norm.InPlaceABNSync`)."""
    if type(norm) in abs_abn:
        return True
    return isinstance(norm, abs_abn) and bool(getattr(type(norm), "_same_eval_maths", False))


def _is_foldable_conv(module: nn.Module) -> bool:
    kind = type(module)
    for base in _CONVS:
        if isinstance(module, base):
            return (kind.forward is base.forward and kind._conv_forward is base._conv_forward
                    and not module.transposed)
    return False


def fold_conv_norm(conv: nn.Module, norm: nn.Module) -> nn.Module:
    """Fold ``norm`` (eval mode) into ``conv`` in place; returns what replaces ``norm``
    (``nn.Identity`` or :class:`Activation`). Raises ``ValueError`` if they do not fit."""
    folding = norm_folding(norm)
    if folding is None or not _is_foldable_conv(conv):
        raise ValueError(f"cannot fold {type(norm).__name__} into {type(conv).__name__}")
    scale, shift, activation, param = folding
    if scale.numel() != conv.out_channels:
        raise ValueError(f"{type(norm).__name__} has {scale.numel()} channels, the convolution {conv.out_channels}")
    with torch.no_grad():
        weight = conv.weight
        shape = (-1,) + (1,) * (weight.dim() - 1)
        new_weight = (weight.double() * scale.to(weight.device).view(shape)).to(weight.dtype)
        old_bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(shift)
        new_bias = (old_bias.to(shift.device) * scale + shift).to(weight.device, weight.dtype)
        conv.weight = nn.Parameter(new_weight, requires_grad=weight.requires_grad)
        conv.bias = nn.Parameter(new_bias, requires_grad=weight.requires_grad)
    return nn.Identity() if activation == "identity" else Activation(activation, param)


# --------------------------------------------------------------------------------------------
# Which convolution feeds which normalisation: one traced forward pass
# --------------------------------------------------------------------------------------------

_METADATA = {
    "size", "dim", "numel", "stride", "storage_offset", "is_contiguous", "element_size", "data_ptr",
    "__len__", "__format__", "__repr__", "__hash__", "nelement", "ndimension", "get_device",
    "is_floating_point", "is_complex", "has_names",
}


_METADATA_PROPERTIES = {
    "shape", "dtype", "device", "ndim", "layout", "is_cuda", "is_cpu", "is_meta", "is_sparse",
    "is_quantized", "is_mkldnn", "is_nested", "requires_grad", "is_leaf", "grad_fn", "names",
    "itemsize", "nbytes", "_version",
}


def _is_metadata(func) -> bool:
    """Reads a tensor's metadata only (``x.shape``, ``x.size()``, ...), never its values."""
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a property; ``x.T`` or ``x.data`` read the values
        return getattr(getattr(func, "__self__", None), "__name__", None) in _METADATA_PROPERTIES
    return name in _METADATA


@dataclass
class _Output:
    tensor: torch.Tensor
    conv: nn.Module
    norm: nn.Module | None = None


@dataclass
class _Trace:
    convs: set = field(default_factory=set)
    norms: set = field(default_factory=set)
    tracked: dict = field(default_factory=dict)  # id(conv output) -> _Output
    stack: list = field(default_factory=list)  # modules whose forward is running
    conv_calls: Counter = field(default_factory=Counter)
    norm_calls: Counter = field(default_factory=Counter)
    pair_calls: Counter = field(default_factory=Counter)
    bad: set = field(default_factory=set)  # convs / norms that must not be folded

    def consumed(self, tensors) -> None:
        for t in tensors:
            entry = self.tracked.get(id(t)) if isinstance(t, torch.Tensor) else None
            if entry is None or entry.tensor is not t:
                continue
            if entry.norm is None or not any(m is entry.norm for m in self.stack):
                self.bad.add(entry.conv)  # the raw convolution output is read elsewhere


class _Reads(TorchFunctionMode):
    def __init__(self, trace: _Trace):
        super().__init__()
        self.trace = trace

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not _is_metadata(func):
            self.trace.consumed(tree_flatten((args, kwargs))[0])
        return func(*args, **kwargs)


def _trace_pairs(model: nn.Module, example) -> list[tuple[nn.Module, nn.Module]]:
    trace = _Trace()
    for module in model.modules():
        if _is_foldable_conv(module):
            trace.convs.add(module)
        elif norm_folding(module) is not None:
            trace.norms.add(module)
    if not trace.convs or not trace.norms:
        return []  # nothing to fold: the network is not run

    def pre(module, inputs):
        trace.stack.append(module)
        if module in trace.norms:
            trace.norm_calls[module] += 1
            x = inputs[0] if inputs else None
            entry = trace.tracked.get(id(x)) if isinstance(x, torch.Tensor) else None
            if entry is None or entry.tensor is not x or entry.norm is not None:
                trace.bad.add(module)  # not fed straight by a convolution (or fed twice)
            else:
                entry.norm = module
                trace.pair_calls[(entry.conv, module)] += 1

    def post(module, inputs, output):
        if trace.stack and trace.stack[-1] is module:
            trace.stack.pop()
        if module in trace.convs:
            trace.conv_calls[module] += 1
            if isinstance(output, torch.Tensor):
                trace.tracked[id(output)] = _Output(output, module)
        elif module in trace.norms and inputs and isinstance(inputs[0], torch.Tensor):
            x = inputs[0]
            entry = trace.tracked.get(id(x))
            same = isinstance(output, torch.Tensor) and (
                output is x or (output.data_ptr() == x.data_ptr() and output.shape == x.shape))
            if entry is not None and entry.tensor is x and same:
                # in place: the tensor now holds the norm's output, which anyone may read
                del trace.tracked[id(x)]

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        with torch.no_grad(), _Reads(trace):
            model(example)
    finally:
        for handle in handles:
            handle.remove()

    pairs, seen_convs, seen_norms = [], Counter(), Counter()
    for (conv, norm) in trace.pair_calls:
        seen_convs[conv] += 1
        seen_norms[norm] += 1
    for (conv, norm), calls in trace.pair_calls.items():
        if conv in trace.bad or norm in trace.bad or seen_convs[conv] > 1 or seen_norms[norm] > 1:
            continue
        if calls != trace.conv_calls[conv] or calls != trace.norm_calls[norm]:
            continue  # called elsewhere too (a shared module)
        pairs.append((conv, norm))
    return pairs


def _default_example(model: nn.Module) -> torch.Tensor:
    reference = next((t for t in model.parameters() if t.is_floating_point()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    return torch.zeros(1, 3, 64, 64, device=device, dtype=dtype)


def conv_norm_pairs(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """Names of the (convolution, normalisation) pairs :func:`fuse_for_inference` would fold.

    Runs ``model`` once on ``example`` in eval mode; every module's ``training`` flag is restored
    afterwards.
    """
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    return [(names[id(c)], names[id(n)]) for c, n in _pairs_in_eval_mode(model, example)]


def _pairs_in_eval_mode(model: nn.Module, example: torch.Tensor | None) -> list[tuple[nn.Module, nn.Module]]:
    flags = [(m, m.training) for m in model.modules()]
    try:
        with torch.inference_mode(False):
            model.eval()
            example = _default_example(model) if example is None else example.clone()
            return _trace_pairs(model, example)
    finally:
        for module, training in flags:
            module.training = training


def fuse_for_inference(model: nn.Module, example: torch.Tensor | None = None, *, inplace: bool = False,
                       check: bool = False, atol: float = 1e-4, rtol: float = 1e-4) -> nn.Module:
    """``model`` in eval mode with every normalisation folded into the convolution before it.

    ``example``: an input the network accepts (default: a 1x3x64x64 zero image on the model's
    device and dtype), run once to find the pairs (see the module docstring). Returns a folded
    deep copy in eval mode (``model`` itself, put in eval mode and folded, when ``inplace``);
    ``model`` is otherwise untouched, its ``training`` flags included. The copy is for inference
    only: a folded layer no longer trains like the original. Its ``spgnet_folded_norms``
    attribute counts the folded normalisations (0: the copy computes exactly what ``model``
    does). ``check=True`` also runs both on ``example`` and raises ``AssertionError`` if their
    outputs differ beyond ``atol``/``rtol``.
    """
    pairs = _pairs_in_eval_mode(model, example)
    with torch.inference_mode(False):
        if inplace:
            fused = model
        else:
            fused = copy.deepcopy(model)
            lookup = dict(zip((id(m) for m in model.modules()), fused.modules()))
            pairs = [(lookup[id(c)], lookup[id(n)]) for c, n in pairs]
        fused.eval()
        replacements = {id(norm): fold_conv_norm(conv, norm) for conv, norm in pairs}
        for parent in fused.modules():
            for key, child in list(parent._modules.items()):
                if child is not None and id(child) in replacements:
                    parent._modules[key] = replacements[id(child)]
        fused.eval()  # the replacements too
        fused.spgnet_folded_norms = len(pairs)
        if check and not inplace and pairs:
            example = _default_example(model) if example is None else example
            training = [(m, m.training) for m in model.modules()]
            try:
                model.eval()
                with torch.no_grad():
                    _assert_close(model(example.clone()), fused(example.clone()), atol, rtol)
            finally:
                for module, flag in training:
                    module.training = flag
    return fused


def _assert_close(expected, actual, atol: float, rtol: float) -> None:
    a, _ = tree_flatten(expected)
    b, _ = tree_flatten(actual)
    assert len(a) == len(b), "fused model returns another structure"
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):  # atol relative to the output's magnitude
            scale = max(1.0, float(x.detach().abs().max())) if x.is_floating_point() and x.numel() else 1.0
            torch.testing.assert_close(y, x, atol=atol * scale, rtol=rtol)


__all__ = ["Activation", "conv_norm_pairs", "fold_conv_norm", "fuse_for_inference", "norm_folding"]
