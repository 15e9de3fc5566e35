"""Class tables and Cityscapes id mappings (spgnet.data.labels)."""

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import id2label, labels, trainId2label

from spgnet.data import (
    CITYSCAPES_CLASSES,
    IGNORE_INDEX,
    PERSON_PART_CLASSES,
    VOC_CLASSES,
    class_names,
    labelid_to_trainid,
    trainid_to_labelid,
)
from spgnet.data.labels import voc_palette
from spgnet.errors import SpgnetError


def test_cityscapes_classes_come_from_cityscapesscripts():
    expected = [l.name for l in sorted((l for l in labels if 0 <= l.trainId < 255), key=lambda l: l.trainId)]
    assert CITYSCAPES_CLASSES == expected
    assert len(CITYSCAPES_CLASSES) == 19
    assert CITYSCAPES_CLASSES[0] == "road" and CITYSCAPES_CLASSES[-1] == "bicycle"


def test_evaluated_label_ids_are_cityscapesscripts_ignore_in_eval():
    """One table: the ids spgnet score counts are exactly those cityscapesscripts evaluates, and
    score's class names and label-id table are spgnet.data.labels'."""
    from spgnet.data.labels import CITYSCAPES_EVAL_LABEL_IDS, LABELID_TO_TRAINID
    from spgnet.engine.evaluation import score

    assert CITYSCAPES_EVAL_LABEL_IDS == {l.id for l in labels if not l.ignoreInEval}
    assert len(CITYSCAPES_EVAL_LABEL_IDS) == 19
    assert score.class_names() == CITYSCAPES_CLASSES
    lut = score.labelid_to_trainid_lut(void=19)
    for l in labels:
        if 0 <= l.id < 256:
            assert lut[l.id] == (19 if l.ignoreInEval else l.trainId), l.name
    assert (lut[34:] == 19).all() and (score.labelid_to_trainid_lut(void=255) == LABELID_TO_TRAINID).all()


def test_class_names_per_dataset():
    assert class_names("cityscapes") == CITYSCAPES_CLASSES
    assert len(class_names("voc")) == 21 and class_names("voc")[0] == "background"
    assert class_names("person_part") == [
        "background", "head", "torso", "upper arms", "lower arms", "upper legs", "lower legs"]
    assert VOC_CLASSES[15] == "person" and PERSON_PART_CLASSES[1] == "head"
    class_names("voc").append("x")  # a copy: the table itself is not modified
    assert len(class_names("voc")) == 21
    with pytest.raises(SpgnetError, match="unknown dataset 'coco'"):
        class_names("coco")


def test_ignore_index_and_void_classes():
    assert IGNORE_INDEX == 255
    void_ids = [l.id for l in labels if l.id >= 0 and l.trainId in (255, -1)]
    assert (labelid_to_trainid(np.array(void_ids)) == 255).all()
    ids = np.array([l.id for l in labels if 0 <= l.trainId < 255])
    assert labelid_to_trainid(ids).tolist() == [id2label[i].trainId for i in ids]


def test_trainid_to_labelid_uses_the_table_and_round_trips():
    train_ids = np.arange(19, dtype=np.uint8).reshape(1, 19)
    ids = trainid_to_labelid(train_ids)
    assert ids.shape == (1, 19) and ids.dtype == np.uint8
    assert ids.ravel().tolist() == [trainId2label[t].id for t in range(19)]
    assert (labelid_to_trainid(ids) == train_ids).all()
    assert trainid_to_labelid(np.array([255]))[0] == 0  # ignore -> 'unlabeled'
    tensor = trainid_to_labelid(torch.tensor([[0, 13], [18, 255]]))
    assert isinstance(tensor, torch.Tensor) and tensor.tolist() == [[7, 26], [33, 0]]
    with pytest.raises(SpgnetError):
        trainid_to_labelid(np.array([256]))
    with pytest.raises(SpgnetError):
        trainid_to_labelid(np.array([0.5]))


def test_voc_palette():
    palette = voc_palette()
    assert len(palette) == 768
    assert palette[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
    assert palette[255 * 3 : 256 * 3] == [224, 224, 192]
