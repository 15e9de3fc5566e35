"""`spgnet prepare-data`: split lists on a good tree, every bad-input case, nothing written on failure."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spgnet.cli import main as cli
from spgnet.data import CITYSCAPES_CLASSES
from spgnet.data.io import printable
from spgnet.data.labels import voc_palette
from spgnet.data.synthetic import generate


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("syn") / "cityscapes", seed=0, num_train=5, num_val=5, num_test=2,
                    height=64, width=128)


@pytest.fixture
def tree(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "cityscapes"))


def _run(capsys, dataset, root, out):
    code = cli(["prepare-data", "--dataset", dataset, "--root", str(root), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def test_good_tree_writes_lists_and_summary(tree, tmp_path, capsys):
    out = tmp_path / "lists"
    code, stdout, err = _run(capsys, "cityscapes", tree, out)
    assert code == 0 and err == [] and stdout.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == [".prepare-data", "summary.json", "test.txt", "train.txt",
                                                     "trainval.txt", "val.txt"]
    train = (out / "train.txt").read_text().splitlines()
    val = (out / "val.txt").read_text().splitlines()
    assert len(train) == 5 and len(val) == 5
    assert (out / "trainval.txt").read_text().splitlines() == train + val
    for line in train:
        image, label = line.split("\t")
        assert not Path(image).is_absolute() and (tree / image).is_file() and (tree / label).is_file()
        assert image.startswith("leftImg8bit/train/") and label.endswith("_gtFine_labelIds.png")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["train"]["images"] == 5 and summary["splits"]["test"]["images"] == 2
    assert summary["splits"]["train"]["classes_present"] == CITYSCAPES_CLASSES
    assert summary["classes"] == CITYSCAPES_CLASSES
    code, _, _ = _run(capsys, "cityscapes", tree, out)  # rerun over its own output: replaced
    assert code == 0 and (out / "train.txt").read_text().splitlines() == train


def _missing_label(root):
    label = _first(root, "gtFine/train/*/*_labelIds.png")
    label.unlink()
    image = root / "leftImg8bit" / "train" / label.parent.name / label.name.replace("_gtFine_labelIds", "_leftImg8bit")
    return image, "no label"


def _missing_image(root):
    image = _first(root, "leftImg8bit/val/*/*_leftImg8bit.png")
    image.unlink()
    return root / "gtFine" / "val" / image.parent.name / image.name.replace("_leftImg8bit", "_gtFine_labelIds"), "no image"


def _size_mismatch(root):
    label = _first(root, "gtFine/train/*/*_labelIds.png")
    Image.open(label).resize((64, 32), Image.NEAREST).save(label)
    return label, "label is 64x32 but image"


def _truncated_image(root):
    image = _first(root, "leftImg8bit/train/*/*_leftImg8bit.png")
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    return image, "unreadable or truncated image"


def _unreadable_label(root):
    label = _first(root, "gtFine/val/*/*_labelIds.png")
    label.write_bytes(b"this is not a PNG file")
    return label, "unreadable or truncated label"


def _bad_values(root):
    label = _first(root, "gtFine/train/*/*_labelIds.png")
    values = np.array(Image.open(label))
    values[0, :3] = (40, 77, 200)
    Image.fromarray(values).save(label)
    return label, "label values outside the class set: 40, 77, 200"


def _rgb_label(root):
    label = _first(root, "gtFine/val/*/*_labelIds.png")
    Image.open(label).convert("RGB").save(label)
    return label, "expected a single-channel"


CASES = [_missing_label, _missing_image, _size_mismatch, _truncated_image, _unreadable_label, _bad_values, _rgb_label]


@pytest.mark.parametrize("corrupt", CASES, ids=[c.__name__.strip("_") for c in CASES])
def test_each_bad_input_is_reported_with_its_file_and_nothing_is_written(corrupt, tree, tmp_path, capsys):
    path, text = corrupt(tree)
    out = tmp_path / "out" / "lists"
    code, stdout, err = _run(capsys, "cityscapes", tree, out)
    assert code == 2 and stdout == ""
    assert len(err) == 2, err
    assert err[0].startswith(f"{path}: ") and text in err[0]
    assert err[1].startswith("spgnet prepare-data: error: 1 problem in") and "nothing written" in err[1]
    assert not out.exists()
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_many_problems_are_all_listed(tree, tmp_path, capsys):
    expected = [corrupt(tree) for corrupt in (_missing_label, _truncated_image, _bad_values, _unreadable_label)]
    code, _, err = _run(capsys, "cityscapes", tree, tmp_path / "lists")
    assert code == 2 and len(err) == 5
    for path, text in expected:
        assert any(line.startswith(f"{path}: ") and text in line for line in err[:-1]), (path, err)
    assert "4 problems" in err[-1]
    assert not (tmp_path / "lists").exists()


def test_missing_split_and_foreign_output(tree, tmp_path, capsys):
    shutil.rmtree(tree / "leftImg8bit" / "val")
    shutil.rmtree(tree / "gtFine" / "val")
    code, _, err = _run(capsys, "cityscapes", tree, tmp_path / "lists")
    assert code == 2 and err[0] == f"{printable(tree / 'leftImg8bit' / 'val')}: missing folder (expected leftImg8bit/val/<city>/*_leftImg8bit.png)"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.md").write_text("mine")
    code, _, err = _run(capsys, "cityscapes", tree, foreign)
    assert code == 2 and len(err) == 1 and "not written by prepare-data" in err[0]
    assert (foreign / "notes.md").read_text() == "mine"


def test_a_rerun_replaces_its_own_folder_whose_summary_a_workflow_deleted(tree, tmp_path, capsys):
    """Issue 22, case 1 (snakemake#1150): Snakemake deletes a job's declared output (summary.json)
    before it reruns the job; the folder stays prepare-data's by its marker file."""
    out = tmp_path / "lists"
    assert _run(capsys, "cityscapes", tree, out)[0] == 0
    (out / "summary.json").unlink()
    code, _, err = _run(capsys, "cityscapes", tree, out)
    assert code == 0 and err == [] and json.loads((out / "summary.json").read_text())["splits"]["train"]["images"] == 5


def test_a_folder_of_lists_without_the_marker_is_still_refused(tree, tmp_path, capsys):
    """Someone's own split lists (no marker, no summary of prepare-data's) are never replaced."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.txt").write_text("my own list\n")
    (mine / "summary.json").write_text(json.dumps({"tool": "another tool"}))
    code, _, err = _run(capsys, "cityscapes", tree, mine)
    assert code == 2 and len(err) == 1 and "not written by prepare-data" in err[0]
    assert (mine / "train.txt").read_text() == "my own list\n"


def _voc(root: Path) -> Path:
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split, ids in {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
        for name in ids:
            Image.new("RGB", (16, 12), (90, 120, 30)).save(root / "JPEGImages" / f"{name}.jpg")
            label = Image.fromarray(np.full((12, 16), 7, np.uint8), mode="P")
            label.putpalette(voc_palette())
            label.save(root / "SegmentationClass" / f"{name}.png")
    return root


def test_voc_checks(tmp_path, capsys):
    root = _voc(tmp_path / "VOC2012")
    code, _, err = _run(capsys, "voc", root, tmp_path / "ok")
    assert code == 0 and err == []
    assert (tmp_path / "ok" / "val.txt").read_text() == "JPEGImages/2007_000033.jpg\tSegmentationClass/2007_000033.png\n"
    (root / "JPEGImages" / "2007_000039.jpg").unlink()
    label = root / "SegmentationClass" / "2007_000032.png"
    values = np.array(Image.open(label))
    values[0, 0], values[1, 1] = 21, 255  # 21 is outside 0..20; 255 (border) is fine
    img = Image.fromarray(values, mode="P")
    img.putpalette(voc_palette())
    img.save(label)
    (root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    code, _, err = _run(capsys, "voc", root, tmp_path / "bad")
    assert code == 2 and len(err) == 4, err
    assert f"{printable(root / 'ImageSets' / 'Segmentation' / 'val.txt')}: missing split list" in err
    assert any(line.startswith(f"{printable(root / 'JPEGImages' / '2007_000039.jpg')}: missing image") for line in err)
    assert any(line == f"{label}: label values outside the class set: 21" for line in err)
    assert not (tmp_path / "bad").exists()
