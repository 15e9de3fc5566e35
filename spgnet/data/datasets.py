"""``build_dataset``: one split of Cityscapes, PASCAL VOC 2012, Person-Part or a folder data set of
your own (``<root>/dataset.yaml``, :mod:`spgnet.data.folder`) as a torch Dataset."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from spgnet.data import cityscapes, person_part, voc
from spgnet.data.base import Record, SegmentationDataset
from spgnet.data.io import printable, read_numbered_lines
from spgnet.data.catalog import dataset_reader
from spgnet.data.labels import DATASET_KINDS, FOLDER, SPLITS, dataset_splits
from spgnet.errors import SpgnetError

READERS: dict[str, ModuleType] = {"cityscapes": cityscapes, "voc": voc, "person_part": person_part}


def reader(dataset: str, root: Path | None = None):
    """The reader of ``dataset`` (a reader kind): a built-in module, or the folder data set's
    :class:`~spgnet.data.folder.FolderReader` at ``root``."""
    if dataset in READERS:
        return READERS[dataset]
    if dataset == FOLDER:
        return dataset_reader(dataset, root)
    raise SpgnetError(f"unknown dataset '{dataset}' (valid: {', '.join(DATASET_KINDS)})")


def base_splits(split: str, dataset: str | None = None) -> tuple[str, ...]:
    """The on-disk splits making up ``split`` (trainval = train then val, Sec. 4.2); with
    ``dataset``, one line when that data set has no such split (trainaug is VOC's alone)."""
    if split not in SPLITS:
        raise SpgnetError(f"unknown split '{split}' (valid: {', '.join(SPLITS)})")
    if dataset is not None and split not in dataset_splits(dataset):
        raise SpgnetError(f"dataset '{dataset}' has no split '{split}' "
                          f"(valid: {', '.join(dataset_splits(dataset))})")
    return ("train", "val") if split == "trainval" else (split,)


def scan(dataset: str, root: Path, split: str) -> tuple[list[Record], list[str]]:
    """Records of ``split`` (trainval concatenated) and the problems found while listing it."""
    module = reader(dataset, root)
    records, problems = [], []
    for part in base_splits(split, dataset):
        part_records, part_problems = module.scan(Path(root), part)
        records += part_records
        problems += part_problems
    return records, problems


#: Splits that are scored: an image listed twice would count twice in the mIoU.
EVALUATION_SPLITS = ("val", "test")


def read_split_list(list_file: Path, root: Path, dataset: str) -> list[Record]:
    """Records from a ``<split>.txt`` written by ``spgnet prepare-data`` (image and label paths
    relative to the root, tab-separated; an empty label field for unlabelled images).

    The list may have been edited by another tool: a BOM, CRLF line ends, blank lines and trailing
    blanks are ignored (:func:`spgnet.data.io.read_numbered_lines`). Every listed file must exist;
    the first missing one is named (invisible characters escaped) with its list line. A line whose
    label is another picture's (``aachen_000000_000019`` beside ``bochum_..._gtFine_labelIds.png``;
    VOC and Person-Part: another id; a folder data set: another name, its path relative to the
    split's image or label folder without the suffix) and, in a list of :data:`EVALUATION_SPLITS`,
    an image listed twice are one-line errors too: either would turn into a wrong score, not a
    failure.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise SpgnetError(f"{printable(list_file)}: split list not found (run spgnet prepare-data)")
    records, missing, first_line = [], [], {}
    scored = list_file.stem in EVALUATION_SPLITS
    name_of = _namer(dataset, Path(root))
    for number, line in read_numbered_lines(list_file):
        fields = line.split("\t")
        if len(fields) > 2:
            raise SpgnetError(f"{list_file}:{number}: expected 'image<TAB>label', got {len(fields)} fields")
        image = Path(root) / fields[0].strip()
        label = Path(root) / fields[1].strip() if len(fields) == 2 and fields[1].strip() else None
        absent = [f"{printable(path)}: missing {kind} (listed in {list_file}:{number})"
                  for kind, path in (("image", image), ("label", label)) if path is not None and not path.is_file()]
        missing += absent
        name = name_of(image, False)
        label_name = None if label is None else name_of(label, True)
        if not absent and label_name is not None and label_name != name:  # a missing file is named first
            raise SpgnetError(f"{list_file}:{number}: the label is another picture's ({printable(label_name)} "
                              f"beside the image {printable(name)})")
        if scored and image in first_line:
            raise SpgnetError(f"{list_file}:{number}: {printable(fields[0].strip())} is listed again (first at line "
                              f"{first_line[image]}); a scored split counts each image once")
        first_line.setdefault(image, number)
        records.append(Record(image=image, label=label, name=name))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SpgnetError(missing[0] + more)
    return records


def _namer(dataset: str, root: Path):
    """``name_of(path, is_label)``: the picture name of a listed file (the pairing check)."""
    if dataset == "cityscapes":
        return lambda path, label: cityscapes.name_of(path)
    if dataset == FOLDER:
        folder = reader(dataset, root)
        return lambda path, label: folder.name_of(path, label=label)
    return lambda path, label: path.stem


def build_dataset(
    dataset: str, root: Path, split: str, transform=None, *, list_dir: Path | None = None
) -> SegmentationDataset:
    """One split of ``dataset`` (a reader kind: "cityscapes", "voc", "person_part" or "folder",
    whose ``root`` holds its ``dataset.yaml``) read from ``root``.

    ``split`` is "train", "val", "test", "trainval" (train + val) or, for VOC, "trainaug"
    (DeepLab's train_aug.txt: VOC train + SBD, less val; see :mod:`spgnet.data.voc`). Items are
    ``{"image": FloatTensor[3,H,W] (ImageNet-normalised), "label": LongTensor[H,W] (train ids,
    255 = ignore), "name": str, "path": str}``. ``transform=None`` gives full-size images
    (evaluation); pass a :class:`spgnet.data.transforms.TrainTransform` for training.
    ``list_dir``: read the split from ``<list_dir>/<split>.txt`` written by ``spgnet
    prepare-data`` (trainval: its train.txt then val.txt) instead of listing the tree.
    """
    parts = base_splits(split, dataset)
    root = Path(root)
    if not root.is_dir():
        raise SpgnetError(f"{printable(root)}: data set root not found (dataset '{dataset}')")
    module = reader(dataset, root)
    if list_dir is not None:
        records = []
        for part in parts:
            records += read_split_list(Path(list_dir) / f"{part}.txt", root, dataset)
        val_list = Path(list_dir) / "val.txt"
        if split == voc.AUG_SPLIT and val_list.is_file():  # prepare-data never writes one holding a val id; an edited list may
            val_ids = [Path(line.split("\t")[0].strip()).stem for _, line in read_numbered_lines(val_list)]
            overlap = voc.val_overlap(Path(list_dir) / f"{split}.txt", [r.name for r in records], val_ids)
            if overlap:
                raise SpgnetError(overlap)
    else:
        records, problems = scan(dataset, root, split)
        if problems:
            more = f" (and {len(problems) - 1} more; run spgnet prepare-data to list them)" if len(problems) > 1 else ""
            raise SpgnetError(problems[0] + more)
    if not records:
        raise SpgnetError(f"{root}: split '{split}' of dataset '{dataset}' has no images")
    names = module.class_names if dataset == FOLDER else None
    return SegmentationDataset(dataset, records, module.label_lut(), transform=transform, split=split,
                               class_names=names, label_colours=getattr(module, "label_colours", None))
