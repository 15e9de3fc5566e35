"""What the rest of the code asks of a data set by its reader kind and root, without torch.

``kind`` is a reader kind (:data:`spgnet.data.labels.DATASET_KINDS`): one of the built-in data
sets (``cityscapes``, ``voc``, ``person_part``), whose classes and colours are fixed, or
``folder``, whose classes and colours are its ``<root>/dataset.yaml``'s
(:mod:`spgnet.data.folder`).

- :func:`dataset_reader`: the reader module (built-in) or :class:`~spgnet.data.folder.FolderReader`;
- :func:`dataset_classes`: the class names in label order;
- :func:`dataset_palette`: ``uint8 [256, 3]``, each train id's drawing colour.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from spgnet.data.labels import DATASET_KINDS, DATASETS, FOLDER, class_names
from spgnet.errors import SpgnetError


def _check_kind(kind: str) -> None:
    if kind not in DATASET_KINDS:
        raise SpgnetError(f"unknown dataset '{kind}' (valid: {', '.join(DATASET_KINDS)})")


def dataset_reader(kind: str, root: str | Path | None = None):
    """The reader of ``kind``: a built-in reader module (``spgnet.data.cityscapes``, ...), or the
    :class:`~spgnet.data.folder.FolderReader` of the folder data set at ``root`` (needed then)."""
    _check_kind(kind)
    if kind == FOLDER:
        from spgnet.data.folder import open_reader

        if root is None:
            raise SpgnetError("dataset 'folder': no root given (the folder that holds dataset.yaml)")
        return open_reader(root)
    return importlib.import_module(f"spgnet.data.{kind}")


def dataset_classes(kind: str, root: str | Path | None = None) -> list[str]:
    """The class names of the data set of reader ``kind`` at ``root`` (label order); built-in
    data sets ignore ``root``."""
    _check_kind(kind)
    if kind == FOLDER:
        return list(dataset_reader(kind, root).class_names)
    return class_names(kind)


def dataset_palette(kind: str, root: str | Path | None = None) -> np.ndarray:
    """``uint8 [256, 3]``: the colour of each train id of the data set of reader ``kind`` at
    ``root`` (unused entries black).

    Cityscapes: the colour of the label each train id stands for (cityscapesscripts' table; 255
    black); PASCAL VOC and Person-Part: the VOC devkit's colour map (Person-Part's annotations are
    drawn with it too); folder: its description's ``palette``, else the VOC colour map's first
    entries (:func:`spgnet.data.folder.generated_palette`), 255 black.
    """
    _check_kind(kind)
    if kind == FOLDER:
        return dataset_reader(kind, root).palette
    from spgnet.data.labels import id2label, trainid_to_labelid, voc_palette

    if kind == "cityscapes":
        label_ids = trainid_to_labelid(np.arange(256, dtype=np.uint8))
        colours = np.array([id2label[int(i)].color for i in label_ids], dtype=np.uint8)
        colours[255] = 0
        return colours
    assert kind in DATASETS
    return np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)


__all__ = ["dataset_classes", "dataset_palette", "dataset_reader"]
