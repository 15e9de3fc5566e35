"""The data set class shared by the three readers.

A reader turns a data set tree into a list of :class:`Record` (image path, label path or None,
name); :class:`SegmentationDataset` loads a record, maps its label file's values to train ids with
the reader's lookup table, and applies a transform (see :mod:`spgnet.data.transforms`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from spgnet.data.io import read_image, read_label
from spgnet.data.labels import IGNORE_INDEX, class_names
from spgnet.data.transforms import EvalTransform
from spgnet.errors import SpgnetError


@dataclass(frozen=True)
class Record:
    """One sample on disk: its image, its label file (None for unlabelled test images), its name."""

    image: Path
    label: Path | None
    name: str


def identity_lut(num_classes: int) -> np.ndarray:
    """Label values 0..C-1 and 255 are kept; any other value becomes 255 (ignore)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[:num_classes] = np.arange(num_classes, dtype=np.uint8)
    return lut


def read_label_values(path: Path) -> np.ndarray:
    """The raw values of a single-channel (L or P) label PNG as an HxW uint8 array
    (:func:`spgnet.data.io.read_label`: a non-identity EXIF orientation is an error)."""
    return read_label(path)


class SegmentationDataset(Dataset):
    """Images and train-id labels of one split of one data set.

    ``dataset[key]`` takes an int index, or ``(index, rng_seed)`` where ``rng_seed`` seeds the
    transform's generator for this sample only (what :class:`spgnet.data.sampler.TrainSampler`
    yields). Items are ``{"image": FloatTensor[3,H,W], "label": [H,W], "name": str, "path": str}``;
    the label is int64 from :class:`~spgnet.data.transforms.EvalTransform` and uint8 (train ids,
    255 = ignore) from :class:`~spgnet.data.transforms.TrainTransform`, so that training crops
    cross the DataLoader's worker pipes at one byte a pixel. Unlabelled images get an all-255
    label.
    """

    def __init__(self, dataset: str, records: list[Record], label_lut: np.ndarray, transform=None, split: str = ""):
        self.dataset = dataset
        self.split = split
        self.records = list(records)
        self.label_lut = label_lut
        self.transform = transform if transform is not None else EvalTransform()
        self.class_names = class_names(dataset)
        self.num_classes = len(self.class_names)
        self.ignore_index = IGNORE_INDEX

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"SegmentationDataset({self.dataset!r}, split={self.split!r}, {len(self)} images, transform={self.transform!r})"

    def load(self, index: int) -> dict:
        """The raw sample: PIL RGB image (upright by its EXIF orientation, see
        :func:`spgnet.data.io.read_image`), uint8 train-id label, name and image path."""
        record = self.records[index]
        image, orientation = read_image(record.image, with_orientation=True)
        if record.label is None:
            label = np.full((image.height, image.width), IGNORE_INDEX, dtype=np.uint8)
        else:
            label = self.label_lut[read_label_values(record.label)]
            if label.shape != (image.height, image.width):
                turned = f" after applying its EXIF orientation {orientation}" if orientation != 1 else ""
                raise SpgnetError(
                    f"{record.label}: label is {label.shape[1]}x{label.shape[0]} but its image "
                    f"{record.image} is {image.width}x{image.height}{turned}"
                )
        return {"image": image, "label": label, "name": record.name, "path": str(record.image)}

    def __getitem__(self, key):
        if isinstance(key, tuple):
            index, rng = key
            return self.transform(self.load(int(index)), rng)
        return self.transform(self.load(int(key)))
