"""The data layer: class sets, readers for Cityscapes / PASCAL VOC 2012 / Person-Part, Section
4.2's transforms, the synthetic street-scene generator and the data-set checker.

Public API::

    CITYSCAPES_CLASSES, IGNORE_INDEX, class_names(dataset), trainid_to_labelid(array)
    build_dataset(dataset, root, split, transform=None)        # torch Dataset of dicts
    TrainTransform(crop, scale_min, scale_max, scale_step, seed), EvalTransform()
    TrainSampler(num_samples, batch_size, seed, start_iteration, iterations)

The class tables import without torch; the torch-based names load on first use so that
``spgnet make-synthetic`` and ``spgnet prepare-data`` start quickly.
"""

from __future__ import annotations

import importlib

from spgnet.data.labels import (
    CITYSCAPES_CLASSES,
    DATASETS,
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
    "CITYSCAPES_CLASSES", "VOC_CLASSES", "PERSON_PART_CLASSES", "IGNORE_INDEX", "DATASETS", "SPLITS",
    "class_names", "num_classes", "labelid_to_trainid", "trainid_to_labelid", *_LAZY,
]
