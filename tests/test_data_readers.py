"""The three readers on small fabricated trees of their real formats, and build_dataset."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from spgnet.data import IGNORE_INDEX, TrainSampler, TrainTransform, build_dataset
from spgnet.data.labels import voc_palette
from spgnet.data.prepare import prepare
from spgnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from spgnet.errors import SpgnetError

H, W = 12, 16


def _rgb(seed):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def make_cityscapes(root: Path) -> Path:
    """Two train cities, one val city, a test city without gtFine (like the real test split)."""
    entries = [("train", "aachen", 0), ("train", "bochum", 3), ("val", "frankfurt", 1), ("test", "berlin", 2)]
    for n, (split, city, seq) in enumerate(entries):
        key = f"{city}_{seq:06d}_000019"
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(n)).save(root / "leftImg8bit" / split / city / f"{key}_leftImg8bit.png")
        if split == "test":
            continue
        ids = np.full((H, W), 7, np.uint8)  # road
        ids[:, :4] = 0  # unlabeled -> ignore
        ids[:4, 8:] = 26  # car
        ids[-2:, 4:] = 4  # static -> ignore
        ids[5, 5] = 33  # bicycle
        gt = root / "gtFine" / split / city
        gt.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids).save(gt / f"{key}_gtFine_labelIds.png")
        Image.fromarray(ids.astype(np.uint16)).save(gt / f"{key}_gtFine_instanceIds.png")
        (gt / f"{key}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": H, "imgWidth": W, "objects": []}))
    return root


def _palette_png(values, path):
    img = Image.fromarray(values.astype(np.uint8), mode="P")
    img.putpalette(voc_palette())
    img.save(path)


def make_voc(root: Path) -> Path:
    """VOCdevkit/VOC2012: JPEGImages, palette SegmentationClass with 255 borders, ImageSets."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    splits = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"], "test": ["2008_000001"]}
    for split, ids in splits.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
        for n, name in enumerate(ids):
            Image.fromarray(_rgb(n)).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            if split != "test":
                label = np.zeros((H, W), np.uint8)
                label[3:9, 4:12] = 15  # person
                label[3, 4:12] = 255  # border
                label[0, 0] = 20
                _palette_png(label, root / "SegmentationClass" / f"{name}.png")
    return root


