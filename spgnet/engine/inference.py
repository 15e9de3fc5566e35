"""Test-time inference: single / multi-scale, flip, and Table 12's GAP / AP / TILED strategies.

:func:`predict` returns softmax probabilities at the input's resolution, averaged over every
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
"""

from __future__ import annotations

import math
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
def predict(
    model: nn.Module,
    image: torch.Tensor,
    *,
    scales: Iterable[float] = (1.0,),
    flip: bool = False,
    strategy: str = "GAP",
    crop: int | None = None,
    overlap: float = 1.0 / 3.0,
) -> torch.Tensor:
    """Averaged softmax probabilities ``[N, C, H, W]`` (``[C, H, W]`` for a ``[3, H, W]`` image).

    ``crop`` is the training crop (needed by AP and TILED); the model must be in eval mode and on
    the image's device.
    """
    single = image.dim() == 3
    x = image.unsqueeze(0) if single else image
    scales = tuple(float(s) for s in scales)
    if not scales:
        raise ValueError("at least one scale is needed")
    if strategy == "TILED" and crop is None:
        raise ValueError("the TILED strategy needs the training crop size")
    configure_pooling(model, strategy, crop)
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
    probs = total / passes
    return probs[0] if single else probs


def predict_labels(model: nn.Module, image: torch.Tensor, **kwargs) -> torch.Tensor:
    """Arg-max class map of :func:`predict` (``[H, W]`` or ``[N, H, W]``, int64)."""
    probs = predict(model, image, **kwargs)
    return probs.argmax(dim=-3)


def passes_per_image(height: int, width: int, scales: Sequence[float], flip: bool, strategy: str,
                     crop: int | None, overlap: float = 1.0 / 3.0) -> int:
    """Forward passes :func:`predict` runs per image (windows counted one by one)."""
    n = 0
    for s in scales:
        h, w = max(1, int(round(height * s))), max(1, int(round(width * s)))
        n += len(tile_windows(h, w, crop, overlap)) if strategy == "TILED" else 1
    return n * (2 if flip else 1)
