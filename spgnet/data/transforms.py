"""Training and evaluation transforms (Section 4.2).

A *raw sample* is what a data set reads from disk: ``{"image": PIL RGB image (or HxWx3 uint8
array), "label": HxW uint8 array of train ids (255 = ignore), "name": str, "path": str}``. A
transform turns it into tensors: ``image`` a FloatTensor[3,H,W] normalised with ImageNet's mean and
std, ``label`` a LongTensor[H,W].

Randomness and reproducibility
------------------------------
:class:`TrainTransform` draws, in this fixed order, one scale from {scale_min, scale_min+step, ...,
scale_max}, one horizontal-flip coin and one crop offset (y, then x) from a
``numpy.random.Generator``. Which generator is chosen per call::

    transform(sample)                 # the transform's own generator, default_rng(seed): the same
                                      # seed and the same sequence of calls give identical output
    transform(sample, rng)            # rng: a numpy Generator, an int seed, a sequence of ints
                                      # (e.g. (seed, epoch, index)) or a torch.Generator

The training loop uses the second form through :class:`spgnet.data.sampler.TrainSampler`: it
yields dataset keys ``(index, (seed, epoch, index))`` and the data set seeds
``default_rng((seed, epoch, index))`` for that one sample. A sample's augmentation therefore
depends only on (seed, epoch, index), never on the worker that loads it or on what was loaded
before, so a run stopped and resumed at iteration k (``TrainSampler(start_iteration=k)``) sees
exactly the samples and augmentations of an uninterrupted run, with any number of DataLoader
workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from spgnet.data.labels import IGNORE_INDEX
from spgnet.errors import SpgnetError

#: ImageNet statistics of torchvision's pretrained backbones (RGB, images scaled to [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32) * 255.0
_INV_STD = 1.0 / (np.asarray(IMAGENET_STD, dtype=np.float32) * 255.0)


def normalize(image) -> torch.Tensor:
    """A PIL RGB image or HxWx3 uint8 array as a normalised FloatTensor[3,H,W]."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] != 3:
        raise SpgnetError(f"expected an RGB image (HxWx3), got an array of shape {array.shape}")
    array = (array - _MEAN) * _INV_STD
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def denormalize(image: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`normalize`: FloatTensor[3,H,W] -> HxWx3 uint8 array (for figures)."""
    array = image.detach().cpu().numpy().transpose(1, 2, 0) / _INV_STD + _MEAN
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _label_tensor(label) -> torch.Tensor:
    return torch.from_numpy(np.asarray(label, dtype=np.int64).copy())


def make_rng(rng) -> np.random.Generator:
    """A numpy Generator from a Generator, an int, a sequence of ints or a torch.Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=rng).item())
        return np.random.default_rng(seed)
    if isinstance(rng, (int, np.integer)) or (
        isinstance(rng, Sequence) and not isinstance(rng, (str, bytes))
    ):
        return np.random.default_rng(rng)
    raise TypeError(f"cannot seed a generator from {type(rng).__name__}")


class EvalTransform:
    """Normalisation only: the full-size image and its labels as tensors (evaluation)."""

    def __call__(self, sample: dict, rng=None) -> dict:
        out = dict(sample)
        out["image"] = normalize(sample["image"])
        out["label"] = _label_tensor(sample["label"])
        return out

    def __repr__(self) -> str:
        return "EvalTransform()"


class TrainTransform:
    """Section 4.2's augmentation: random scale, random horizontal flip, random crop, normalisation.

    Args:
        crop: side of the square crop (769 on Cityscapes, 513 on VOC / Person-Part in the paper).
        scale_min, scale_max, scale_step: the scale is drawn uniformly from
            ``{scale_min, scale_min + scale_step, ..., scale_max}`` ({0.5, 0.75, ..., 2.0}).
        seed: seed of the transform's own generator, used when a call passes no ``rng``.
        flip: whether to flip (probability 0.5).

    The image is resized bilinearly, the label with nearest neighbour. Where the scaled image is
    smaller than the crop it is padded at the bottom and right: the *normalised* image with 0 (the
    mean colour), the label with 255 (ignore). See the module docstring for how ``rng`` makes
    training reproducible and resumable.
    """

    def __init__(
        self,
        crop: int,
        scale_min: float = 0.5,
        scale_max: float = 2.0,
        scale_step: float = 0.25,
        seed: int | None = None,
        flip: bool = True,
    ):
        if int(crop) < 1:
            raise SpgnetError(f"crop must be a positive number of pixels, got {crop}")
        if scale_step <= 0 or scale_min <= 0 or scale_max < scale_min:
            raise SpgnetError(
                f"bad scale range: scale_min={scale_min}, scale_max={scale_max}, scale_step={scale_step}"
            )
        self.crop = int(crop)
        count = int(np.floor((scale_max - scale_min) / scale_step + 1e-6)) + 1
        self.scales = tuple(round(scale_min + i * scale_step, 6) for i in range(count))
        self.flip = bool(flip)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"TrainTransform(crop={self.crop}, scales={self.scales}, flip={self.flip}, seed={self.seed})"

    def draw(self, rng: np.random.Generator, height: int, width: int) -> tuple[float, bool, int, int]:
        """The augmentation parameters for an image of ``height`` x ``width``:
        (scale, flip, crop top, crop left), drawn in this order."""
        scale = self.scales[int(rng.integers(len(self.scales)))]
        flip = bool(rng.integers(2)) if self.flip else False
        new_h, new_w = self.scaled_size(height, width, scale)
        top = int(rng.integers(max(new_h, self.crop) - self.crop + 1))
        left = int(rng.integers(max(new_w, self.crop) - self.crop + 1))
        return scale, flip, top, left

    @staticmethod
    def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
        return max(1, int(round(height * scale))), max(1, int(round(width * scale)))

    def __call__(self, sample: dict, rng=None) -> dict:
        generator = self._rng if rng is None else make_rng(rng)
        image = sample["image"]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image, dtype=np.uint8))
        label = np.asarray(sample["label"], dtype=np.uint8)
        width, height = image.size
        if label.shape != (height, width):
            raise SpgnetError(
                f"{sample.get('path', '?')}: image is {width}x{height} but label is {label.shape[1]}x{label.shape[0]}"
            )
        scale, flip, top, left = self.draw(generator, height, width)
        new_h, new_w = self.scaled_size(height, width, scale)
        label_image = Image.fromarray(label)
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), Image.BILINEAR)
            label_image = label_image.resize((new_w, new_h), Image.NEAREST)
        if flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
            label_image = label_image.transpose(Image.FLIP_LEFT_RIGHT)
        # Crop the overlap of the window with the image; the rest is padding.
        bottom, right = min(top + self.crop, new_h), min(left + self.crop, new_w)
        box = (left, top, right, bottom)
        patch = np.asarray(image.crop(box), dtype=np.float32)
        out_image = np.zeros((self.crop, self.crop, 3), dtype=np.float32)
        out_image[: bottom - top, : right - left] = (patch - _MEAN) * _INV_STD
        out_label = np.full((self.crop, self.crop), IGNORE_INDEX, dtype=np.int64)
        out_label[: bottom - top, : right - left] = np.asarray(label_image.crop(box))
        out = dict(sample)
        out["image"] = torch.from_numpy(np.ascontiguousarray(out_image.transpose(2, 0, 1)))
        out["label"] = torch.from_numpy(out_label)
        return out
