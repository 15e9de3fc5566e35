"""Test-time inference: single / multi-scale, flip, and Table 12's GAP / AP / TILED strategies.

:func:`infer_probs` returns softmax probabilities at the input's resolution, averaged over every
(scale, flip) pass -- Sec. 4.3 uses scales ``{0.75, 1.0, 1.25, 1.5, 1.75, 2.0}``
(:data:`MULTI_SCALES`). At each scale the image is resized bilinearly, the network's
probabilities are computed at that size and resized bilinearly back to the original size before
they are averaged; a flipped pass runs on the mirrored image and mirrors its probabilities back.

Strategies (appendix "Effect of global pooling", Table 12):

``GAP``   the whole (rescaled) image in one pass, global average pooling as in training.
``AP``    the whole image in one pass, global pooling replaced by average pooling with kernel
          ``crop // 32`` (stride 1, output padded back to the feature size), via the model's
          ``set_test_pooling("AP", kernel)``.
``TILED`` the network stays in GAP mode and sees windows of exactly the training crop size with
          ``tile_overlap`` (1/3) overlap: stride ``ceil(crop * (1 - overlap))``, the last window
          of a row/column aligned to the border, the image zero-padded (= the mean colour, since
          images are normalised) at the bottom/right when it is smaller than the crop. Softmax
          probabilities are summed over the windows and divided by the number of windows that
          cover each pixel. A 1024x2048 image with crop 769 gives 2 x 4 = 8 windows (the paper's
          "8 (tiles)").

Models without ``set_test_pooling`` (no GAP branch, other architectures) are run as they are for
GAP and AP; TILED still tiles them.

``pad_to`` (``eval.pad_to``): the image is first zero-padded (= the mean colour) at its bottom and
right to at least ``pad_to x pad_to``, every pass then runs on the padded canvas, and the
probabilities are cropped back to the image: TensorFlow DeepLab's evaluation of PASCAL images on a
513 x 513 canvas (``--eval_crop_size=513,513``), scales applied to the padded canvas as there.

Speed: an eval-mode model runs with every normalisation folded into the convolution that feeds it
(:func:`spgnet.models.fuse.fuse_for_inference`; the same function to float rounding, one
memory-bound pass fewer per layer). :func:`inference_model` makes the folded copy once per model
and keeps it while the model's parameters and buffers stay as they are (a checkpoint loaded into
the model, or a training step, makes a new one); ``infer_probs(..., fuse=False)`` runs the model as
it is. A model with any module in training mode is never folded. The copy holds a second set of
weights on the model's device (about 240 MB for SPGNet R50x2 D=256).

On CPU the folded copy and its inputs are in ``torch.channels_last`` layout
(:func:`inference_memory_format`): oneDNN's convolutions work on channels-last data, so a network
kept in the default layout pays a reorder of every activation into and out of every convolution.
``benchmarks/speed.py`` (512x1024, 2 threads) measured SPGNet R50x2 D=256 2.74 s -> 2.06 s and
deeplabv3_resnet101 5.69 s -> 4.67 s per image with it. On CUDA the layout stays as built.
"""

from __future__ import annotations

import itertools
import math
import weakref
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

STRATEGIES = ("GAP", "AP", "TILED")
MULTI_SCALES = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
#: Output stride of the feature map that global pooling acts on.
POOLING_STRIDE = 32


