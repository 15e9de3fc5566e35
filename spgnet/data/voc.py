"""PASCAL VOC 2012 reader.

Layout read (the devkit's ``VOCdevkit/VOC2012``; pass that folder as the root)::

    <root>/ImageSets/Segmentation/{train,val,test}.txt   one image id per line
    <root>/ImageSets/Segmentation/train_aug.txt          (optional) the ``trainaug`` split
    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png                    palette PNG: 0..20, 255 on object borders
                                                         (SegmentationClassAug/<id>.png is used
                                                         where SegmentationClass has no file)
    <root>/SegmentationClassAug/<id>.png                 SBD's extra annotations (Hariharan et
                                                         al.) with the VOC ones, as DeepLab lays
                                                         them out: 0..20, 255

Labels keep their values 0..20 and 255 (ignore); ``trainval`` is train followed by val; test
images have no label (all-ignore). ``trainaug`` is DeepLab's ``train_aug.txt`` (10,582 ids: VOC
2012 train plus SBD, less every VOC 2012 val image; an id per line or DeepLab's "/JPEGImages/x.jpg
/SegmentationClassAug/x.png" pairs), its labels read from ``SegmentationClassAug`` first (SBD
images have no ``SegmentationClass`` file); a ``train_aug.txt`` holding an id of ``val.txt`` is
refused.
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
AUG_LABEL_DIRS = ("SegmentationClassAug", "SegmentationClass")
#: trainaug: VOC 2012 train + SBD less val (DeepLab's list); read when its list file exists.
AUG_SPLIT = "trainaug"
#: List file of each split whose name is not ``<split>.txt``.
LIST_FILES = {AUG_SPLIT: "train_aug.txt"}
BASE_SPLITS = ("train", "val", "test", AUG_SPLIT)
LABELLED_SPLITS = ("train", "val", AUG_SPLIT)
#: Splits read only where their list exists (prepare-data skips them otherwise).
OPTIONAL_SPLITS = ("test", AUG_SPLIT)
#: Val ids named in the one-line refusal of a trainaug list that holds some.
SHOWN_IDS = 3
VALID_LABEL_VALUES = frozenset(range(len(VOC_CLASSES))) | {IGNORE_INDEX}


def label_lut() -> np.ndarray:
    return identity_lut(len(VOC_CLASSES))


def read_list(list_file: Path) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of the non-blank lines of a split list, split on whitespace
    (any BOM, line ends and trailing blanks ignored: :func:`spgnet.data.io.read_numbered_lines`)."""
    return [(number, line.split()) for number, line in read_numbered_lines(list_file)]


def scan_list(
    root: Path, split: str, list_dir: Path, label_dirs: tuple[str, ...], *, required: bool,
    list_name: str | None = None,
) -> tuple[list[Record], list[str]]:
    """Records of a VOC-style split list (``<list_dir>/<split>.txt``, or ``<list_dir>/<list_name>``).
    A line is an image id, or an image path and a label path relative to the root (a leading '/'
    is ignored, as in DeepLab's list files); an id's label is the first of ``label_dirs`` holding
    ``<id>.png``."""
    root = Path(root)
    list_file = root / list_dir / (list_name or f"{split}.txt")
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


def list_path(root: Path, split: str) -> Path:
    """The list file of ``split`` under ``root`` (``trainaug``: ``train_aug.txt``)."""
    return Path(root) / LIST_DIR / LIST_FILES.get(split, f"{split}.txt")


def listed_ids(list_file: Path) -> list[str]:
    """The image ids a VOC list names, in order: a line's id, or the stem of its image path."""
    return [Path(fields[0]).stem if len(fields) == 2 else fields[0] for _, fields in read_list(list_file) if fields]


def val_overlap(aug_list: Path | str, ids: list[str], val_ids: list[str]) -> str | None:
    """The one-line refusal of a trainaug list whose ``ids`` include some of ``val_ids`` (None if
    none do): trainaug must leave out every VOC 2012 val image, or val would score training images."""
    val = set(val_ids)
    held = list(dict.fromkeys(i for i in ids if i in val))
    if not held:
        return None
    shown = ", ".join(held[:SHOWN_IDS]) + (", ..." if len(held) > SHOWN_IDS else "")
    return (f"{aug_list}: holds {len(held)} id{'s' if len(held) > 1 else ''} of val.txt ({shown}): "
            f"trainaug must leave out every VOC 2012 val image")


def scan(root: Path, split: str) -> tuple[list[Record], list[str]]:
    if split != AUG_SPLIT:
        return scan_list(root, split, LIST_DIR, LABEL_DIRS, required=split in LABELLED_SPLITS)
    # trainaug: DeepLab's train_aug.txt, labels from SegmentationClassAug first (SBD images have
    # no SegmentationClass file; for VOC train ids both exist and agree), never a val image
    records, problems = scan_list(root, split, LIST_DIR, AUG_LABEL_DIRS, required=True,
                                  list_name=LIST_FILES[split])
    aug, val = list_path(root, split), list_path(root, "val")
    if aug.is_file() and val.is_file():
        try:
            overlap = val_overlap(aug, listed_ids(aug), listed_ids(val))
        except SpgnetError:  # an unreadable list: scan_list has named it
            overlap = None
        if overlap:
            problems.insert(0, overlap)
    return records, problems


def has_split(root: Path, split: str) -> bool:
    return list_path(root, split).is_file()
