"""``spgnet prepare-data``: check a data set tree and write the split lists the pipeline reads.

Checks, each problem reported on one line naming the file:

* images without labels and labels without images (train and val; test labels are optional),
* missing split folders or split lists,
* unreadable or truncated image and label files,
* image and label of different sizes (the image's size upright, after its EXIF orientation),
  label files that are not single-channel or carry an EXIF orientation,
* label values outside the data set's class set (Cityscapes label ids 0..33; VOC 0..20 and 255;
  Person-Part 0..6 and 255; a folder data set: 0..C-1 and its ignore index, or for colour masks
  the palette's colours and its ignore colour).

``--dataset folder`` reads ``<root>/dataset.yaml`` first (:mod:`spgnet.data.folder`): a wrong
description is one line naming the file and the key, before any picture is read.

When anything is wrong it prints every problem, then a one-line summary, exits non-zero and
writes nothing. Otherwise it writes, through a temporary folder renamed into place:

* ``<out>/<split>.txt`` for train, val, test (when present), trainval and, for VOC, trainaug (when
  ``ImageSets/Segmentation/train_aug.txt`` is present; one holding an id of val.txt is a
  problem): one line per image, ``<image path>\\t<label path>`` relative to the root (empty label
  for unlabelled test images);
* ``<out>/summary.json``: images per split, the classes present and their pixel counts, and
  ``exif_oriented``: how many images carry a non-identity EXIF orientation (per split and in all;
  :func:`spgnet.data.io.read_image` turns them upright wherever they are read).

Split lists and file names may come from other tools: see :mod:`spgnet.data.io`.

An existing ``<out>`` is replaced only if it is empty or was written by prepare-data: it holds
the marker file ``.prepare-data`` (:data:`MARKER`), which no workflow declares as an output. A
workflow deletes the outputs it declares (``summary.json``) before it reruns a job, so a folder
recognised by its summary alone could not be rerun after its data set was regenerated
(snakemake#1150; issue 22).
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ImageFile

from spgnet.atomic import atomic_dir
from spgnet.data.io import printable, read_image, read_label
from spgnet.data.labels import DATASET_KINDS, FOLDER, IGNORE_INDEX, ColourTable
from spgnet.errors import SpgnetError

SUMMARY = "summary.json"
TOOL = "spgnet prepare-data"
#: Written into every output folder; its presence marks the folder as prepare-data's to replace.
MARKER = ".prepare-data"


def _reader(dataset: str, root: Path | None = None):
    from spgnet.data.catalog import dataset_reader

    if dataset not in DATASET_KINDS:
        raise SpgnetError(f"unknown dataset '{dataset}' (valid: {', '.join(DATASET_KINDS)})")
    return dataset_reader(dataset, root)


@dataclass
class RecordCheck:
    """What :func:`check_record` found for one image/label pair."""

    problems: list[str]
    histogram: np.ndarray | None = None  # train-id pixel counts (256 bins); None without a label
    orientation: int = 1  # the image's EXIF orientation (1 = none; applied on every read)


def check_record(record, valid_values: frozenset, lut: np.ndarray, colours: ColourTable | None = None) -> RecordCheck:
    """Problems of one image/label pair, its histogram of train ids and its EXIF orientation.

    The image is read as training reads it (:func:`spgnet.data.io.read_image`: upright by its
    EXIF orientation), so the size compared with the label's is the upright one. ``colours``: the
    label is a colour mask, its colours turned into class values by this table; a colour outside
    it is a problem."""
    try:
        image, orientation = read_image(record.image, with_orientation=True)
    except SpgnetError as err:
        return RecordCheck([str(err)])
    if record.label is None:
        return RecordCheck([], None, orientation)
    try:
        values = read_label(record.label, colour=colours is not None)
    except SpgnetError as err:
        return RecordCheck([str(err)], None, orientation)
    problems = []
    if colours is not None:
        unknown = colours.unknown(values)
        if unknown:
            shown = ", ".join(f"({r},{g},{b})" for r, g, b in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
            problems.append(f"{record.label}: colours outside the palette: {shown}")
        values = colours.values(values)
    label_size = (values.shape[1], values.shape[0])
    if label_size != image.size:
        turned = f" after applying its EXIF orientation {orientation}" if orientation != 1 else ""
        problems.append(
            f"{record.label}: label is {label_size[0]}x{label_size[1]} but image {record.image} "
            f"is {image.size[0]}x{image.size[1]}{turned}"
        )
    counts = np.bincount(values.ravel(), minlength=256)
    bad = [int(v) for v in np.flatnonzero(counts) if int(v) not in valid_values]
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        problems.append(f"{record.label}: label values outside the class set: {shown}")
    hist = np.bincount(lut[np.flatnonzero(counts)], weights=counts[np.flatnonzero(counts)], minlength=256)
    return RecordCheck(problems, hist.astype(np.int64), orientation)


def check_tree(dataset: str, root: Path, workers: int = 4) -> tuple[dict, dict, list[str]]:
    """(records per split, summary, problems) of the tree at ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise SpgnetError(f"{printable(root)}: data set root not found")
    module = _reader(dataset, root)  # a folder data set: its dataset.yaml read and checked here
    from spgnet.data.catalog import dataset_classes

    names = dataset_classes(dataset, root)
    lut = module.label_lut()
    colours = getattr(module, "label_colours", None)
    problems: list[str] = []
    splits: dict[str, list] = {}
    optional = getattr(module, "OPTIONAL_SPLITS", ())  # VOC's trainaug: only where train_aug.txt exists
    for split in module.BASE_SPLITS:
        if (split not in module.LABELLED_SPLITS or split in optional) and not module.has_split(root, split):
            continue
        records, found = module.scan(root, split)
        problems += found
        splits[split] = records
    summary = {"tool": TOOL, "dataset": dataset, "root": str(root), "classes": names, "splits": {}}
    if dataset == FOLDER:
        summary["label_encoding"] = module.description.label_encoding
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for split, records in splits.items():
                hist = np.zeros(256, np.int64)
                oriented = 0
                progress = None
                if sys.stderr.isatty():
                    from tqdm import tqdm

                    progress = tqdm(total=len(records), desc=f"prepare-data {split}", unit="img", leave=False)
                for check in pool.map(lambda r: check_record(r, module.VALID_LABEL_VALUES, lut, colours), records):
                    problems += check.problems
                    oriented += check.orientation != 1
                    if check.histogram is not None:
                        hist += check.histogram
                    if progress is not None:
                        progress.update(1)
                if progress is not None:
                    progress.close()
                summary["splits"][split] = {
                    "images": len(records),
                    "labelled": sum(r.label is not None for r in records),
                    "classes_present": [n for i, n in enumerate(names) if hist[i] > 0],
                    "pixels_per_class": {n: int(hist[i]) for i, n in enumerate(names)},
                    "ignore_pixels": int(hist[IGNORE_INDEX]),
                    "exif_oriented": oriented,
                }
        summary["exif_oriented"] = sum(s["exif_oriented"] for s in summary["splits"].values())
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    return splits, summary, problems


