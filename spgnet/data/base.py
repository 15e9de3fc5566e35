"""The data set class shared by the readers (the three built-in ones and the folder reader).

A reader turns a data set tree into a list of :class:`Record` (image path, label path or None,
name); :class:`SegmentationDataset` loads a record, maps its label file's values to train ids with
the reader's lookup table, and applies a transform (see :mod:`spgnet.data.transforms`). A colour-
mask label (a folder data set's ``label_encoding: rgb``) is turned into class values on reading by
the reader's :class:`~spgnet.data.labels.ColourTable`, then goes the same way.
Training's crop-first transform gets a :class:`RecordReader` instead of a loaded sample, so that
only the image rows under its crop are decoded (issue 11).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from spgnet.data.io import PartialReader, read_image, read_label
from spgnet.data.labels import IGNORE_INDEX, ColourTable
from spgnet.data.labels import class_names as _class_names
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


def read_label_values(path: Path, colours: ColourTable | None = None) -> np.ndarray:
    """The raw values of a single-channel (L or P) label PNG as an HxW uint8 array
    (:func:`spgnet.data.io.read_label`: a non-identity EXIF orientation is an error); with
    ``colours``, a colour-mask label's class values (255 for the ignore colour and any colour
    outside the palette)."""
    if colours is None:
        return read_label(path)
    return colours.values(read_label(path, colour=True))


def _size_mismatch(record: Record, label_shape: tuple[int, int], size: tuple[int, int], orientation: int) -> SpgnetError:
    turned = f" after applying its EXIF orientation {orientation}" if orientation != 1 else ""
    return SpgnetError(
        f"{record.label}: label is {label_shape[1]}x{label_shape[0]} but its image "
        f"{record.image} is {size[0]}x{size[1]}{turned}"
    )


class RecordReader:
    """One record opened but not decoded, for a transform that reads only the rows it needs
    (:class:`spgnet.data.transforms.TrainTransform`).

    ``size``: the upright image's (width, height), from the files' headers. :meth:`read` gives the
    raw sample's top rows (:class:`spgnet.data.io.PartialReader`: a partial decode only where the
    file is a PNG needing no EXIF turn, the same pixels either way).

    ``label_colours``: a colour-mask label's table; the rows read are turned into class values.

    Raises :class:`SpgnetError` naming the files when they are missing or unreadable, or when the
    label's size differs from the image's.
    """

    def __init__(self, record: Record, label_lut: np.ndarray, label_colours: ColourTable | None = None):
        self.record = record
        self.label_lut = label_lut
        self.label_colours = label_colours
        self.image = PartialReader(record.image)
        self.label = (PartialReader(record.label, label=True, colour=label_colours is not None)
                      if record.label is not None else None)
        self.size = self.image.size
        if self.label is not None and self.label.size != self.size:
            raise _size_mismatch(record, self.label.size[::-1], self.size, self.image.orientation)

    def read(self, rows: int | None = None) -> dict:
        """The raw sample's top ``rows`` rows (all when None): ``{"image": PIL RGB image,
        "label": uint8 array of the label file's raw values, "label_lut": uint8[256] mapping them
        to train ids (None for an unlabelled record, whose label is all 255), "name", "path"}``.
        The lookup is left to the transform, to apply on the crop only."""
        image = self.image.read(rows)
        if self.label is None:
            label, lut = np.full((image.height, image.width), IGNORE_INDEX, dtype=np.uint8), None
        else:
            label, lut = self.label.read(rows), self.label_lut
            if self.label_colours is not None:
                label = self.label_colours.values(label)
        return {"image": image, "label": label, "label_lut": lut, "name": self.record.name,
                "path": str(self.record.image)}


class SegmentationDataset(Dataset):
    """Images and train-id labels of one split of one data set.

    ``dataset[key]`` takes an int index, or ``(index, rng_seed)`` where ``rng_seed`` seeds the
    transform's generator for this sample only (what :class:`spgnet.data.sampler.TrainSampler`
    yields). Items are ``{"image": FloatTensor[3,H,W], "label": [H,W], "name": str, "path": str}``;
    the label is int64 from :class:`~spgnet.data.transforms.EvalTransform` and uint8 (train ids,
    255 = ignore) from :class:`~spgnet.data.transforms.TrainTransform`, so that training crops
    cross the DataLoader's worker pipes at one byte a pixel. Unlabelled images get an all-255
    label.

    ``class_names``: the reader's (a folder data set's description); default: the built-in data
    set's (:func:`spgnet.data.labels.class_names`). ``label_colours``: colour-mask labels' table.
    """

    def __init__(self, dataset: str, records: list[Record], label_lut: np.ndarray, transform=None, split: str = "",
                 *, class_names: list[str] | None = None, label_colours: ColourTable | None = None):
        self.dataset = dataset
        self.split = split
        self.records = list(records)
        self.label_lut = label_lut
        #: A colour-mask label's table (a folder data set's ``label_encoding: rgb``); None: class values.
        self.label_colours = label_colours
        self.transform = transform if transform is not None else EvalTransform()
        self.class_names = list(class_names) if class_names is not None else _class_names(dataset)
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
            label = self.label_lut[read_label_values(record.label, self.label_colours)]
            if label.shape != (image.height, image.width):
                raise _size_mismatch(record, label.shape, image.size, orientation)
        return {"image": image, "label": label, "name": record.name, "path": str(record.image)}

    def open(self, index: int) -> RecordReader:
        """The record opened for a transform that reads only the rows it needs (nothing decoded
        yet); see :class:`RecordReader`."""
        return RecordReader(self.records[index], self.label_lut, self.label_colours)

    def __getitem__(self, key):
        index, rng = (key[0], key[1]) if isinstance(key, tuple) else (key, None)
        # A transform with ``reads_rows`` (TrainTransform) gets the unopened record, any other
        # (evaluation, LegacyTrainTransform) the whole loaded sample.
        sample = self.open(int(index)) if getattr(self.transform, "reads_rows", False) else self.load(int(index))
        return self.transform(sample) if rng is None else self.transform(sample, rng)
