"""The folder reader: a data set of your own, described by ``<root>/dataset.yaml`` (issue 24).

The description (:mod:`spgnet.config.description`: classes, palette, label encoding, ignore
value or colour, suffixes, and per split an image folder, a label folder and optionally a list of
names) is read by :func:`~spgnet.config.description.load_description`; :class:`FolderReader`
offers what the built-in reader modules (:mod:`spgnet.data.cityscapes`, :mod:`~spgnet.data.voc`,
:mod:`~spgnet.data.person_part`) offer to :mod:`spgnet.data.datasets` and
:mod:`spgnet.data.prepare`: ``BASE_SPLITS``, ``LABELLED_SPLITS``, ``OPTIONAL_SPLITS``,
``VALID_LABEL_VALUES``, ``label_lut()``, ``scan(root, split)`` and ``has_split(root, split)``,
plus the data set's ``class_names``, ``palette`` and, for colour-mask labels, ``label_colours``.

A picture's name is its path relative to the split's image folder, without the image suffix
(``city/0001`` for ``images/train/city/0001.jpg``); its label is ``<labels>/<name><label_suffix>``.
Labels are read into train ids: class ``i`` is ``i``; the ignore index (index labels) or the
ignore colour (colour masks) is 255; an index value or a colour outside the classes is 255 too
when read, and a problem for ``spgnet prepare-data``. Hidden files and folders (a leading ``.``,
as macOS's ``._x.jpg``) are not pictures.

This module imports no torch: :func:`spgnet.data.dataset_classes` and
:func:`spgnet.data.dataset_palette` use it from the command line and the configuration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spgnet.config.description import DESCRIPTION_FILE, DatasetDescription, SplitSource, load_description
from spgnet.data.io import printable, read_numbered_lines
from spgnet.data.labels import FOLDER, IGNORE_INDEX, ColourTable, voc_palette
from spgnet.errors import SpgnetError

DATASET = FOLDER
BASE_SPLITS = ("train", "val", "test")
#: Splits whose images must all have labels (a test split's labels are optional, image by image).
LABELLED_SPLITS = ("train", "val")
#: Splits read only where the description declares them.
OPTIONAL_SPLITS = ("test",)
#: Scored splits: a list naming a picture twice is a problem (it would count twice in the mIoU).
EVALUATION_SPLITS = ("val", "test")


def generated_palette(num_classes: int) -> np.ndarray:
    """``uint8 [256, 3]``: the VOC devkit's bit-interleaved colour map for classes
    ``0..num_classes-1`` (deterministic, distinct), every other entry (255 included) black."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[:num_classes] = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)[:num_classes]
    return colours


