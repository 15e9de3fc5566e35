"""The data layer: class sets, readers for Cityscapes / PASCAL VOC 2012 / Person-Part and for a
folder data set of your own (``<root>/dataset.yaml``, :mod:`spgnet.data.folder`), Section 4.2's
transforms, the synthetic generators and the data-set checker.

Public API::

    CITYSCAPES_CLASSES, IGNORE_INDEX, class_names(dataset), trainid_to_labelid(array)
    dataset_classes(kind, root), dataset_palette(kind, root)   # any reader kind, folder included
    build_dataset(kind, root, split, transform=None)           # torch Dataset of dicts
    TrainTransform(crop, scale_min, scale_max, scale_step, seed), EvalTransform()
    TrainSampler(num_samples, batch_size, seed, start_iteration, iterations)

The class tables import without torch; the torch-based names load on first use so that
``spgnet make-synthetic`` and ``spgnet prepare-data`` start quickly.
"""

from __future__ import annotations

import importlib

from spgnet.data.catalog import dataset_classes, dataset_palette, dataset_reader
from spgnet.data.labels import (
    CITYSCAPES_CLASSES,
    DATASET_KINDS,
    DATASETS,
    FOLDER,
    IGNORE_INDEX,
    PERSON_PART_CLASSES,
    SPLITS,
    VOC_CLASSES,
    class_names,
    labelid_to_trainid,
    num_classes,
    trainid_to_labelid,
)

_LAZY = {
    "build_dataset": "spgnet.data.datasets",
    "SegmentationDataset": "spgnet.data.base",
    "Record": "spgnet.data.base",
    "TrainTransform": "spgnet.data.transforms",
    "EvalTransform": "spgnet.data.transforms",
    "IMAGENET_MEAN": "spgnet.data.transforms",
    "IMAGENET_STD": "spgnet.data.transforms",
    "denormalize": "spgnet.data.transforms",
    "TrainSampler": "spgnet.data.sampler",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spgnet.data' has no attribute '{name}'")


__all__ = [
    "CITYSCAPES_CLASSES", "VOC_CLASSES", "PERSON_PART_CLASSES", "IGNORE_INDEX", "DATASETS", "DATASET_KINDS", "FOLDER",
    "SPLITS", "class_names", "dataset_classes", "dataset_palette", "dataset_reader", "num_classes", "labelid_to_trainid", "trainid_to_labelid", *_LAZY,
]
