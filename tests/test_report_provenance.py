"""The report marks every cell whose run differs from the profile's settings (issue 20: it once
showed a 6-iteration, batch-2 CPU run on synthetic data as Table 9's cell of the paper profile)."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

from spgnet.analysis import report
from spgnet.analysis.report.provenance import run_deviations
from spgnet.config import load_profile, load_registry, resolve
from spgnet.workflow.plan import make_plan
from tests.test_report import _eval, _row, _section


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _metrics(iterations, batch, crop, device, synthetic, dataset="cityscapes", split="train") -> dict:
    return {"iterations": iterations, "device": device, "final_loss": 1.0, "seconds": 1.0,
            "schedule": {"dataset": dataset, "split": split, "crop": crop, "batch_size": batch,
                         "iterations": iterations, "device": device},
            "data": {"root": "somewhere", "synthetic": synthetic}}


def test_run_deviations_name_each_difference():
    cfg = resolve("t9-r50-d256", load_profile("paper", data_root="/data"))
    assert run_deviations(_metrics(80000, 8, 769, "cuda:3", False), cfg, profile_synthetic=False) == []
    assert run_deviations(_metrics(6, 2, 769, "cpu", True), cfg, profile_synthetic=False) == [
        "6 of 80000 iterations", "batch 2 not 8", "cpu not cuda", "synthetic data"]
    assert run_deviations(_metrics(80000, 8, 513, "cuda", False, split="trainval"), cfg, False) == [
        "split trainval not train", "crop 513 not 769"]
    # a record from before the schedule keys: what it holds is compared
    assert run_deviations({"iterations": 80000, "device": "cpu"}, cfg, False) == ["cpu not cuda"]


def test_the_paper_report_of_a_rehearsal_marks_every_cell_and_calls_synthetic_data_synthetic(tmp_path):
    data = tmp_path / "data"
    (data / "cityscapes").mkdir(parents=True)
    (data / "cityscapes" / "spgnet_synthetic.json").write_text("{}")  # make-synthetic's manifest
    plan = make_plan("paper", data_root=str(data))
    results = tmp_path / "results"

    def at(plan_path: str) -> Path:
        return results / Path(plan_path).relative_to(plan.results)

    _write(at(plan.eval_json("t9-r50-d256", 0)), _eval("t9-r50-d256", 12.5))
    _write(at(f"{plan.run_dir('t9-r50-d256', 0)}/train_metrics.json"), _metrics(6, 2, 769, "cpu", True))
    _write(at(plan.eval_json("t8-r50-ohem", 0)), _eval("t8-r50-ohem", 40.0))
    _write(at(f"{plan.run_dir('t8-r50-ohem', 0)}/train_metrics.json"), _metrics(80000, 8, 769, "cuda", False))
    out = tmp_path / "tables.md"
    args = Namespace(profile="paper", data_root=str(data), results=str(results), out=str(out), seeds=[0])
    assert report.main(args) == 0
    text = out.read_text(encoding="utf-8")

    table9 = _section(text, "Table 9.")
    assert "12.50 ≠ 6 of 80000 iterations, batch 2 not 8, cpu not cuda, synthetic data" in _row(table9, "t9-r50-d256")
    row = _row(_section(text, "Table 8."), "t8-r50-ohem")
    assert "40.00 |" in row and "≠" not in row  # the run the profile describes: no mark
    schedule = text[text.index("**Schedule**"):text.index("**How to read")]
    runs = {line.split("|")[1].strip(): line for line in schedule.splitlines() if line.startswith("| `")}
    assert runs["`t9-r50-d256`"].endswith("| ≠ 6 of 80000 iterations, batch 2 not 8, cpu not cuda, synthetic data |")
    assert runs["`t8-r50-ohem`"].endswith("| as planned |")
    assert runs["`t3-1stage`"].endswith("| not run yet |")
    assert f"cityscapes: `{data}/cityscapes`, synthetic: `spgnet make-synthetic` wrote this tree" in text
    assert f"voc: `{data}/VOCdevkit/VOC2012`, real data" in text


def test_per_class_cells_of_a_deviating_run_carry_the_mark(tmp_path):
    plan = make_plan("smoke", seeds=[0])
    results = tmp_path / "results"
    names = load_registry()["t2-spgnet"].paper.per_class
    at = lambda p: results / Path(p).relative_to(plan.results)  # noqa: E731
    _write(at(plan.eval_json("t2-spgnet", 0)), _eval("t2-spgnet", 30.0, "val", {c: 10.0 for c in names}))
    _write(at(f"{plan.run_dir(plan.evaluations['t2-spgnet'].run, 0)}/train_metrics.json"),
           _metrics(1, 2, 97, "cpu", True, split="trainval"))
    out = tmp_path / "tables.md"
    assert report.main(Namespace(profile="smoke", data_root=None, results=str(results), out=str(out), seeds=[0])) == 0
    table2 = _section(out.read_text(encoding="utf-8"), "Table 2.")
    assert "| truck | 78.0 | 76.8 | 67.3 | 10.00 ≠ |" in table2
