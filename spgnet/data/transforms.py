"""Training and evaluation transforms (Section 4.2).

A *raw sample* is what a data set reads from disk: ``{"image": PIL RGB image (or HxWx3 uint8
array), "label": HxW uint8 array of train ids (255 = ignore), "name": str, "path": str}``. A
transform turns it into tensors: ``image`` a FloatTensor[3,H,W] normalised with ImageNet's mean and
std; ``label`` a LongTensor[H,W] from :class:`EvalTransform`, a ByteTensor (uint8) [crop,crop]
from :class:`TrainTransform`, so that a training crop's labels cross the DataLoader's worker
pipes as 0.6 MB instead of 4.7 MB (769x769); the training loop turns them into int64 on the
device (``labels.to(device, non_blocking=True).long()``).

Cost at paper scale (issue 11)
------------------------------
:class:`TrainTransform` resamples only the crop window: it maps the window back onto the source
image and asks Pillow for just that region (``Image.resize(size, BILINEAR, box=...)``), and picks
the label's pixels with the very nearest-neighbour grid of a full ``Image.resize(NEAREST)``. Its
output is that of :class:`LegacyTrainTransform` (the transform before issue 11, which rescales the
whole image, up to 4096x2048, flips it, then crops) for the same draws: labels identical, image
pixels within 2 grey levels before normalisation (both are Pillow's two-pass 8-bit bilinear
filter, within 1 grey level of the exact filter; the window's own sampling offset moves the
rounding of ties). ``python benchmarks/data_loading.py`` measures both.

Reading less: given a :class:`spgnet.data.base.RecordReader` (what ``SegmentationDataset`` passes
a transform whose ``reads_rows`` is true), :class:`TrainTransform` draws its parameters from the
image size in the file headers, then decodes only the rows down to the window's last
(:meth:`TrainTransform.source_rows`; PNG rows are compressed top to bottom, so the rest is never
inflated, see :class:`spgnet.data.io.PartialReader`), and maps the label file's values to train
ids on the crop only. On Cityscapes' 2048x1024 images that is 83% of the rows on average (all of
them at scales 0.5 and 0.75, whose scaled image is no taller than the crop), for the same output
as from the whole decoded sample.

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
from functools import lru_cache

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


@lru_cache(maxsize=256)
def nearest_indices(source: int, size: int) -> np.ndarray:
    """Source index of each of ``size`` output pixels when Pillow resizes ``source`` pixels to
    ``size`` with ``Image.NEAREST`` (int64[size], read-only).

    Pillow's nearest resize is separable and uses 16.16 fixed point, so its grid differs from
    ``floor((i + 0.5) * source / size)`` on many pixels; resizing a ramp of indices with Pillow
    itself gives its grid exactly.
    """
    ramp = Image.frombytes("I", (source, 1), np.arange(source, dtype=np.int32).tobytes())
    indices = np.asarray(ramp.resize((size, 1), Image.NEAREST), dtype=np.int64)[0].copy()
    indices.setflags(write=False)
    return indices


def _normalize_into(out: np.ndarray, patch: np.ndarray) -> None:
    """Write the HxWx3 uint8 ``patch`` into ``out[:, :H, :W]`` (float32 [3,crop,crop]) normalised
    with the same float32 arithmetic as :func:`normalize`."""
    h, w = patch.shape[:2]
    for c in range(3):
        view = out[c, :h, :w]
        np.subtract(patch[:, :, c], _MEAN[c], out=view, dtype=np.float32)
        view *= _INV_STD[c]


def _apply_lut(lut: np.ndarray | None, values: np.ndarray) -> np.ndarray:
    """Label file values mapped to train ids through ``lut`` (uint8[256]); unchanged when None."""
    return values if lut is None else np.take(lut, values)


class TrainTransform:
    """Section 4.2's augmentation: random scale, random horizontal flip, random crop, normalisation.

    Args:
        crop: side of the square crop (769 on Cityscapes, 513 on VOC / Person-Part in the paper).
        scale_min, scale_max, scale_step: the scale is drawn uniformly from
            ``{scale_min, scale_min + scale_step, ..., scale_max}`` ({0.5, 0.75, ..., 2.0}).
        seed: seed of the transform's own generator, used when a call passes no ``rng``.
        flip: whether to flip (probability 0.5).

    The image is resized bilinearly, the label with nearest neighbour (Pillow's filters). Where the
    scaled image is smaller than the crop it is padded at the bottom and right: the *normalised*
    image with 0 (the mean colour), the label with 255 (ignore). See the module docstring for how
    ``rng`` makes training reproducible and resumable.

    Output: ``image`` float32 [3, crop, crop], ``label`` uint8 [crop, crop] (255 = ignore); the
    other keys of the sample are kept. Only the crop window is resampled: the cost no longer grows
    with the square of the scale (see the module docstring).

    Raises :class:`SpgnetError` when the label's size differs from the image's.
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

    #: SegmentationDataset passes a RecordReader (see :meth:`__call__`): only the rows under the
    #: crop are decoded.
    reads_rows = True

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

    def _inputs(self, sample: dict, rng) -> tuple[Image.Image, np.ndarray, tuple[float, bool, int, int]]:
        """The sample's PIL image, its uint8 label and this call's draws (checks their sizes)."""
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
        return image, label, self.draw(generator, height, width)

    def window(self, height: int, width: int, scale: float, flip: bool, top: int, left: int
               ) -> tuple[int, int, int, int, int, int]:
        """Where a crop drawn as (scale, flip, top, left) lies: ``(new_h, new_w, y0, y1, x0, x1)``,
        the scaled image's size and the window's rows ``y0:y1`` and columns ``x0:x1`` in the
        scaled image *before* the flip (the window clipped to the image; the rest is padding)."""
        new_h, new_w = self.scaled_size(height, width, scale)
        bottom, right = min(top + self.crop, new_h), min(left + self.crop, new_w)
        x0, x1 = (new_w - right, new_w - left) if flip else (left, right)
        return new_h, new_w, top, bottom, x0, x1

    def source_rows(self, height: int, width: int, scale: float, flip: bool, top: int, left: int) -> int:
        """How many of the source image's top rows a crop drawn as (scale, flip, top, left) reads:
        those under the window and, when resized, the reach of Pillow's bilinear filter below its
        last row (``max(source/size, 1)`` rows, ``precompute_coeffs`` in Pillow's Resample.c),
        plus one; the nearest-neighbour label rows lie within them."""
        new_h, new_w, _, y1, _, _ = self.window(height, width, scale, flip, top, left)
        if (new_h, new_w) == (height, width):
            return y1
        sy = height / new_h
        return min(height, int(np.ceil(y1 * sy + max(sy, 1.0))) + 1)

    def __call__(self, sample, rng=None) -> dict:
        """``sample``: a raw sample (dict), or a :class:`spgnet.data.base.RecordReader`, of which
        only the source rows the crop needs (:meth:`source_rows`) are read and whose label
        values are mapped to train ids after cropping."""
        lut = None
        if isinstance(sample, dict):
            image, label, (scale, flip, top, left) = self._inputs(sample, rng)
            width, height = image.size
        else:
            width, height = sample.size
            scale, flip, top, left = self.draw(self._rng if rng is None else make_rng(rng), height, width)
            sample = sample.read(self.source_rows(height, width, scale, flip, top, left))
            image, label, lut = sample.pop("image"), sample.pop("label"), sample.pop("label_lut")
        new_h, new_w, y0, y1, x0, x1 = self.window(height, width, scale, flip, top, left)
        if (new_h, new_w) == (height, width):
            patch = np.asarray(image.crop((x0, y0, x1, y1)))
            label_patch = label[y0:y1, x0:x1]
        else:
            # The window in source coordinates: Pillow samples output pixel i of a full resize at
            # source position (i + 0.5) * source / size, so the window's pixels are those of the
            # full resize, computed from the source pixels under the window and its filter margin.
            sy, sx = height / new_h, width / new_w
            box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
            patch = np.asarray(image.resize((x1 - x0, y1 - y0), Image.BILINEAR, box=box))
            rows = nearest_indices(height, new_h)[y0:y1]
            cols = nearest_indices(width, new_w)[x0:x1]
            label_patch = label[rows[:, None], cols]
        label_patch = _apply_lut(lut, label_patch)
        if flip:
            patch, label_patch = patch[:, ::-1], label_patch[:, ::-1]
        out_image = np.zeros((3, self.crop, self.crop), dtype=np.float32)
        _normalize_into(out_image, patch)
        out_label = np.full((self.crop, self.crop), IGNORE_INDEX, dtype=np.uint8)
        out_label[: y1 - y0, : x1 - x0] = label_patch
        out = dict(sample)
        out["image"] = torch.from_numpy(out_image)
        out["label"] = torch.from_numpy(out_label)
        return out


class LegacyTrainTransform(TrainTransform):
    """The training transform before issue 11: rescales the *whole* image (up to 4096x2048 at
    scale 2 on Cityscapes), flips it, then cuts the crop; labels come out as int64.

    Same arguments, same draws (:meth:`TrainTransform.draw`) and, for the same draws, the same
    crop as :class:`TrainTransform` (see the module docstring for how the pixels compare). Kept as
    the reference that ``tests/test_data_transforms.py`` and ``benchmarks/data_loading.py`` compare
    the cropping transform with; training does not use it.
    """

    #: SegmentationDataset passes the whole loaded sample, as before issue 11.
    reads_rows = False

    def __repr__(self) -> str:
        return "Legacy" + super().__repr__()

    def __call__(self, sample: dict, rng=None) -> dict:
        image, label, (scale, flip, top, left) = self._inputs(sample, rng)
        width, height = image.size
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
