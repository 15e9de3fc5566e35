"""PASCAL VOC ``trainaug`` (issue 19.2): DeepLab's train_aug.txt with SegmentationClassAug labels,
refused when it holds a val image, in prepare-data, the synthetic generator, the registry and the
report; VOC's alone."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spgnet.config import types as config_types
from spgnet.cli import main as cli
from spgnet.config import ConfigError, load_profile, resolve
from spgnet.data import build_dataset, labels
from spgnet.data.labels import voc_palette
from spgnet.data.synthetic import MANIFEST, generate
from spgnet.errors import SpgnetError

H, W = 12, 16
TRAIN, VAL, SBD = ["2007_000032", "2007_000039"], ["2007_000033", "2007_000042"], ["2008_000002", "2008_000003"]


def _palette_png(values: np.ndarray, path: Path) -> None:
    img = Image.fromarray(values.astype(np.uint8), mode="P")
    img.putpalette(voc_palette())
    img.save(path)


def _label(cls: int, border: bool) -> np.ndarray:
    values = np.zeros((H, W), np.uint8)
    values[3:9, 4:12] = cls
    if border:
        values[3, 4:12] = 255
    return values


def make_voc_aug(root: Path, aug_list: list[str] | None = None) -> Path:
    """VOC 2012 train/val (palette SegmentationClass with borders) plus DeepLab's trainaug layout:
    SegmentationClassAug (L PNGs) for the train ids and two SBD-only ids, train_aug.txt."""
    lists = root / "ImageSets" / "Segmentation"
    for folder in (root / "JPEGImages", root / "SegmentationClass", root / "SegmentationClassAug", lists):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in TRAIN + VAL + SBD:
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
    for n, name in enumerate(TRAIN + VAL):
        _palette_png(_label(1 + n, border=True), root / "SegmentationClass" / f"{name}.png")
    for n, name in enumerate(TRAIN + SBD):
        # the Aug copy of a train label has no border, so that the tests see which folder was read
        Image.fromarray(_label(10 + n, border=False), mode="L").save(root / "SegmentationClassAug" / f"{name}.png")
    (lists / "train.txt").write_text("".join(f"{n}\n" for n in TRAIN))
    (lists / "val.txt").write_text("".join(f"{n}\n" for n in VAL))
    (lists / "train_aug.txt").write_text("".join(f"{n}\n" for n in (aug_list if aug_list is not None else TRAIN + SBD)))
    return root


def _prepare(capsys, root, out):
    code = cli(["prepare-data", "--dataset", "voc", "--root", str(root), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_reader_reads_train_aug_with_labels_from_segmentationclassaug(tmp_path):
    root = make_voc_aug(tmp_path / "VOC2012")
    ds = build_dataset("voc", root, "trainaug")
    assert [r.name for r in ds.records] == TRAIN + SBD and ds.split == "trainaug"
    assert all(r.label == root / "SegmentationClassAug" / f"{r.name}.png" for r in ds.records)
    assert all(r.image == root / "JPEGImages" / f"{r.name}.jpg" for r in ds.records)
    label = ds[2]["label"]  # an SBD-only image
    assert set(label.unique().tolist()) == {0, 12} and label[3, 5] == 12  # no border: the Aug file
    # train keeps reading SegmentationClass (palette, bordered)
    train = build_dataset("voc", root, "train")
    assert [r.label.parent.name for r in train.records] == ["SegmentationClass"] * 2
    assert train[0]["label"][3, 5] == 255
    # DeepLab's list form: image and label paths
    (root / "ImageSets/Segmentation/train_aug.txt").write_text(
        "".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in TRAIN + SBD))
    assert build_dataset("voc", root, "trainaug").records == ds.records
    # a VOC train id without an Aug file falls back to SegmentationClass
    (root / "SegmentationClassAug" / f"{TRAIN[0]}.png").unlink()
    (root / "ImageSets/Segmentation/train_aug.txt").write_text("".join(f"{n}\n" for n in TRAIN + SBD))
    assert build_dataset("voc", root, "trainaug").records[0].label == root / "SegmentationClass" / f"{TRAIN[0]}.png"


def test_a_list_with_val_ids_is_refused_with_one_line(tmp_path, capsys):
    root = make_voc_aug(tmp_path / "VOC2012", aug_list=TRAIN + [VAL[1]] + SBD + [VAL[0]])
    aug = root / "ImageSets" / "Segmentation" / "train_aug.txt"
    line = (f"{aug}: holds 2 ids of val.txt ({VAL[1]}, {VAL[0]}): "
            "trainaug must leave out every VOC 2012 val image")
    with pytest.raises(SpgnetError) as err:
        build_dataset("voc", root, "trainaug")
    assert str(err.value) == line
    out = tmp_path / "lists"
    code, stdout, err_lines = _prepare(capsys, root, out)
    assert code == 2 and stdout == ""
    assert err_lines[0] == line and len(err_lines) == 2
    assert err_lines[1].startswith("spgnet prepare-data: error: 1 problem in") and "nothing written" in err_lines[1]
    assert not out.exists()
    # more than three: the first three, then "..."
    aug.write_text("".join(f"{n}\n" for n in TRAIN + SBD))
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(f"{n}\n" for n in VAL + SBD + TRAIN))
    with pytest.raises(SpgnetError, match=r"holds 4 ids of val\.txt \(2007_000032, 2007_000039, 2008_000002, \.\.\.\): "):
        build_dataset("voc", root, "trainaug")


def test_prepare_data_writes_trainaug_and_reports_its_count(tmp_path, capsys):
    root = make_voc_aug(tmp_path / "VOC2012")
    out = tmp_path / "lists"
    code, stdout, err = _prepare(capsys, root, out)
    assert code == 0 and err == [] and stdout.count("\n") == 1
    assert "trainaug 4" in stdout and "train 2" in stdout and "val 2" in stdout
    assert sorted(p.name for p in out.iterdir()) == [".prepare-data", "summary.json", "train.txt", "trainaug.txt", "trainval.txt", "val.txt"]
    lines = (out / "trainaug.txt").read_text().splitlines()
    assert lines == [f"JPEGImages/{n}.jpg\tSegmentationClassAug/{n}.png" for n in TRAIN + SBD]
    assert len((out / "trainval.txt").read_text().splitlines()) == 4  # train + val, not trainaug
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"]["trainaug"]["images"] == 4 and summary["splits"]["trainaug"]["labelled"] == 4
    assert "trainaug.txt" in summary["lists"]
    listed = build_dataset("voc", root, "trainaug", list_dir=out)
    assert listed.records == build_dataset("voc", root, "trainaug").records
    # a list edited after prepare-data to hold a val image is refused on opening too
    with (out / "trainaug.txt").open("a") as handle:
        handle.write(f"JPEGImages/{VAL[0]}.jpg\tSegmentationClass/{VAL[0]}.png\n")
    with pytest.raises(SpgnetError, match=rf"trainaug\.txt: holds 1 id of val\.txt \({VAL[0]}\): trainaug must leave out"):
        build_dataset("voc", root, "trainaug", list_dir=out)
    # without train_aug.txt there is no trainaug list, and no problem
    (root / "ImageSets/Segmentation/train_aug.txt").unlink()
    code, stdout, err = _prepare(capsys, root, tmp_path / "plain")
    assert code == 0 and "trainaug" not in stdout and not (tmp_path / "plain" / "trainaug.txt").exists()


def test_an_sbd_image_without_its_aug_label_is_a_problem(tmp_path, capsys):
    root = make_voc_aug(tmp_path / "VOC2012")
    (root / "SegmentationClassAug" / f"{SBD[1]}.png").unlink()
    code, _, err = _prepare(capsys, root, tmp_path / "lists")
    assert code == 2 and len(err) == 2
    assert err[0].startswith(f"{root / 'JPEGImages' / (SBD[1] + '.jpg')}: no label (expected ")
    assert "SegmentationClassAug" in err[0]


def test_synthetic_voc_writes_the_trainaug_layout(tmp_path, capsys):
    args = dict(kind="voc", seed=0, num_train=3, num_val=2, num_test=0, height=64, width=64, num_aug=4)
    root = generate(tmp_path / "voc", **args)
    lists = root / "ImageSets" / "Segmentation"
    train, val = (lists / "train.txt").read_text().split(), (lists / "val.txt").read_text().split()
    aug = (lists / "train_aug.txt").read_text().split()
    assert aug[: len(train)] == train and len(aug) == 7 > len(train) and not set(aug) & set(val)
    extra = aug[len(train):]
    for name in extra:  # SBD-only: image and Aug label, no SegmentationClass file, no border
        assert (root / "JPEGImages" / f"{name}.jpg").is_file()
        assert not (root / "SegmentationClass" / f"{name}.png").exists()
        values = np.array(Image.open(root / "SegmentationClassAug" / f"{name}.png"))
        assert Image.open(root / "SegmentationClassAug" / f"{name}.png").mode == "L"
        assert 255 not in values and len(set(np.unique(values)) - {0}) >= 1
    for name in train:  # both folders, the same values
        voc = np.array(Image.open(root / "SegmentationClass" / f"{name}.png"))
        assert np.array_equal(voc, np.array(Image.open(root / "SegmentationClassAug" / f"{name}.png")))
    for name in val:
        assert not (root / "SegmentationClassAug" / f"{name}.png").exists()
    assert json.loads((root / MANIFEST).read_text())["arguments"]["num_aug"] == 4
    files = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    again = generate(tmp_path / "again", **args)
    assert {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()} == files
    ds = build_dataset("voc", root, "trainaug")
    assert len(ds) == 7 and ds.records[-1].label.parent.name == "SegmentationClassAug"
    code, stdout, err = _prepare(capsys, root, tmp_path / "lists")
    assert code == 0 and err == [] and "trainaug 7" in stdout
    # without --num-aug: the layout and manifest of before (no Aug folder, no train_aug.txt)
    plain = generate(tmp_path / "plain", **{**args, "num_aug": 0})
    assert not (plain / "SegmentationClassAug").exists() and not (plain / "ImageSets/Segmentation/train_aug.txt").exists()
    assert "num_aug" not in json.loads((plain / MANIFEST).read_text())["arguments"]
    assert (plain / "JPEGImages" / f"{train[0]}.jpg").read_bytes() == (root / "JPEGImages" / f"{train[0]}.jpg").read_bytes()


def test_synthetic_num_aug_is_voc_only_and_on_the_command_line(tmp_path, capsys):
    with pytest.raises(SpgnetError, match="--num-aug 2: only --kind voc has a trainaug split"):
        generate(tmp_path / "cs", kind="cityscapes", num_aug=2, num_train=1, num_val=1, num_test=0, height=64, width=64)
    with pytest.raises(SpgnetError, match="--num-aug -1: must not be negative"):
        generate(tmp_path / "v", kind="voc", num_aug=-1)
    assert not (tmp_path / "cs").exists()
    argv = ["make-synthetic", "--kind", "voc", "--out", str(tmp_path / "voc"), "--num-train", "2", "--num-val", "1",
            "--num-test", "0", "--num-aug", "2", "--height", "64", "--width", "64"]
    assert cli(argv) == 0
    assert "trainaug 4" in capsys.readouterr().out
    assert len((tmp_path / "voc/ImageSets/Segmentation/train_aug.txt").read_text().split()) == 4


@pytest.mark.parametrize("profile", ["paper", "mini", "smoke"])
def test_voc_spgnet_trains_on_trainaug(profile):
    prof = load_profile(profile, data_root="/data/sets")
    cfg = resolve("voc-spgnet", prof)
    assert cfg.train.split == "trainaug" and cfg.train.dataset == "voc" and cfg.eval.split == "val"
    if profile != "paper":  # the embedded sets carry the layout, so the default exercises it
        assert cfg.data.synthetic.num_aug > 0


def test_trainaug_is_vocs_alone_with_one_line(tmp_path, capsys):
    assert config_types.DATASET_SPLITS == labels.DATASET_SPLITS
    assert set(config_types.DATASET_SPLITS) == set(config_types.DATASET_KINDS)
    root = tmp_path / "cityscapes"
    root.mkdir()
    for dataset in ("cityscapes", "person_part"):
        with pytest.raises(SpgnetError) as err:
            build_dataset(dataset, root, "trainaug")
        assert str(err.value) == f"dataset '{dataset}' has no split 'trainaug' (valid: train, val, test, trainval)"
    with pytest.raises(ConfigError) as err:
        resolve("t3-1stage", "smoke", train={"split": "trainaug"})
    assert str(err.value) == ("experiment 't3-1stage', profile 'smoke': key 'train.split': dataset 'cityscapes' "
                              "has no split 'trainaug' (valid: train, val, test, trainval)")
    code = cli(["train", "t3-1stage", "--profile", "smoke", "--set", "train.split=trainaug", "--out", str(tmp_path / "run")])
    err_lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err_lines) == 1 and "dataset 'cityscapes' has no split 'trainaug'" in err_lines[0]
    assert not (tmp_path / "run").exists()


def test_report_schedule_names_the_split(tmp_path):
    from spgnet.analysis import report

    out = tmp_path / "tables.md"
    args = Namespace(profile="smoke", data_root=None, results=str(tmp_path / "results"), out=str(out), seeds=[0])
    assert report.main(args) == 0
    row = next(line for line in out.read_text(encoding="utf-8").splitlines() if line.startswith("| `voc-spgnet` | voc |"))
    assert row.split("|")[3].strip() == "trainaug"