def _relative(path: Path | None, root: Path) -> str:
    return "" if path is None else Path(os.path.relpath(path, root)).as_posix()


def _check_out(out: Path) -> bool:
    """True when ``out`` exists and may be replaced."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise SpgnetError(f"{out}: exists and is not a folder")
    entries = list(out.iterdir())
    if not entries:
        return True
    ours = any(_written_by_us(out / name) for name in (MARKER, SUMMARY))  # SUMMARY: folders of earlier versions
    foreign = [e.name for e in entries if not (e.is_file() and (e.suffix == ".txt" or e.name in (SUMMARY, MARKER)))]
    if not ours or foreign:
        raise SpgnetError(f"{out}: exists and was not written by prepare-data; remove it or choose another --out")
    return True


def _written_by_us(path: Path) -> bool:
    """True when ``path`` is a JSON object whose ``tool`` is this command."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("tool") == TOOL
    except (OSError, ValueError, AttributeError):
        return False


def write_lists(splits: dict, summary: dict, root: Path, out: Path) -> None:
    out = Path(out)
    _check_out(out)
    with atomic_dir(out) as tmp:
        lists = dict(splits)
        if "train" in lists and "val" in lists:
            lists["trainval"] = lists["train"] + lists["val"]
        for split, records in lists.items():
            lines = [f"{_relative(r.image, root)}\t{_relative(r.label, root)}\n" for r in records]
            (tmp / f"{split}.txt").write_text("".join(lines), encoding="utf-8")
        summary = dict(summary)
        summary["lists"] = sorted(f"{s}.txt" for s in lists)
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps({"tool": TOOL}) + "\n", encoding="utf-8")


def prepare(dataset: str, root: Path, out: Path, stream=None) -> dict:
    """Check the tree and write the lists; on problems print them all and raise SpgnetError."""
    stream = stream if stream is not None else sys.stderr
    root = Path(root)
    _check_out(Path(out))  # fail early, before the (long) check
    splits, summary, problems = check_tree(dataset, root)
    if problems:
        for line in problems:
            print(line, file=stream)
        raise SpgnetError(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in {root} ({dataset}); nothing written")
    write_lists(splits, summary, root, Path(out))
    return summary


def main(args) -> int:
    summary = prepare(args.dataset, Path(args.root), Path(args.out))
    counts = ", ".join(f"{s} {v['images']}" for s, v in summary["splits"].items())
    oriented = summary["exif_oriented"]
    print(f"{args.root}: {args.dataset} OK ({counts} images; {oriented} with a non-identity EXIF orientation, "
          f"applied on read); lists written to {args.out}")
    return 0
