"""Class sets of the three data sets, and Cityscapes' id <-> trainId mappings.

Cityscapes' classes, ids, train ids and the ignore value all come from
``cityscapesscripts.helpers.labels`` (never a hand-typed copy). PASCAL VOC 2012 has 21 classes
(background first) with 255 on object borders; PASCAL Person-Part has 7 (background and six
body parts). This module imports neither torch nor PIL, so the command line stays fast.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import id2label, labels as _CS_LABELS, name2label, trainId2label

from spgnet.errors import SpgnetError

#: Label value that the loss and the metrics skip (Cityscapes' trainId of void classes, VOC's border).
IGNORE_INDEX = 255

#: The 19 Cityscapes train classes in trainId order (0 = road ... 18 = bicycle).
CITYSCAPES_CLASSES: list[str] = [
    trainId2label[t].name
    for t in sorted({lab.trainId for lab in _CS_LABELS if 0 <= lab.trainId < IGNORE_INDEX})
]

#: PASCAL VOC 2012 segmentation classes; index = value in ``SegmentationClass`` PNGs.
VOC_CLASSES: list[str] = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]

#: PASCAL Person-Part classes (Chen et al., "Detect what you can", CVPR 2014); index = label value.
PERSON_PART_CLASSES: list[str] = [
    "background", "head", "torso", "upper arms", "lower arms", "upper legs", "lower legs",
]

DATASETS = ("cityscapes", "voc", "person_part")
#: A data set of your own, described by ``<root>/dataset.yaml`` (:mod:`spgnet.data.folder`).
FOLDER = "folder"
#: The reader kinds: the three built-in data sets and the folder reader.
DATASET_KINDS = DATASETS + (FOLDER,)
SPLITS = ("train", "val", "test", "trainval", "trainaug")
#: The splits each data set has. ``trainaug`` (VOC 2012 train plus SBD's extra annotations, less
#: the VOC 2012 val images: DeepLab's ``train_aug.txt``, 10,582 images) is VOC's alone.
DATASET_SPLITS: dict[str, tuple[str, ...]] = {
    "cityscapes": ("train", "val", "test", "trainval"),
    "voc": ("train", "val", "test", "trainval", "trainaug"),
    "person_part": ("train", "val", "test", "trainval"),
    FOLDER: ("train", "val", "test", "trainval"),  # test optional; trainval = train then val
}
#: The splits of a folder data set.
FOLDER_SPLITS: tuple[str, ...] = DATASET_SPLITS[FOLDER]


def dataset_splits(kind: str) -> tuple[str, ...]:
    """The splits of reader ``kind`` (:data:`DATASET_SPLITS`; a folder data set: :data:`FOLDER_SPLITS`)."""
    return FOLDER_SPLITS if kind == FOLDER else DATASET_SPLITS.get(kind, SPLITS)

_CLASSES = {"cityscapes": CITYSCAPES_CLASSES, "voc": VOC_CLASSES, "person_part": PERSON_PART_CLASSES}


def class_names(dataset: str) -> list[str]:
    """Class names of ``dataset`` ("cityscapes", "voc" or "person_part") in label order."""
    try:
        return list(_CLASSES[dataset])
    except KeyError:
        if dataset == FOLDER:
            raise SpgnetError("a folder data set's classes are in its dataset.yaml "
                              "(spgnet.data.dataset_classes('folder', root))") from None
        raise SpgnetError(f"unknown dataset '{dataset}' (valid: {', '.join(DATASETS)})") from None


def num_classes(dataset: str) -> int:
    return len(class_names(dataset))


# ---------------------------------------------------------------------------------------------
# Cityscapes id <-> trainId
# ---------------------------------------------------------------------------------------------

#: Cityscapes label ids that may occur in a ``*_gtFine_labelIds.png`` (0 .. 33).
CITYSCAPES_LABEL_IDS: frozenset[int] = frozenset(lab.id for lab in _CS_LABELS if lab.id >= 0)


def _labelid_to_trainid_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for lab in _CS_LABELS:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < 256:
            lut[lab.id] = lab.trainId
    return lut


def _trainid_to_labelid_lut() -> np.ndarray:
    # trainId2label maps each trainId to the first label of the table that has it, so 255 goes to
    # 'unlabeled' (id 0), the id the evaluation server expects for "no prediction".
    lut = np.full(256, name2label["unlabeled"].id, dtype=np.uint8)
    for train_id, lab in trainId2label.items():
        if 0 <= train_id < 256 and lab.id >= 0:
            lut[train_id] = lab.id
    return lut


#: ``LABELID_TO_TRAINID[id]``: the train id of a Cityscapes label id (255 for void classes).
LABELID_TO_TRAINID: np.ndarray = _labelid_to_trainid_lut()
#: ``TRAINID_TO_LABELID[trainId]``: the label id a submission PNG must hold (255 -> 0).
TRAINID_TO_LABELID: np.ndarray = _trainid_to_labelid_lut()
#: Cityscapes label ids the benchmark evaluates (those of the 19 train classes: 7, 8, 11, ...);
#: cityscapesscripts marks every other label ``ignoreInEval`` and gives it train id 255 (or -1).
CITYSCAPES_EVAL_LABEL_IDS: frozenset[int] = frozenset(
    int(i) for i in np.flatnonzero(LABELID_TO_TRAINID != IGNORE_INDEX)
)


def labelid_to_trainid(array):
    """Map Cityscapes label ids to train ids 0..18 and 255 (numpy array or torch tensor)."""
    return _apply_lut(LABELID_TO_TRAINID, array)


def trainid_to_labelid(array):
    """Map train ids 0..18 (and 255) to Cityscapes label ids, for submission PNGs.

    Accepts a numpy array or a torch tensor of integers and returns the same kind (uint8 for
    numpy); values outside 0..255 are an error.
    """
    return _apply_lut(TRAINID_TO_LABELID, array)


def _apply_lut(lut: np.ndarray, array):
    if type(array).__module__.startswith("torch"):
        import torch

        values = array.detach().cpu().numpy()
        return torch.from_numpy(_apply_lut(lut, values).astype(np.int64)).to(array.device)
    values = np.asarray(array)
    if values.dtype.kind not in "iub":
        raise SpgnetError(f"expected an integer array of class ids, got dtype {values.dtype}")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise SpgnetError(f"class ids outside 0..255 (min {values.min()}, max {values.max()})")
    return lut[values.astype(np.intp, copy=False)]


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (768 values) used by its palette PNGs, computed as VOC's
    devkit does (bit interleaving of the class index)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.extend((r, g, b))
    return palette


# ---------------------------------------------------------------------------------------------
# Colour-mask labels (a folder data set's ``label_encoding: rgb``)
# ---------------------------------------------------------------------------------------------


def pack_colours(rgb) -> np.ndarray:
    """``r << 16 | g << 8 | b`` of each colour of ``rgb`` (``[..., 3]`` uint8) as uint32 ``[...]``."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class ColourTable:
    """The class of each colour of a colour-mask label: ``palette[i]`` is class ``i``,
    ``ignore_color`` (optional) is :data:`IGNORE_INDEX`; any other colour is outside the classes
    (:meth:`values` makes it :data:`IGNORE_INDEX`, :meth:`unknown` names it).

    The lookup packs each pixel into a 24-bit code and finds it among the sorted codes of the
    palette (``np.searchsorted``): no per-colour pass over the image, whatever the class count.
    """

    def __init__(self, palette, ignore_color=None):
        colours = [tuple(int(c) for c in colour) for colour in palette]
        values = list(range(len(colours)))
        if ignore_color is not None:
            colours.append(tuple(int(c) for c in ignore_color))
            values.append(IGNORE_INDEX)
        codes = pack_colours(np.asarray(colours, dtype=np.uint8).reshape(-1, 3))
        order = np.argsort(codes, kind="stable")
        self.codes = codes[order]
        self.classes = np.asarray(values, dtype=np.uint8)[order]

    def __repr__(self) -> str:
        return f"ColourTable({len(self.codes)} colours)"

    def _find(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes = pack_colours(rgb)
        position = np.minimum(np.searchsorted(self.codes, codes), len(self.codes) - 1)
        return codes, position, self.codes[position] == codes

    def values(self, rgb) -> np.ndarray:
        """``uint8 [H, W]`` class values of the colour mask ``rgb`` (``uint8 [H, W, 3]``); the
        ignore colour and any colour outside the palette are :data:`IGNORE_INDEX`."""
        _, position, known = self._find(np.asarray(rgb))
        return np.where(known, self.classes[position], np.uint8(IGNORE_INDEX)).astype(np.uint8, copy=False)

    def unknown(self, rgb) -> list[tuple[int, int, int]]:
        """The colours of ``rgb`` that are neither a class's nor the ignore colour, sorted."""
        codes, _, known = self._find(np.asarray(rgb))
        return [((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255) for c in np.unique(codes[~known])]


__all__ = [
    "IGNORE_INDEX", "CITYSCAPES_CLASSES", "VOC_CLASSES", "PERSON_PART_CLASSES", "DATASETS", "DATASET_KINDS", "FOLDER",
    "FOLDER_SPLITS", "SPLITS", "dataset_splits", "ColourTable", "pack_colours",
    "DATASET_SPLITS", "CITYSCAPES_LABEL_IDS", "CITYSCAPES_EVAL_LABEL_IDS", "LABELID_TO_TRAINID", "TRAINID_TO_LABELID", "class_names", "num_classes",
    "labelid_to_trainid", "trainid_to_labelid", "voc_palette", "id2label", "name2label",
]
