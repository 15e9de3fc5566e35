"""PASCAL VOC 2012 reader.

Layout read (the devkit's ``VOCdevkit/VOC2012``; pass that folder as the root)::

    <root>/ImageSets/Segmentation/{train,val,test}.txt   one image id per line
    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png                    palette PNG: 0..20, 255 on object borders
                                                         (SegmentationClassAug/<id>.png is used
                                                         where SegmentationClass has no file)

Labels keep their values 0..20 and 255 (ignore); ``trainval`` is train followed by val; test
images have no label (all-ignore).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spgnet.data.base import Record, identity_lut
from spgnet.data.io import printable, read_numbered_lines
from spgnet.data.labels import IGNORE_INDEX, VOC_CLASSES
from spgnet.errors import SpgnetError

DATASET = "voc"
LIST_DIR = Path("ImageSets") / "Segmentation"
IMAGE_DIR = "JPEGImages"
LABEL_DIRS = ("SegmentationClass", "SegmentationClassAug")
IMAGE_EXT = ".jpg"
BASE_SPLITS = ("train", "val", "test")
LABELLED_SPLITS = ("train", "val")
VALID_LABEL_VALUES = frozenset(range(len(VOC_CLASSES))) | {IGNORE_INDEX}


def label_lut() -> np.ndarray:
    return identity_lut(len(VOC_CLASSES))


def read_list(list_file: Path) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of the non-blank lines of a split list, split on whitespace
    (any BOM, line ends and trailing blanks ignored: :func:`spgnet.data.io.read_numbered_lines`)."""
    return [(number, line.split()) for number, line in read_numbered_lines(list_file)]


def scan_list(
    root: Path, split: str, list_dir: Path, label_dirs: tuple[str, ...], *, required: bool
) -> tuple[list[Record], list[str]]:
    """Records of a VOC-style split list. A line is an image id, or an image path and a label path
    relative to the root (a leading '/' is ignored, as in DeepLab's list files)."""
    root = Path(root)
    list_file = root / list_dir / f"{split}.txt"
    if not list_file.is_file():
        return [], ([f"{printable(list_file)}: missing split list"] if required else [])
    records, problems = [], []
    try:
        lines = read_list(list_file)
    except SpgnetError as err:
        return [], [str(err)]
    if not lines:
        problems.append(f"{list_file}: empty split list")
    labelled = split in LABELLED_SPLITS
    for number, fields in lines:
        if len(fields) == 1:
            name = fields[0]
            image = root / IMAGE_DIR / f"{name}{IMAGE_EXT}"
            candidates = [root / d / f"{name}.png" for d in label_dirs]
            label = next((c for c in candidates if c.is_file()), None)
            expected = candidates[0]
        elif len(fields) == 2:
            image, expected = (root / f.lstrip("/") for f in fields)
            name = image.stem
            label = expected if expected.is_file() else None
        else:
            problems.append(f"{list_file}:{number}: expected an image id or 'image label' paths, got {len(fields)} fields")
            continue
        if not image.is_file():
            problems.append(f"{printable(image)}: missing image (listed in {list_file}:{number})")
            continue
        if label is None and labelled:
            problems.append(f"{image}: no label (expected {printable(expected)})")
            continue
        records.append(Record(image=image, label=label, name=name))
    return records, problems


def scan(root: Path, split: str) -> tuple[list[Record], list[str]]:
    return scan_list(root, split, LIST_DIR, LABEL_DIRS, required=split in LABELLED_SPLITS)


def has_split(root: Path, split: str) -> bool:
    return (Path(root) / LIST_DIR / f"{split}.txt").is_file()
