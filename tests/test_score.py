"""``spgnet score``: equality with cityscapesscripts, labelIds/trainIds, matching errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spgnet.cli import main as cli
from spgnet.engine.evaluation.score import class_names, detect_format, score_directories
from spgnet.errors import SpgnetError
from cityscapes_reference import run_cityscapesscripts



def fabricate(root: Path, seed: int = 0, n: int = 4, shape=(64, 128)) -> None:
    """GT (labelIds + 16-bit instanceIds) in root/gtFine/val/<city>/, labelIds predictions in
    root/results/<city>/ (nested, as a user might keep them)."""
    from cityscapesscripts.helpers.labels import labels

    rng = np.random.default_rng(seed)
    eval_ids = [l.id for l in labels if not l.ignoreInEval]
    gt_ids = [i for i in eval_ids if i not in (31, 32)] + [0, 4, 5, 29]  # train/motorcycle absent
    pred_ids = [i for i in eval_ids if i != 31] + [0, 4]  # motorcycle predicted; void ids 0, 4
    for k in range(n):
        city = ["aachen", "bremen"][k % 2]
        key = f"{city}_{k:06d}_{19 + k:06d}"
        gt = rng.choice(gt_ids, size=shape).astype(np.uint8)
        gt[: shape[0] // 4] = 7
        pred = gt.copy()
        noise = rng.random(shape) < 0.35
        pred[noise] = rng.choice(pred_ids, size=int(noise.sum()))
        inst = gt.astype(np.uint16)
        inst[gt == 26] = 26000 + k
        for folder in (root / "gtFine" / "val" / city, root / "results" / city):
            folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(root / "gtFine" / "val" / city / f"{key}_gtFine_labelIds.png")
        Image.fromarray(inst).save(root / "gtFine" / "val" / city / f"{key}_gtFine_instanceIds.png")
        Image.fromarray(pred).save(root / "results" / city / f"{key}_leftImg8bit.png")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cs")
    fabricate(root)
    return root, run_cityscapesscripts(root)


def _assert_equal_to_reference(result: dict, ref: dict) -> None:
    for name in class_names():
        theirs, ours = ref["classScores"][name], result["per_class"][name]
        if math.isnan(theirs):
            assert ours is None, name
        else:
            assert ours / 100 == pytest.approx(theirs, abs=1e-6), name
    assert result["miou"] / 100 == pytest.approx(ref["averageScoreClasses"], abs=1e-6)


def test_labelids_equal_to_cityscapesscripts(tree):
    root, ref = tree
    result = score_directories(root / "results", root / "gtFine")
    assert result["format"] == "labelIds" and result["num_images"] == 4
    _assert_equal_to_reference(result, ref)
    assert result["per_class"]["train"] is None and result["per_class"]["motorcycle"] == 0.0


def test_trainids_give_the_same_scores(tree, tmp_path):
    from spgnet.data.labels import labelid_to_trainid

    root, ref = tree
    for path in (root / "results").rglob("*.png"):  # flat folder, other suffix: still matched
        train = labelid_to_trainid(np.array(Image.open(path)))
        Image.fromarray(train).save(tmp_path / path.name.replace("_leftImg8bit", "_pred"))
    result = score_directories(tmp_path, root)  # GT searched recursively from the root
    assert result["format"] == "trainIds"
    _assert_equal_to_reference(result, ref)
    assert score_directories(tmp_path, root, fmt="trainIds")["miou"] == result["miou"]


def test_json_output_through_the_cli(tree, capsys):
    root, ref = tree
    assert cli(["score", str(root / "results"), str(root / "gtFine"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"miou", "per_class"} and len(out["per_class"]) == 19
    assert out["miou"] / 100 == pytest.approx(ref["averageScoreClasses"], abs=1e-6)
    assert cli(["score", str(root / "results"), str(root / "gtFine")]) == 0
    assert "mIoU" in capsys.readouterr().out


def test_format_detection():
    seen = np.zeros(256, bool)
    seen[[7, 8, 11, 26]] = True
    assert detect_format(seen) == ("labelIds", False)
    seen[:] = False
    seen[[0, 1, 2, 13]] = True
    assert detect_format(seen) == ("trainIds", False)
    seen[:] = False
    seen[[7, 8, 11]] = True  # valid both ways
    assert detect_format(seen) == ("labelIds", True)


def _copy(tree_root: Path, dest: Path) -> Path:
    shutil.copytree(tree_root / "results", dest)
    return dest


def test_missing_prediction_names_the_ground_truth(tree, tmp_path, capsys):
    root, _ = tree
    pred = _copy(root, tmp_path / "p")
    (pred / "bremen" / "bremen_000001_000020_leftImg8bit.png").unlink()
    assert cli(["score", str(pred), str(root / "gtFine")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bremen_000001_000020_gtFine_labelIds.png: no prediction" in err


def test_unmatched_and_duplicate_predictions(tree, tmp_path):
    root, _ = tree
    pred = _copy(root, tmp_path / "p")
    Image.fromarray(np.zeros((64, 128), np.uint8)).save(pred / "zurich_000000_000019_leftImg8bit.png")
    with pytest.raises(SpgnetError, match="zurich_000000_000019_leftImg8bit.png: prediction matches no ground truth"):
        score_directories(pred, root / "gtFine")
    (pred / "zurich_000000_000019_leftImg8bit.png").unlink()
    shutil.copy(pred / "aachen" / "aachen_000000_000019_leftImg8bit.png", pred / "aachen_000000_000019_copy.png")
    with pytest.raises(SpgnetError, match="several predictions"):
        score_directories(pred, root / "gtFine")


def test_size_mismatch_and_bad_folders(tree, tmp_path):
    root, _ = tree
    pred = _copy(root, tmp_path / "p")
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(pred / "aachen" / "aachen_000000_000019_leftImg8bit.png")
    with pytest.raises(SpgnetError, match="aachen_000000_000019_leftImg8bit.png: prediction is 64x32"):
        score_directories(pred, root / "gtFine")
    with pytest.raises(SpgnetError, match="no \\*_gtFine_labelIds.png"):
        score_directories(pred, pred)
    with pytest.raises(SpgnetError, match="not found"):
        score_directories(tmp_path / "nope", root)


def test_class_names_agree_with_the_data_package():
    from spgnet.data.labels import CITYSCAPES_CLASSES

    assert class_names() == CITYSCAPES_CLASSES


def test_evaluate_predictions_score_like_evaluate(tmp_path, monkeypatch):
    """``spgnet evaluate --predictions`` writes PNGs that ``spgnet score`` reads back to the same mIoU."""
    import torch

    from spgnet.data.labels import trainid_to_labelid
    from spgnet.engine.evaluation import evaluate as ev

    g = torch.Generator().manual_seed(0)
    model = torch.nn.Conv2d(3, 19, 1).eval()

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return {"out": self.m(x)}

    items = []
    for k in range(2):
        key = f"ulm_{k:06d}_{19 + k:06d}"
        image = torch.randn(3, 32, 48, generator=g)
        label = torch.randint(0, 19, (32, 48), generator=g)
        label[:3] = 255
        items.append({"image": image, "label": label, "name": key, "path": key})
        gt = trainid_to_labelid(label.numpy().astype(np.uint8))  # 255 -> 0 (unlabeled, ignored)
        (tmp_path / "gt" / "ulm").mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(tmp_path / "gt" / "ulm" / f"{key}_gtFine_labelIds.png")
    names = class_names()
    res = ev.evaluate_model(Wrapped(), items, class_names=names, predictions=tmp_path / "pred")
    scored = score_directories(tmp_path / "pred", tmp_path / "gt")
    assert scored["matrix"] == res["matrix"]
    assert scored["miou"] == pytest.approx(res["miou"], abs=1e-9)
