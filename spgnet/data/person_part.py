"""PASCAL Person-Part reader (Chen et al., CVPR 2014; the part labels merged into 6 parts as in
DeepLab's release).

Layout read (VOC-like; the images are VOC 2010 JPEGs)::

    <root>/ImageSets/Person/{train,val,test}.txt   one image id per line, or two paths per line
                                                   ("/JPEGImages/<id>.jpg /SegmentationPart/<id>.png",
                                                   relative to the root, as in DeepLab's lists)
    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationPart/<id>.png               L or palette PNG: 0 background, 1 head, 2 torso,
                                                   3 upper arms, 4 lower arms, 5 upper legs,
                                                   6 lower legs; 255 = ignore

``trainval`` is train followed by val; test images may lack labels (all-ignore).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spgnet.data.base import Record, identity_lut
from spgnet.data.labels import IGNORE_INDEX, PERSON_PART_CLASSES
from spgnet.data.voc import scan_list

DATASET = "person_part"
LIST_DIR = Path("ImageSets") / "Person"
IMAGE_DIR = "JPEGImages"
LABEL_DIRS = ("SegmentationPart",)
BASE_SPLITS = ("train", "val", "test")
LABELLED_SPLITS = ("train", "val")
VALID_LABEL_VALUES = frozenset(range(len(PERSON_PART_CLASSES))) | {IGNORE_INDEX}


def label_lut() -> np.ndarray:
    return identity_lut(len(PERSON_PART_CLASSES))


def scan(root: Path, split: str) -> tuple[list[Record], list[str]]:
    return scan_list(root, split, LIST_DIR, LABEL_DIRS, required=split in LABELLED_SPLITS)


def has_split(root: Path, split: str) -> bool:
    return (Path(root) / LIST_DIR / f"{split}.txt").is_file()
