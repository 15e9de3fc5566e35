"""spgnet curves: the validation mIoU panel of runs trained with train.val_every."""

from __future__ import annotations

from PIL import Image

from spgnet.analysis.curves import plot_curves


def _log(tmp_path, name: str, text: str) -> dict:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return {"run": name, "seed": 0, "dataset": "cityscapes", "path": path, "exists": True}


def test_validated_runs_get_a_validation_miou_panel(tmp_path):
    plain = _log(tmp_path, "plain.csv", "step,loss,lr\n1,3.0,0.01\n2,2.5,0.005\n")
    validated = _log(tmp_path, "val.csv", "step,loss,lr,val_miou\n1,3.0,0.01,\n2,2.5,0.005,12.5\n")
    without = plot_curves([plain], tmp_path / "a.png")
    with_val = plot_curves([plain, validated], tmp_path / "b.png")
    height_without, height_with = Image.open(without).size[1], Image.open(with_val).size[1]
    assert height_with > height_without  # a third row of panels: validation mIoU against the step