class FolderReader:
    """The reader of the folder data set at ``root`` (its ``dataset.yaml`` read and checked on
    construction: :class:`~spgnet.config.types.ConfigError`, one line naming the file and key)."""

    DATASET = DATASET
    BASE_SPLITS = BASE_SPLITS
    LABELLED_SPLITS = LABELLED_SPLITS
    OPTIONAL_SPLITS = OPTIONAL_SPLITS

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.description: DatasetDescription = load_description(self.root)
        d = self.description
        self.where = self.root / DESCRIPTION_FILE
        #: The class names, in label order.
        self.class_names: list[str] = list(d.classes)
        self.num_classes = d.num_classes
        #: A colour-mask label's table (``label_encoding: rgb``); None for index labels.
        self.label_colours: ColourTable | None = (
            ColourTable(d.palette, d.ignore_color) if d.label_encoding == "rgb" else None)
        if d.label_encoding == "rgb":  # values after the colour lookup: classes, and 255 for the ignore colour
            self.VALID_LABEL_VALUES = frozenset(range(d.num_classes)) | {IGNORE_INDEX}
        else:
            self.VALID_LABEL_VALUES = frozenset(range(d.num_classes)) | {d.ignore_index}

    def __repr__(self) -> str:
        return f"FolderReader({str(self.root)!r}, {self.num_classes} classes, {self.description.label_encoding} labels)"

    # -- the interface of the reader modules -------------------------------------------------

    def label_lut(self) -> np.ndarray:
        """uint8[256]: class value ``i`` -> ``i``, the ignore index -> 255, any other value -> 255
        (colour masks: their values are already classes or 255)."""
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[: self.num_classes] = np.arange(self.num_classes, dtype=np.uint8)
        return lut

    def has_split(self, root: Path, split: str) -> bool:
        return split in self.description.splits

    def scan(self, root: Path, split: str) -> tuple[list, list[str]]:
        """Records of one declared split, and one problem line per missing folder or list, image
        without a label (train, val), label without an image, or listed name without its file."""
        root = Path(root)
        source = self.description.splits.get(split)
        if source is None:
            return [], [f"{self.where}: key 'splits': no split '{split}' declared"]
        image_dir = root / source.images
        label_dir = root / source.labels if source.labels is not None else None
        problems: list[str] = []
        if not image_dir.is_dir():
            problems.append(f"{printable(image_dir)}: missing folder (splits.{split}.images in {self.where})")
        if label_dir is not None and not label_dir.is_dir():
            problems.append(f"{printable(label_dir)}: missing folder (splits.{split}.labels in {self.where})")
            label_dir = None
        if problems and not image_dir.is_dir():
            return [], problems
        if source.list is not None:
            records, found = self._scan_list(root, split, source, image_dir, label_dir)
        else:
            records, found = self._scan_folders(split, image_dir, label_dir)
        return records, problems + found

    # -- names ------------------------------------------------------------------------------------

    def name_of(self, path: str | Path, *, label: bool = False) -> str:
        """The name of an image (or label) file under ``root``: its path relative to the image
        (label) folder of the split holding it, without the suffix; a file outside them: its file
        name without the suffix."""
        d = self.description
        suffix = d.label_suffix if label else d.image_suffix
        path = Path(path)
        folders = {s.labels if label else s.images for s in d.splits.values()} - {None}
        for folder in sorted(folders, key=lambda f: -len(Path(f).parts)):  # the deepest folder first
            try:
                relative = path.relative_to(self.root / folder).as_posix()
            except ValueError:
                continue
            return _strip(relative, suffix)
        return _strip(path.name, suffix)

    # -- scanning ---------------------------------------------------------------------------------

    def _files(self, folder: Path, suffix: str, skip: Path | None = None, skip_suffix: str | None = None) -> dict:
        """``{name: path}`` of the non-hidden files ending in ``suffix`` under ``folder`` (sorted),
        leaving out those under ``skip`` and those ending in ``skip_suffix`` (labels beside
        their images)."""
        found = {}
        for path in sorted(folder.rglob(f"*{suffix}")):
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            if skip is not None and skip != folder and _inside(path, skip):
                continue
            if skip_suffix is not None and path.name.endswith(skip_suffix):
                continue
            found[_strip(relative.as_posix(), suffix)] = path
        return found

    def _scan_folders(self, split: str, image_dir: Path, label_dir: Path | None) -> tuple[list, list[str]]:
        from spgnet.data.base import Record

        d = self.description
        labelled = split in LABELLED_SPLITS
        if label_dir == image_dir and d.label_suffix == d.image_suffix:
            return [], [f"{self.where}: key 'splits.{split}': images and labels are the same files "
                        f"(one folder and one suffix {d.image_suffix!r}); give them other folders or suffixes"]
        # labels beside (or below) their images: their files are not pictures
        shared = label_dir is not None and _inside(label_dir, image_dir)
        other_suffix = None  # labels named <name>_mask.png beside images <name>.png
        if shared and d.label_suffix != d.image_suffix and d.label_suffix.endswith(d.image_suffix):
            other_suffix = d.label_suffix
        images = self._files(image_dir, d.image_suffix, skip=label_dir if shared else None, skip_suffix=other_suffix)
        labels = self._files(label_dir, d.label_suffix) if label_dir is not None else {}
        problems: list[str] = []
        if not images:
            problems.append(f"{image_dir}: no images (expected *{d.image_suffix}, sub-folders included)")
        records = []
        for name, image in images.items():
            label = labels.get(name)
            if label is None and labelled and label_dir is not None:
                problems.append(f"{image}: no label (expected {printable(label_dir / (name + d.label_suffix))})")
            records.append(Record(image=image, label=label, name=name))
        for name, label in labels.items():
            if name not in images:
                problems.append(f"{label}: no image (expected {printable(image_dir / (name + d.image_suffix))})")
        return records, problems

    def _scan_list(self, root: Path, split: str, source: SplitSource, image_dir: Path,
                   label_dir: Path | None) -> tuple[list, list[str]]:
        from spgnet.data.base import Record

        d = self.description
        list_file = root / source.list
        if not list_file.is_file():
            return [], [f"{printable(list_file)}: missing split list (splits.{split}.list in {self.where})"]
        try:
            lines = read_numbered_lines(list_file)
        except SpgnetError as err:
            return [], [str(err)]
        if not lines:
            return [], [f"{list_file}: empty split list"]
        labelled = split in LABELLED_SPLITS
        records, problems, first = [], [], {}
        for number, name in lines:
            if split in EVALUATION_SPLITS and name in first:
                problems.append(f"{list_file}:{number}: {printable(name)} is listed again (first at line {first[name]}); "
                                f"a scored split counts each image once")
                continue
            first.setdefault(name, number)
            image = image_dir / f"{name}{d.image_suffix}"
            if not image.is_file():
                problems.append(f"{printable(image)}: missing image (listed in {list_file}:{number})")
                continue
            label = label_dir / f"{name}{d.label_suffix}" if label_dir is not None else None
            if label is not None and not label.is_file():
                if labelled:
                    problems.append(f"{image}: no label (expected {printable(label)}; listed in {list_file}:{number})")
                    continue
                label = None
            records.append(Record(image=image, label=label, name=name))
        return records, problems

    # -- drawing ----------------------------------------------------------------------------------

    @property
    def palette(self) -> np.ndarray:
        """``uint8 [256, 3]``: class ``i``'s colour (the description's palette, else
        :func:`generated_palette`), every other entry (255 included) black."""
        d = self.description
        if d.palette is None:
            return generated_palette(d.num_classes)
        colours = np.zeros((256, 3), dtype=np.uint8)
        colours[: d.num_classes] = np.asarray(d.palette, dtype=np.uint8)
        return colours


def _strip(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else str(Path(name).with_suffix(""))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def open_reader(root: str | Path) -> FolderReader:
    """The :class:`FolderReader` of the data set at ``root`` (one line when its folder or its
    ``dataset.yaml`` is missing or wrong)."""
    root = Path(root)
    if not root.is_dir():
        raise SpgnetError(f"{printable(root)}: data set root not found (dataset 'folder')")
    return FolderReader(root)


__all__ = ["BASE_SPLITS", "DATASET", "EVALUATION_SPLITS", "LABELLED_SPLITS", "OPTIONAL_SPLITS", "FolderReader",
           "generated_palette", "open_reader"]
