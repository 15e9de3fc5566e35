"""benchmarks/workflow_time.py reads each job's wall time (Snakemake benchmark files) minus its loop."""

from __future__ import annotations

import importlib.util
import json
import statistics

from spgnet.config import PROJECT_ROOT
from spgnet.workflow.plan import make_plan


def _workflow_time(monkeypatch, root):
    spec = importlib.util.spec_from_file_location("workflow_time", PROJECT_ROOT / "benchmarks" / "workflow_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", root)
    return module


def _tsv(path, seconds):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:{int(seconds):02d}\t100.0\n")


def test_overheads_are_wall_minus_loop_per_job(tmp_path, monkeypatch):
    module = _workflow_time(monkeypatch, tmp_path)
    plan = make_plan("smoke")
    bench = tmp_path / plan.results / "benchmarks"
    run_dir = tmp_path / plan.run_dir("t3-1stage", 0)
    run_dir.joinpath("eval").mkdir(parents=True)
    (run_dir / "train_metrics.json").write_text(json.dumps({"seconds": 10.0}))
    (run_dir / "eval" / "t12-ap.json").write_text(json.dumps({"seconds": 2.5}))
    (run_dir / "eval" / "old.json").write_text(json.dumps({"seconds_per_image": 1.0}))  # no loop figure
    _tsv(bench / "train" / "t3-1stage" / "seed0.tsv", 13.25)
    _tsv(bench / "evaluate" / "t3-1stage" / "seed0" / "t12-ap.tsv", 4.0)
    _tsv(bench / "evaluate" / "t3-1stage" / "seed0" / "old.tsv", 9.0)
    overheads = module.workflow_overheads(plan)
    assert sorted(overheads) == [1.5, 3.25]
    assert statistics.median(overheads) == 2.375


def test_no_benchmark_files_no_overheads(tmp_path, monkeypatch):
    module = _workflow_time(monkeypatch, tmp_path)
    assert module.workflow_overheads(make_plan("smoke")) == []


def test_evaluation_reports_its_loop_time(monkeypatch):
    """``seconds``: the whole loop (here with a slow data set), at least the inference time."""
    import time

    import torch

    from spgnet.engine.evaluation import evaluate

    class SlowData(list):
        def __getitem__(self, index):
            time.sleep(0.2)
            return list.__getitem__(self, index)

    data = SlowData({"image": torch.rand(3, 8, 8), "label": torch.zeros(8, 8, dtype=torch.long), "name": f"i{k}"}
                    for k in range(2))
    result = evaluate.evaluate_model(torch.nn.Conv2d(3, 2, 1), data, class_names=["a", "b"], strategy="GAP")
    assert result["seconds"] >= 0.4
    assert result["seconds"] >= result["seconds_per_image"] * result["num_images"]
