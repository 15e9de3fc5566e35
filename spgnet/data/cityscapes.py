"""Cityscapes reader.

Layout read (the official one)::

    <root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
                                          ..._gtFine_instanceIds.png, ..._gtFine_polygons.json

Labels are read from ``*_gtFine_labelIds.png`` and mapped to the 19 train ids (others -> 255) with
cityscapesscripts' label table. ``trainval`` is train followed by val (the paper's test-set model,
Sec. 4.2). Test images need no label file; without one their label is all-ignore.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spgnet.data.base import Record
from spgnet.data.io import printable
from spgnet.data.labels import CITYSCAPES_LABEL_IDS, LABELID_TO_TRAINID

DATASET = "cityscapes"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
BASE_SPLITS = ("train", "val", "test")
#: Splits whose images must all have labels.
LABELLED_SPLITS = ("train", "val")
#: Raw values a labelIds PNG may hold.
VALID_LABEL_VALUES = frozenset(CITYSCAPES_LABEL_IDS)


def label_lut() -> np.ndarray:
    return LABELID_TO_TRAINID


def image_path(root: Path, split: str, name: str) -> Path:
    return Path(root) / "leftImg8bit" / split / name.split("_")[0] / f"{name}{IMAGE_SUFFIX}"


def label_path(root: Path, split: str, name: str) -> Path:
    return Path(root) / "gtFine" / split / name.split("_")[0] / f"{name}{LABEL_SUFFIX}"


def name_of(path: Path) -> str:
    """``<city>_<seq>_<frame>`` of an image or label file."""
    base = Path(path).name
    for suffix in (IMAGE_SUFFIX, LABEL_SUFFIX):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return Path(path).stem


def scan(root: Path, split: str) -> tuple[list[Record], list[str]]:
    """Records of one on-disk split, and one problem line per missing folder, image or label."""
    root = Path(root)
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    problems: list[str] = []
    if not image_dir.is_dir():
        return [], [f"{printable(image_dir)}: missing folder (expected leftImg8bit/{split}/<city>/*{IMAGE_SUFFIX})"]
    images = {name_of(p): p for p in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))}
    labels = {name_of(p): p for p in sorted(label_dir.glob(f"*/*{LABEL_SUFFIX}"))} if label_dir.is_dir() else {}
    if not images:
        problems.append(f"{image_dir}: no images (expected <city>/*{IMAGE_SUFFIX})")
    if split in LABELLED_SPLITS and not label_dir.is_dir():
        problems.append(f"{printable(label_dir)}: missing folder (expected gtFine/{split}/<city>/*{LABEL_SUFFIX})")
    records = []
    for name, image in images.items():
        label = labels.get(name)
        expected = label_dir / image.parent.name / f"{name}{LABEL_SUFFIX}"
        if label is not None and label != expected:
            problems.append(f"{label}: label in city folder '{label.parent.name}' but its image is in '{image.parent.name}'")
            label = None
        elif label is None and split in LABELLED_SPLITS and label_dir.is_dir():
            problems.append(f"{image}: no label (expected {printable(expected)})")
        records.append(Record(image=image, label=label, name=name))
    for name, label in labels.items():
        if name not in images:
            problems.append(f"{label}: no image (expected {printable(image_dir / label.parent.name / (name + IMAGE_SUFFIX))})")
    return records, problems


def has_split(root: Path, split: str) -> bool:
    return (Path(root) / "leftImg8bit" / split).is_dir()
