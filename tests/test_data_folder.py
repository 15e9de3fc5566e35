"""A folder data set (``--dataset folder``, ``DIR/dataset.yaml``): the description's one-line errors,
the tree's problems, index and colour-mask labels read into train ids, build_dataset, prepare-data's
lists and summary, make-synthetic --kind folder, and class counts other than 19/21/7 (issue 24)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from spgnet.cli import main as cli
from spgnet.data import build_dataset, dataset_classes, dataset_palette
from spgnet.data.datasets import read_split_list
from spgnet.data.folder import FolderReader, generated_palette
from spgnet.data.labels import IGNORE_INDEX, voc_palette
from spgnet.data.synthetic import MANIFEST, generate
from spgnet.errors import SpgnetError

#: (height, width) of the pictures of each split: not square, not all the same.
SIZES = ((12, 20), (16, 24), (10, 14))
RGB_PALETTE = [[10, 20, 30], [200, 0, 0], [0, 200, 0]]


def _values(index: int, height: int, width: int, classes: int) -> np.ndarray:
    """Class values of picture ``index``: every class present, pixel (0, 0) left for the ignore value."""
    return ((np.arange(height * width).reshape(height, width) + index) % classes).astype(np.uint8)


def _write_set(root: Path, classes: int = 3, encoding: str = "index", *, ignore_index: int = 255,
               label_mode: str = "L", test: bool = True, **description) -> Path:
    """A folder data set at ``root``: train 2, val 2 (and test 1, unlabelled) pictures of
    :data:`SIZES`, labels per :func:`_values` with the ignore value (or colour) at (0, 0)."""
    names = [f"c{i}" for i in range(classes)]
    desc = {"classes": names, "label_encoding": encoding, "image_suffix": ".png", "label_suffix": ".png",
            "splits": {"train": {"images": "img/train", "labels": "ann/train"},
                       "val": {"images": "img/val", "labels": "ann/val"}}}
    if encoding == "rgb":
        desc |= {"palette": RGB_PALETTE[:classes], "ignore_color": [255, 255, 255]}
    else:
        desc["ignore_index"] = ignore_index
    if test:
        desc["splits"]["test"] = {"images": "img/test"}
    desc |= description
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.yaml").write_text(yaml.safe_dump(desc, sort_keys=False), encoding="utf-8")
    counts = {"train": 2, "val": 2, "test": 1 if test else 0}
    for split, count in counts.items():
        for i in range(count):
            height, width = SIZES[i % len(SIZES)] if split != "val" else SIZES[(i + 1) % len(SIZES)]
            picture = np.random.default_rng(i).integers(0, 255, (height, width, 3), dtype=np.uint8)
            (root / "img" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(root / "img" / split / f"{split}{i}.png")
            if split == "test":
                continue
            values = _values(i, height, width, classes)
            (root / "ann" / split).mkdir(parents=True, exist_ok=True)
            path = root / "ann" / split / f"{split}{i}.png"
            if encoding == "rgb":
                colours = np.asarray(RGB_PALETTE, np.uint8)[values]
                colours[0, 0] = 255
                Image.fromarray(colours, mode="RGB").save(path)
            else:
                values[0, 0] = ignore_index
                label = Image.fromarray(values, mode="L")
                if label_mode == "P":
                    label = label.convert("P")
                    label.putpalette(voc_palette())
                label.save(path)
    return root


def _expected(index: int, height: int, width: int, classes: int) -> np.ndarray:
    values = _values(index, height, width, classes)
    values[0, 0] = IGNORE_INDEX
    return values


def _run(capsys, root, out, dataset="folder"):
    code = cli(["prepare-data", "--dataset", dataset, "--root", str(root), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


# ------------------------------------------------------------------------------------------------
# The description: one line naming the file and the key, exit 2, nothing written
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, key", [
    ({"colour_space": "srgb"}, "colour_space"),                                 # an unknown key
    ({"palette": [[1, 2, 3], [4, 5, 6]]}, "palette"),                           # 2 colours, 3 classes
    ({"ignore_index": 1}, "ignore_index"),                                      # a class's value
    ({"splits": {"val": {"images": "img/val", "labels": "ann/val"}}}, "splits"),  # no train split
    ({"label_encoding": "rgb"}, "palette"),                                     # rgb without a palette
])
def test_bad_description_is_one_line_exit_2(tmp_path, capsys, change, key):
    root = _write_set(tmp_path / "set", **change)
    out = tmp_path / "lists"
    code, stdout, err = _run(capsys, root, out)
    assert code == 2 and stdout == "" and len(err) == 1, err
    assert str(root / "dataset.yaml") in err[0] and key in err[0], err[0]
    assert not out.exists()


def test_missing_description_is_one_line(tmp_path, capsys):
    (tmp_path / "set").mkdir()
    code, _, err = _run(capsys, tmp_path / "set", tmp_path / "lists")
    assert code == 2 and len(err) == 1 and "dataset.yaml: not found" in err[0]


# ------------------------------------------------------------------------------------------------
# The tree: every problem one line naming the file, then a summary; nothing written
# ------------------------------------------------------------------------------------------------


def test_label_value_outside_the_classes(tmp_path, capsys):
    root = _write_set(tmp_path / "set")
    bad = root / "ann" / "train" / "train1.png"
    values = np.asarray(Image.open(bad)).copy()
    values[3, 4], values[5, 6] = 7, 254
    Image.fromarray(values, mode="L").save(bad)
    out = tmp_path / "lists"
    code, _, err = _run(capsys, root, out)
    assert code == 2 and not out.exists()
    assert err[:-1] == [f"{bad}: label values outside the class set: 7, 254"]
    assert "1 problem in" in err[-1] and "nothing written" in err[-1]


def test_label_colour_outside_the_palette(tmp_path, capsys):
    root = _write_set(tmp_path / "set", encoding="rgb")
    bad = root / "ann" / "val" / "val0.png"
    colours = np.asarray(Image.open(bad)).copy()
    colours[1, 1], colours[2, 2] = (1, 2, 3), (0, 0, 0)
    Image.fromarray(colours, mode="RGB").save(bad)
    code, _, err = _run(capsys, root, tmp_path / "lists")
    assert code == 2 and err[:-1] == [f"{bad}: colours outside the palette: (0,0,0), (1,2,3)"]
    # read for training, the same colours are ignored
    sample = build_dataset("folder", root, "val").load(0)
    assert sample["label"][1, 1] == IGNORE_INDEX == sample["label"][2, 2]


def test_tree_problems_are_listed_one_line_each(tmp_path, capsys):
    root = _write_set(tmp_path / "set")
    (root / "ann" / "train" / "train0.png").unlink()                      # an image without its label
    shutil.copy(root / "ann" / "val" / "val0.png", root / "ann" / "val" / "ghost.png")  # a label without image
    shutil.rmtree(root / "img" / "test")                                     # a declared split's folder
    code, _, err = _run(capsys, root, tmp_path / "lists")
    assert code == 2
    assert sorted(err[:-1]) == sorted([
        f"{root / 'img' / 'train' / 'train0.png'}: no label (expected {str(root / 'ann' / 'train' / 'train0.png')!r})",
        f"{root / 'ann' / 'val' / 'ghost.png'}: no image (expected {str(root / 'img' / 'val' / 'ghost.png')!r})",
        f"{str(root / 'img' / 'test')!r}: missing folder (splits.test.images in {root / 'dataset.yaml'})",
    ])
    assert err[-1].startswith("spgnet prepare-data: error: 3 problems in")


def test_split_lists_of_names(tmp_path, capsys):
    root = _write_set(tmp_path / "set", splits={
        "train": {"list": "lists/train.txt", "images": "img/train", "labels": "ann/train"},
        "val": {"list": "lists/val.txt", "images": "img/val", "labels": "ann/val"},
        "test": {"list": "lists/test.txt", "images": "img/test"}})
    (root / "lists").mkdir()
    (root / "lists" / "train.txt").write_text("train1\ntrain0\n")
    (root / "lists" / "val.txt").write_text("val0\nval1\nnowhere\nval0\n")
    code, _, err = _run(capsys, root, tmp_path / "lists")
    list_file = root / "lists" / "val.txt"
    assert code == 2 and err[:-1] == [
        f"{str(root / 'img' / 'val' / 'nowhere.png')!r}: missing image (listed in {list_file}:3)",
        f"{list_file}:4: 'val0' is listed again (first at line 1); a scored split counts each image once",
        f"{str(root / 'lists' / 'test.txt')!r}: missing split list (splits.test.list in {root / 'dataset.yaml'})",
    ]
    list_file.write_text("val1\nval0\n")
    (root / "lists" / "test.txt").write_text("test0\n")
    code, _, err = _run(capsys, root, tmp_path / "out")
    assert code == 0 and err == []
    assert [r.name for r in build_dataset("folder", root, "trainval").records] == ["train1", "train0", "val1", "val0"]


# ------------------------------------------------------------------------------------------------
# Reading: both encodings into train ids; the rows training reads are the same pixels
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding, options", [
    ("index", {"label_mode": "L"}),
    ("index", {"label_mode": "P", "ignore_index": 200}),
    ("rgb", {}),
])
def test_reader_reads_labels_into_train_ids(tmp_path, encoding, options):
    root = _write_set(tmp_path / "set", encoding=encoding, **options)
    dataset = build_dataset("folder", root, "train")
    assert dataset.class_names == ["c0", "c1", "c2"] and dataset.num_classes == 3
    for index in range(len(dataset)):
        height, width = SIZES[index]
        sample = dataset.load(index)
        assert sample["image"].size == (width, height) and sample["name"] == f"train{index}"
        assert np.array_equal(sample["label"], _expected(index, height, width, 3))
        opened = dataset.open(index)  # what TrainTransform reads: raw rows, then the lookup
        assert opened.size == (width, height)
        raw = opened.read(5)
        assert np.array_equal(raw["label_lut"][raw["label"]], _expected(index, height, width, 3)[:5])


def test_label_lut_and_valid_values(tmp_path):
    reader = FolderReader(_write_set(tmp_path / "set", ignore_index=200))
    lut = reader.label_lut()
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    assert list(lut[:3]) == [0, 1, 2] and lut[200] == IGNORE_INDEX and lut[3] == lut[255] == IGNORE_INDEX
    assert reader.VALID_LABEL_VALUES == {0, 1, 2, 200}
    assert reader.BASE_SPLITS == ("train", "val", "test") and reader.OPTIONAL_SPLITS == ("test",)
    assert reader.has_split(reader.root, "test") and not FolderReader(
        _write_set(tmp_path / "other", test=False)).has_split(tmp_path / "other", "test")


def test_names_are_paths_below_the_image_folder(tmp_path):
    root = _write_set(tmp_path / "set", test=False, image_suffix="_img.png", label_suffix="_lbl.png")
    for split in ("train", "val"):  # rename into sub-folders with the suffixes
        for image in sorted((root / "img" / split).glob("*.png")):
            for folder, suffix in (("img", "_img.png"), ("ann", "_lbl.png")):
                target = root / folder / split / "city" / f"{image.stem}{suffix}"
                target.parent.mkdir(exist_ok=True)
                (root / folder / split / image.name).rename(target)
    dataset = build_dataset("folder", root, "val")
    assert [r.name for r in dataset.records] == ["city/val0", "city/val1"]
    code = cli(["prepare-data", "--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "lists")])
    assert code == 0
    listed = build_dataset("folder", root, "val", list_dir=tmp_path / "lists")
    assert [r.name for r in listed.records] == ["city/val0", "city/val1"]
    # an edited list pairing a picture with another's label is refused
    val = tmp_path / "lists" / "val.txt"
    lines = val.read_text().splitlines()
    val.write_text(lines[0].split("\t")[0] + "\t" + lines[1].split("\t")[1] + "\n")
    with pytest.raises(SpgnetError, match=r"val.txt:1: the label is another picture's \('city/val1' beside the image 'city/val0'\)"):
        read_split_list(val, root, "folder")


# ------------------------------------------------------------------------------------------------
# prepare-data's lists and summary; build_dataset from them
# ------------------------------------------------------------------------------------------------


def test_prepare_data_writes_lists_and_summary(tmp_path, capsys):
    root = _write_set(tmp_path / "set", encoding="rgb")
    out = tmp_path / "lists"
    code, stdout, err = _run(capsys, root, out)
    assert code == 0 and err == [] and "folder OK (train 2, val 2, test 1 images" in stdout
    assert sorted(p.name for p in out.iterdir()) == [".prepare-data", "summary.json", "test.txt", "train.txt",
                                                     "trainval.txt", "val.txt"]
    assert (out / "train.txt").read_text() == "img/train/train0.png\tann/train/train0.png\nimg/train/train1.png\tann/train/train1.png\n"
    assert (out / "test.txt").read_text() == "img/test/test0.png\t\n"
    assert (out / "trainval.txt").read_text() == (out / "train.txt").read_text() + (out / "val.txt").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "folder" and summary["classes"] == ["c0", "c1", "c2"]
    assert summary["label_encoding"] == "rgb"
    train = summary["splits"]["train"]
    assert train["images"] == 2 and train["classes_present"] == ["c0", "c1", "c2"] and train["ignore_pixels"] == 2
    assert sum(train["pixels_per_class"].values()) + 2 == 12 * 20 + 16 * 24
    for split, count in (("trainval", 4), ("test", 1)):
        assert len(build_dataset("folder", root, split, list_dir=out)) == count
    scanned = build_dataset("folder", root, "trainval")
    listed = build_dataset("folder", root, "trainval", list_dir=out)
    assert [r.image for r in listed.records] == [r.image for r in scanned.records]
    assert np.array_equal(listed[3]["label"].numpy(), scanned[3]["label"].numpy())


def test_no_trainaug_for_a_folder_set(tmp_path):
    with pytest.raises(SpgnetError, match="dataset 'folder' has no split 'trainaug'"):
        build_dataset("folder", _write_set(tmp_path / "set"), "trainaug")


# ------------------------------------------------------------------------------------------------
# Class counts other than 19 / 21 / 7; classes and colours
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [3, 30])
def test_class_counts(tmp_path, capsys, classes):
    root = _write_set(tmp_path / "set", classes=classes, label_mode="P")
    code, _, err = _run(capsys, root, tmp_path / "lists")
    assert code == 0, err
    summary = json.loads((tmp_path / "lists" / "summary.json").read_text())
    assert len(summary["classes"]) == classes and len(summary["splits"]["train"]["classes_present"]) == classes
    dataset = build_dataset("folder", root, "val", list_dir=tmp_path / "lists")
    assert dataset.num_classes == classes == len(dataset_classes("folder", root))
    assert np.array_equal(dataset.load(1)["label"], _expected(1, *SIZES[2], classes))
    colours = dataset_palette("folder", root)
    assert colours.shape == (256, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours[:classes]}) == classes and not colours[IGNORE_INDEX].any()
    assert np.array_equal(colours, generated_palette(classes))


def test_classes_and_palettes(tmp_path):
    root = _write_set(tmp_path / "set", encoding="rgb")
    assert dataset_classes("folder", root) == ["c0", "c1", "c2"]
    colours = dataset_palette("folder", root)
    assert colours[:3].tolist() == RGB_PALETTE and not colours[3:].any()
    assert dataset_classes("person_part", None)[:2] == ["background", "head"]
    assert dataset_palette("voc", None).reshape(-1).tolist() == voc_palette()
    assert dataset_palette("cityscapes", None)[0].tolist() == [128, 64, 128]  # road
    with pytest.raises(SpgnetError, match="unknown dataset 'kitti'"):
        dataset_palette("kitti", root)
    with pytest.raises(SpgnetError, match="dataset.yaml: not found"):
        dataset_classes("folder", tmp_path)


def test_importing_the_data_layer_does_not_import_torch(tmp_path):
    root = _write_set(tmp_path / "set")
    code = (f"import sys, spgnet.data as d; d.dataset_classes('folder', {str(root)!r}); "
            f"d.dataset_palette('folder', {str(root)!r}); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-1000:]


# ------------------------------------------------------------------------------------------------
# make-synthetic --kind folder
# ------------------------------------------------------------------------------------------------

SMALL = dict(num_train=4, num_val=2, num_test=1, height=48, width=64)


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_make_synthetic_folder(tmp_path, capsys):
    args = ["make-synthetic", "--kind", "folder", "--seed", "3", "--num-train", "4", "--num-val", "2",
            "--num-test", "1", "--height", "48", "--width", "64"]
    assert cli(args + ["--out", str(tmp_path / "a")]) == 0
    assert cli(args + ["--out", str(tmp_path / "b")]) == 0
    a = _files(tmp_path / "a")
    assert a == _files(tmp_path / "b")  # byte-identical for the same arguments
    assert sorted(n for n in a if n.startswith("images/")) == [
        "images/test/test_0000.jpg", *(f"images/train/train_{i:04d}.jpg" for i in range(4)),
        "images/val/val_0000.jpg", "images/val/val_0001.jpg"]
    assert sorted(n for n in a if n.startswith("labels/")) == [
        *(f"labels/train/train_{i:04d}.png" for i in range(4)), "labels/val/val_0000.png", "labels/val/val_0001.png"]
    assert MANIFEST in a and "dataset.yaml" in a
    other = generate(tmp_path / "c", kind="folder", seed=4, **SMALL)
    assert _files(other)["images/train/train_0000.jpg"] != a["images/train/train_0000.jpg"]
    capsys.readouterr()
    code, _, err = _run(capsys, tmp_path / "a", tmp_path / "lists")
    assert code == 0 and err == []
    summary = json.loads((tmp_path / "lists" / "summary.json").read_text())
    assert summary["label_encoding"] == "rgb"
    assert summary["classes"] == ["background", "road", "car", "tree", "sky"] == summary["splits"]["train"]["classes_present"]
    assert summary["splits"]["train"]["ignore_pixels"] > 0  # the cars' outlines
    dataset = build_dataset("folder", tmp_path / "a", "train")
    sizes = {dataset.load(i)["image"].size for i in range(len(dataset))}
    assert (64, 48) in sizes and all(w != h and w <= 64 and h <= 48 for w, h in sizes)


def test_make_synthetic_folder_needs_train_and_val(tmp_path):
    with pytest.raises(SpgnetError, match="--num-val 0: --kind folder needs at least one image"):
        generate(tmp_path / "x", kind="folder", num_train=2, num_val=0, num_test=0, height=48, width=64)


def test_labels_beside_their_images(tmp_path, capsys):
    root = _write_set(tmp_path / "set", test=False, label_suffix="_mask.png",
                      splits={"train": {"images": "all/train", "labels": "all/train"},
                              "val": {"images": "all/val", "labels": "all/val"}})
    for split in ("train", "val"):
        (root / "all" / split).mkdir(parents=True)
        for image in sorted((root / "img" / split).glob("*.png")):
            image.rename(root / "all" / split / image.name)
            (root / "ann" / split / image.name).rename(root / "all" / split / f"{image.stem}_mask.png")
    (root / "all" / "train" / "._train0.png").write_bytes(b"resource fork")  # hidden: not a picture
    assert [r.name for r in build_dataset("folder", root, "train").records] == ["train0", "train1"]
    assert _run(capsys, root, tmp_path / "lists")[0] == 0
    desc = yaml.safe_load((root / "dataset.yaml").read_text())
    desc["label_suffix"] = ".png"
    (root / "dataset.yaml").write_text(yaml.safe_dump(desc))
    code, _, err = _run(capsys, root, tmp_path / "other")
    assert code == 2 and err[0] == (f"{root / 'dataset.yaml'}: key 'splits.train': images and labels are the same "
                                    "files (one folder and one suffix '.png'); give them other folders or suffixes")