def ap_kernel(crop: int, stride: int = POOLING_STRIDE) -> int:
    """AP kernel: the training crop divided by the stride of the pooled features (769 -> 24)."""
    return max(1, int(crop) // stride)


def configure_pooling(model: nn.Module, strategy: str, crop: int | None) -> bool:
    """Put the model's global pooling in the mode ``strategy`` needs; False if it has none."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown test strategy '{strategy}' (valid: {', '.join(STRATEGIES)})")
    setter = getattr(model, "set_test_pooling", None)
    if setter is None:
        return False
    if strategy == "AP":
        if crop is None:
            raise ValueError("the AP strategy needs the training crop size")
        setter("AP", ap_kernel(crop))
    else:
        setter("GAP", None)
    return True


#: model -> (state signature, folded copy or None when nothing folds)
_FOLDED: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()
#: Largest side of the example crop :func:`inference_model` traces the network with.
TRACE_SIZE = 128


def _state_signature(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    def version(t: torch.Tensor) -> int:
        try:
            return t._version
        except RuntimeError:  # an inference tensor: no version counter, but it cannot change either
            return -1

    return tuple((id(t), version(t), t.data_ptr(), t.device, t.dtype)
                 for t in itertools.chain(model.parameters(), model.buffers()))


def inference_memory_format(device: torch.device) -> torch.memory_format:
    """Layout of the folded copy and its inputs: channels-last on CPU (see the module docstring)."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def inference_model(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """What :func:`infer_probs` runs for ``model``: its normalisation-folded copy when it is in eval
    mode and something folds (cached, see the module docstring), else ``model`` itself.

    ``example`` is an input the network accepts (only a crop of at most :data:`TRACE_SIZE`
    pixels a side is run, once per model).
    """
    from spgnet.models.fuse import fuse_for_inference

    if any(m.training for m in model.modules()):
        return model  # batch statistics somewhere: not a fixed function to fold
    signature = _state_signature(model)
    cached = _FOLDED.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1] if cached[1] is not None else model
    if example is not None:
        example = example[:1, :, :TRACE_SIZE, :TRACE_SIZE]
    folded = fuse_for_inference(model, example)
    if folded.spgnet_folded_norms:
        device = next(itertools.chain(folded.parameters(), folded.buffers()), torch.empty(0)).device
        folded.spgnet_memory_format = inference_memory_format(device)
        folded = folded.to(memory_format=folded.spgnet_memory_format)
    else:
        folded = None
    _FOLDED[model] = (signature, folded)
    return folded if folded is not None else model


def logits_of(output) -> torch.Tensor:
    """The main logits of a model's output: ``{"out": ...}`` dicts, tensors, or (logits, ...)."""
    if isinstance(output, dict):
        return output["out"]
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


def window_starts(size: int, crop: int, overlap: float = 1.0 / 3.0) -> list[int]:
    """Start offsets of the windows along one axis of length ``size`` (``size >= crop``)."""
    if crop <= 0:
        raise ValueError("crop must be positive")
    if size <= crop:
        return [0]
    # round first: 9 * (1 - 1/3) is 6.000000000000001 in floating point, and its ceil must be 6
    stride = max(1, math.ceil(round(crop * (1.0 - overlap), 6)))
    starts = [0]
    while starts[-1] + crop < size:
        nxt = starts[-1] + stride
        if nxt + crop >= size:
            starts.append(size - crop)
            break
        starts.append(nxt)
    return starts


def tile_windows(height: int, width: int, crop: int, overlap: float = 1.0 / 3.0) -> list[tuple[int, int]]:
    """``(top, left)`` of every window on a (padded) ``height x width`` image."""
    h, w = max(height, crop), max(width, crop)
    return [(y, x) for y in window_starts(h, crop, overlap) for x in window_starts(w, crop, overlap)]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def forward_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities ``[N, C, h, w]`` of one pass on ``x`` ``[N, 3, h, w]``."""
    memory_format = getattr(model, "spgnet_memory_format", None)
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    logits = logits_of(model(x)).float()
    return torch.softmax(_resize(logits, tuple(x.shape[-2:])), dim=1)


def tiled_probs(model: nn.Module, x: torch.Tensor, crop: int, overlap: float = 1.0 / 3.0) -> torch.Tensor:
    """TILED: probabilities of crop-sized windows, averaged where they overlap."""
    n, _, h, w = x.shape
    pad_h, pad_w = max(crop - h, 0), max(crop - w, 0)
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    hp, wp = x.shape[-2:]
    total = None
    count = torch.zeros(1, 1, hp, wp, device=x.device)
    for top, left in tile_windows(hp, wp, crop, overlap):
        p = forward_probs(model, x[:, :, top:top + crop, left:left + crop])
        if total is None:
            total = torch.zeros(n, p.shape[1], hp, wp, device=x.device)
        total[:, :, top:top + crop, left:left + crop] += p
        count[:, :, top:top + crop, left:left + crop] += 1
    return (total / count)[:, :, :h, :w]


@torch.inference_mode()
def infer_probs(
    model: nn.Module,
    image: torch.Tensor,
    *,
    scales: Iterable[float] = (1.0,),
    flip: bool = False,
    strategy: str = "GAP",
    crop: int | None = None,
    overlap: float = 1.0 / 3.0,
    fuse: bool = True,
    pad_to: int | None = None,
) -> torch.Tensor:
    """Averaged softmax probabilities ``[N, C, H, W]`` (``[C, H, W]`` for a ``[3, H, W]`` image).

    ``crop`` is the training crop (needed by AP and TILED); the model must be in eval mode and on
    the image's device. ``fuse``: run the normalisation-folded copy (:func:`inference_model`).
    ``pad_to``: run on the image padded to at least ``pad_to x pad_to`` (module docstring).
    """
    single = image.dim() == 3
    x = image.unsqueeze(0) if single else image
    height, width = x.shape[-2:]
    if pad_to:
        x = F.pad(x, (0, max(pad_to - width, 0), 0, max(pad_to - height, 0)))
    scales = tuple(float(s) for s in scales)
    if not scales:
        raise ValueError("at least one scale is needed")
    if strategy == "TILED" and crop is None:
        raise ValueError("the TILED strategy needs the training crop size")
    configure_pooling(model, strategy, crop)
    if fuse:
        run = inference_model(model, x)
        if run is not model:
            configure_pooling(run, strategy, crop)
        model = run
    h, w = x.shape[-2:]
    total = None
    passes = 0
    for scale in scales:
        size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
        xs = _resize(x, size)
        for flipped in ((False, True) if flip else (False,)):
            xi = xs.flip(-1) if flipped else xs
            p = tiled_probs(model, xi, crop, overlap) if strategy == "TILED" else forward_probs(model, xi)
            if flipped:
                p = p.flip(-1)
            p = _resize(p, (h, w))
            total = p.clone() if total is None else total.add_(p)
            passes += 1
    probs = (total / passes)[..., :height, :width]
    return probs[0] if single else probs


def infer_labels(model: nn.Module, image: torch.Tensor, **kwargs) -> torch.Tensor:
    """Arg-max class map of :func:`infer_probs` (``[H, W]`` or ``[N, H, W]``, int64)."""
    probs = infer_probs(model, image, **kwargs)
    return probs.argmax(dim=-3)


def passes_per_image(height: int, width: int, scales: Sequence[float], flip: bool, strategy: str,
                     crop: int | None, overlap: float = 1.0 / 3.0) -> int:
    """Forward passes :func:`infer_probs` runs per image (windows counted one by one)."""
    n = 0
    for s in scales:
        h, w = max(1, int(round(height * s))), max(1, int(round(width * s)))
        n += len(tile_windows(h, w, crop, overlap)) if strategy == "TILED" else 1
    return n * (2 if flip else 1)