def make_person_part(root: Path) -> Path:
    """JPEGImages, SegmentationPart (L PNGs 0..6), ImageSets/Person lists (DeepLab-style pairs in train)."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationPart").mkdir()
    (root / "ImageSets" / "Person").mkdir(parents=True)
    for n, name in enumerate(["2008_000003", "2008_000008", "2008_000026"]):
        Image.fromarray(_rgb(n)).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        label = np.zeros((H, W), np.uint8)
        for part in range(1, 7):
            label[part, 2:10] = part
        Image.fromarray(label, mode="L").save(root / "SegmentationPart" / f"{name}.png")
    (root / "ImageSets" / "Person" / "train.txt").write_text(
        "/JPEGImages/2008_000003.jpg /SegmentationPart/2008_000003.png\n"
        "/JPEGImages/2008_000008.jpg /SegmentationPart/2008_000008.png\n")
    (root / "ImageSets" / "Person" / "val.txt").write_text("2008_000026\n")
    return root


def _normalised(array):
    return (torch.from_numpy(array).float().permute(2, 0, 1) / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def test_cityscapes_reader(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes")
    train = build_dataset("cityscapes", root, "train")
    assert len(train) == 2 and train.num_classes == 19
    item = train[0]
    assert set(item) == {"image", "label", "name", "path"}
    assert item["name"] == "aachen_000000_000019"
    assert item["path"].endswith("leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert torch.allclose(item["image"], _normalised(_rgb(0)), atol=1e-5)
    label = item["label"]
    assert label.dtype == torch.int64 and label.shape == (H, W)
    assert (label[:, :4] == IGNORE_INDEX).all() and label[8, 6] == 0 and label[0, 10] == 13 and label[5, 5] == 18
    assert (label[-2:, 4:] == IGNORE_INDEX).all()
    assert [train[i]["name"] for i in range(2)] == ["aachen_000000_000019", "bochum_000003_000019"]
    trainval = build_dataset("cityscapes", root, "trainval")
    assert [r.name for r in trainval.records] == [r.name for r in train.records] + ["frankfurt_000001_000019"]
    test = build_dataset("cityscapes", root, "test")
    assert len(test) == 1 and (test[0]["label"] == IGNORE_INDEX).all()


def test_voc_reader(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    train = build_dataset("voc", root, "train")
    assert [r.name for r in train.records] == ["2007_000032", "2007_000039"]
    item = train[1]
    assert item["name"] == "2007_000039" and item["image"].shape == (3, H, W)
    label = item["label"]
    assert set(label.unique().tolist()) == {0, 15, 20, 255}
    assert (label[3, 4:12] == 255).all() and label[5, 5] == 15
    assert len(build_dataset("voc", root, "trainval")) == 3
    assert (build_dataset("voc", root, "test")[0]["label"] == 255).all()


def test_person_part_reader(tmp_path):
    root = make_person_part(tmp_path / "pp")
    train = build_dataset("person_part", root, "train")
    assert [r.name for r in train.records] == ["2008_000003", "2008_000008"]
    assert train.num_classes == 7
    label = train[0]["label"]
    assert set(label.unique().tolist()) == set(range(7))
    assert build_dataset("person_part", root, "val")[0]["name"] == "2008_000026"
    assert len(build_dataset("person_part", root, "trainval")) == 3


def test_training_transform_and_lists_from_prepare_data(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes")
    prepare("cityscapes", root, tmp_path / "lists")
    scanned = build_dataset("cityscapes", root, "trainval")
    listed = build_dataset("cityscapes", root, "trainval", list_dir=tmp_path / "lists")
    assert listed.records == scanned.records
    ds = build_dataset("cityscapes", root, "train", transform=TrainTransform(8, seed=0))
    item = ds[(1, (0, 0, 1))]
    assert item["image"].shape == (3, 8, 8) and item["label"].shape == (8, 8)
    assert torch.equal(item["image"], ds[(1, (0, 0, 1))]["image"])


def test_dataloader_batches_do_not_depend_on_workers(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes")
    ds = build_dataset("cityscapes", root, "trainval", transform=TrainTransform(8, seed=0))

    def batches(workers, start=0):
        sampler = TrainSampler(len(ds), 2, seed=5, start_iteration=start, iterations=4)
        loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=workers)
        return [(b["name"], b["image"], b["label"]) for b in loader]

    serial, parallel, resumed = batches(0), batches(2), batches(0, start=2)
    assert len(serial) == 4
    for a, b in zip(serial, parallel):
        assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    for a, b in zip(serial[2:], resumed):
        assert a[0] == b[0] and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_build_dataset_errors(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes")
    with pytest.raises(SpgnetError, match="unknown split 'testing'"):
        build_dataset("cityscapes", root, "testing")
    with pytest.raises(SpgnetError, match="unknown dataset"):
        build_dataset("ade20k", root, "train")
    with pytest.raises(SpgnetError, match="root not found"):
        build_dataset("cityscapes", tmp_path / "nowhere", "train")
    with pytest.raises(SpgnetError, match="train.txt': missing split list"):
        build_dataset("voc", root, "train")
    label = next((root / "gtFine" / "train").rglob("*_labelIds.png"))
    label.unlink()
    with pytest.raises(SpgnetError, match="no label"):
        build_dataset("cityscapes", root, "train")


# ---------------------------------------------------------------- lists that would give a wrong score (issue 22)


def test_a_list_line_pairing_an_image_with_another_pictures_label_is_refused(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes")
    prepare("cityscapes", root, tmp_path / "lists")
    train = (tmp_path / "lists" / "train.txt").read_text().splitlines()
    image, _ = train[0].split("\t")
    _, other_label = train[1].split("\t")
    (tmp_path / "lists" / "train.txt").write_text(f"{image}\t{other_label}\n" + "\n".join(train[1:]) + "\n")
    with pytest.raises(SpgnetError, match=r"lists/train\.txt:1: the label is another picture's "
                                          r"\('bochum_000003_000019' beside the image 'aachen_000000_000019'\)"):
        build_dataset("cityscapes", root, "train", list_dir=tmp_path / "lists")


def test_an_image_listed_twice_in_a_scored_split_is_refused(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes")
    prepare("cityscapes", root, tmp_path / "lists")
    val = tmp_path / "lists" / "val.txt"
    line = val.read_text().splitlines()[0]
    val.write_text(f"{line}\n{line}\n")
    with pytest.raises(SpgnetError, match=r"lists/val\.txt:2: 'leftImg8bit/val/frankfurt/frankfurt_000001_000019_"
                                          r"leftImg8bit\.png' is listed again \(first at line 1\)"):
        build_dataset("cityscapes", root, "val", list_dir=tmp_path / "lists")
    train = tmp_path / "lists" / "train.txt"  # a training list may repeat an image (oversampling)
    first = train.read_text().splitlines()[0]
    train.write_text(train.read_text() + first + "\n")
    assert len(build_dataset("cityscapes", root, "train", list_dir=tmp_path / "lists")) == 3
