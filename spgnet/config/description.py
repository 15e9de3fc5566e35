"""A folder data set's description, ``DIR/dataset.yaml``: your own data through the same pipeline
(issue 24; ``docs/own-data.md``).

mmsegmentation describes a custom data set by ``img_suffix`` / ``seg_map_suffix``, its ``metainfo``
classes and palette, and per split an image folder, an annotation folder and an optional list of
names; this file says the same in one place::

    classes: [road, building, vegetation, car, sky]   # label value i is classes[i]
    palette: [[128, 64, 128], [70, 70, 70], ...]     # one RGB colour per class (drawing; rgb labels)
    label_encoding: index          # index: a PNG of class values (grey or palette);
                                   # rgb: a colour mask, each class its palette colour
    ignore_index: 255              # index labels: the value loss and mIoU skip
    ignore_color: [0, 0, 0]        # rgb labels: the colour they skip (optional)
    image_suffix: .jpg
    label_suffix: .png
    image_size: [512, 1024]        # optional: the size #FLOPs are counted at (H, W)
    splits:
      train: {images: images/train, labels: labels/train}
      val:   {images: images/val, labels: labels/val}
      test:  {images: images/test}                       # optional; labels optional
      # or a list of names (one per line, no suffix), the files under shared folders:
      # train: {list: splits/train.txt, images: images, labels: labels}

The picture ``NAME`` of a split is ``<images>/NAME<image_suffix>`` and its label
``<labels>/NAME<label_suffix>``; without a ``list`` every ``*<image_suffix>`` under ``images``
(sub-folders included) is one. Folders and lists are relative to ``DIR``. Labels of any class
count up to 255 are read into the pipeline's train ids: class ``i`` is ``i``, the ignore value or
colour 255 (:data:`spgnet.data.labels.IGNORE_INDEX`).

:func:`load_description` reads and checks the file; every problem is one
:class:`~spgnet.config.types.ConfigError` line naming the file and the key (an unknown key, a
palette whose length disagrees with the classes, an ignore index inside the classes, ...). The
pictures themselves are checked by ``spgnet prepare-data --dataset folder`` (:mod:`spgnet.data.folder`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from spgnet.config.mappings import load_yaml
from spgnet.config.types import FORBID_EXTRA, SPLITS, ConfigError, ImageSide, _number, validate

#: The file that describes a folder data set, in its root.
DESCRIPTION_FILE = "dataset.yaml"
#: The most classes a folder data set may have: labels are one byte, 255 is "ignore".
MAX_CLASSES = 255
#: The splits a folder data set may declare (trainval is train then val, as for the others).
FOLDER_SPLITS = ("train", "val", "test")

Channel = Annotated[int, Field(ge=0, le=255), BeforeValidator(_number)]
Colour = tuple[Channel, Channel, Channel]
ClassName = Annotated[str, Field(min_length=1)]


@dataclass(frozen=True)
class SplitSource:
    """Where one split's files lie: folders relative to the data set's root, and optionally a list
    of names (one per line, without suffix; else every image under ``images``)."""

    __pydantic_config__ = FORBID_EXTRA
    images: Annotated[str, Field(min_length=1)]
    labels: str | None = None  # None: unlabelled (a test split)
    list: str | None = None


@dataclass(frozen=True)
class DatasetDescription:
    """``DIR/dataset.yaml`` (see the module's docstring)."""

    __pydantic_config__ = FORBID_EXTRA
    classes: Annotated[tuple[ClassName, ...], Field(min_length=1, max_length=MAX_CLASSES)]
    splits: dict[Literal[FOLDER_SPLITS], SplitSource]
    label_encoding: Literal["index", "rgb"] = "index"
    palette: tuple[Colour, ...] | None = None
    ignore_index: Annotated[int, Field(ge=0, le=255)] = 255
    ignore_color: Colour | None = None
    image_suffix: Annotated[str, Field(min_length=1)] = ".jpg"
    label_suffix: Annotated[str, Field(min_length=1)] = ".png"
    image_size: tuple[ImageSide, ImageSide] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def description_file(root: str | Path) -> Path:
    return Path(root) / DESCRIPTION_FILE


def load_description(root: str | Path) -> DatasetDescription:
    """The checked description of the folder data set at ``root``. Raises :class:`ConfigError`
    (one line naming ``root/dataset.yaml`` and the key) when the file is missing or wrong."""
    path = description_file(root)
    return _load(str(path.resolve()), path.stat().st_mtime_ns if path.is_file() else None, str(root))


@functools.lru_cache(maxsize=32)
def _load(path: str, mtime: int | None, root: str) -> DatasetDescription:
    where = str(Path(root) / DESCRIPTION_FILE)
    if mtime is None:
        raise ConfigError(f"{where}: not found (a folder data set is described by DIR/{DESCRIPTION_FILE}; "
                          f"see docs/own-data.md)")
    raw = load_yaml(Path(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {ascii(raw)}")
    description = validate(DatasetDescription, raw, where)
    _check(description, where)
    return description


def _check(d: DatasetDescription, where: str) -> None:
    """What one field's type cannot say: agreements between the keys."""
    if len(set(d.classes)) != len(d.classes):
        twice = next(name for name in d.classes if d.classes.count(name) > 1)
        raise ConfigError(f"{where}: key 'classes': class '{twice}' is named twice")
    if d.palette is not None:
        if len(d.palette) != d.num_classes:
            raise ConfigError(f"{where}: key 'palette': {len(d.palette)} colours for {d.num_classes} classes "
                              f"(one colour per class, in the order of 'classes')")
        if len(set(d.palette)) != len(d.palette):
            raise ConfigError(f"{where}: key 'palette': two classes share the colour "
                              f"{list(next(c for c in d.palette if d.palette.count(c) > 1))}")
    if d.label_encoding == "rgb":
        if d.palette is None:
            raise ConfigError(f"{where}: key 'palette': needed with label_encoding: rgb (each class's colour)")
        if d.ignore_color is not None and d.ignore_color in d.palette:
            raise ConfigError(f"{where}: key 'ignore_color': {list(d.ignore_color)} is the colour of class "
                              f"'{d.classes[d.palette.index(d.ignore_color)]}'")
    elif d.ignore_color is not None:
        raise ConfigError(f"{where}: key 'ignore_color': only for label_encoding: rgb (index labels use ignore_index)")
    if d.label_encoding == "index" and d.ignore_index < d.num_classes:
        raise ConfigError(f"{where}: key 'ignore_index': {d.ignore_index} is the value of class "
                          f"'{d.classes[d.ignore_index]}' (it must be outside 0..{d.num_classes - 1})")
    for split in ("train", "val"):
        if split not in d.splits:
            raise ConfigError(f"{where}: key 'splits': missing split '{split}' (train and val are needed; test is optional)")
        if d.splits[split].labels is None:
            raise ConfigError(f"{where}: key 'splits.{split}.labels': missing (the {split} split must be labelled)")
    for split, source in d.splits.items():
        for key in ("images", "labels", "list"):
            value = getattr(source, key)
            if value is not None and (Path(value).is_absolute() or ".." in Path(value).parts):
                raise ConfigError(f"{where}: key 'splits.{split}.{key}': a path inside the data set's folder, got {value!r}")
    for key in ("image_suffix", "label_suffix"):
        if "/" in getattr(d, key):
            raise ConfigError(f"{where}: key '{key}': a file name ending, got {getattr(d, key)!r}")


__all__ = ["DESCRIPTION_FILE", "FOLDER_SPLITS", "MAX_CLASSES", "SPLITS", "DatasetDescription", "SplitSource",
           "description_file", "load_description"]
