"""The smoke profile end to end through Snakemake (every rule), in a scratch copy of the project."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers_workflow import copy_project

# One worker runs the whole module, so the smoke workflow (module fixture) runs once under xdist.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smoke")]

@pytest.fixture(scope="module")
def smoke_project(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("smoke"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPGNET_TRACKING")},  # tracking on, as a user runs it
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SPGNET_ROOT": str(root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
    }
    run = subprocess.run(["snakemake", "--cores", "2", "reproduce_all", "--config", "profile=smoke"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    return root, env


def test_tables_md_holds_all_twelve_tables_with_numbers(smoke_project):
    root, _ = smoke_project
    text = (root / "reports/smoke/tables.md").read_text()
    for table in range(1, 13):
        assert re.search(rf"^## Table {table}\. ", text, re.M), f"Table {table} missing"
    # every cell of a row the smoke profile ran is a number
    rows = [line for line in text.splitlines() if line.startswith("|") and line.rstrip().endswith("`t3-1stage` |")]
    assert rows, "no row for t3-1stage"
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # paper / this run pairs of mIoU, #Params, #FLOPs; after the mIoU pair, the distance to the references
    measured = cells[-8:-6] + cells[-5:-1]
    for cell in measured:
        assert re.match(r"^-?\d+(\.\d+)?", cell), f"not a number: {cell!r} in {rows[0]}"
    assert re.match(r"^[+-]\d+\.\d\d / [+-]\d+\.\d\d$", cells[-6]), rows[0]
    for figure in ("fig5-general.png", "fig6-person-rider.png", "fig7-truck-bus-train.png", "training-curves.png"):
        assert (root / "reports/smoke/figures" / figure).stat().st_size > 0


def test_the_training_job_scores_its_untrained_network_as_spgnet_baseline_does(smoke_project, tmp_path):
    """The untrained reference comes from the training job (--untrained-out), before its first
    step; it is the score `spgnet baseline untrained` gives the same run and seed on its own."""
    import json

    root, env = smoke_project
    written = json.loads((root / "results/smoke/runs/t3-1stage/seed0/untrained.json").read_text())
    alone = tmp_path / "alone.json"
    run = subprocess.run(["spgnet", "baseline", "untrained", "t3-1stage", "--profile", "smoke", "--seed", "0",
                          "--out", str(alone)], cwd=root, env={**env, "SPGNET_TRACKING": "0"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = json.loads(alone.read_text())
    assert written["kind"] == "untrained" and written["seed"] == 0 and written["split"] == "val"
    assert written["miou"] == expected["miou"] and written["per_class"] == expected["per_class"]


def test_the_training_job_evaluates_its_row_as_spgnet_evaluate_does(smoke_project, tmp_path):
    """evaluate_in_train_job: the run's own evaluation, written by its training job from the
    checkpoint it saved, is what `spgnet evaluate` writes for that checkpoint (same bytes but timings)."""
    import json

    root, env = smoke_project
    run_dir = root / "results/smoke/runs/t3-1stage/seed0"
    alone = tmp_path / "t3-1stage.json"
    run = subprocess.run(["spgnet", "evaluate", "t3-1stage", "--profile", "smoke", "--checkpoint",
                          "results/smoke/runs/t3-1stage/seed0/checkpoint.pt", "--out", str(alone),
                          "--predictions", str(tmp_path / "t3-1stage-predictions")],
                         cwd=root, env={**env, "SPGNET_TRACKING": "0"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    timing = {"seconds", "seconds_per_image", "threads"}  # measured, not computed
    written, expected = (json.loads(path.read_text()) for path in (run_dir / "eval/t3-1stage.json", alone))
    assert {k: v for k, v in written.items() if k not in timing} == {k: v for k, v in expected.items() if k not in timing}
    name = "t3-1stage.confusion.json"
    assert (run_dir / "eval" / name).read_bytes() == (tmp_path / name).read_bytes()
    predictions = sorted(p.name for p in (run_dir / "eval/t3-1stage-predictions").iterdir())
    assert predictions and all((run_dir / "eval/t3-1stage-predictions" / n).read_bytes()
                               == (tmp_path / "t3-1stage-predictions" / n).read_bytes() for n in predictions)


def test_second_run_has_nothing_to_do(smoke_project):
    root, env = smoke_project
    again = subprocess.run(["snakemake", "--cores", "2", "reproduce_all", "--config", "profile=smoke"],
                           cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def test_runs_are_recorded_in_mlflow(smoke_project):
    root, _ = smoke_project
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) >= 7 + 9  # the smoke profile's training runs and evaluations


def _dry_run_jobs(root, env, *config: str, printed: list | None = None) -> dict[str, int]:
    """rule -> job count of a dry run of reproduce_all (Snakemake's "Job stats" table)."""
    run = subprocess.run(["snakemake", "-n", "-p", "--cores", "2", "reproduce_all", "--config", "profile=smoke", *config],
                         cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    text = run.stdout + run.stderr
    if printed is not None:
        printed.append(text)
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def test_a_changed_setting_or_a_lost_output_reruns_only_what_depends_on_it(smoke_project):
    root, env = smoke_project
    registry = root / "params/experiments.yaml"
    original = registry.read_text()
    try:
        # one experiment's setting: t11-fpn's decoder width (its run and its evaluation only)
        registry.write_text(original.replace("model: {decoder: fpn, gap: false}",
                                             "model: {decoder: fpn, gap: false, channels: 64}", 1))
        jobs = _dry_run_jobs(root, env)
        # (the smoke profile evaluates a run's own row in its training job: evaluate_in_train_job)
        assert jobs.get("train") == 1 and "evaluate" not in jobs, jobs
        assert set(jobs) <= {"train", "curves", "report", "reproduce_all"}, jobs
    finally:
        registry.write_text(original)
    # a workflow interrupted during one evaluation (so before the report): started again, only
    # that evaluation and the report run
    unfinished = [root / "results/smoke/runs/t3-1stage/seed0/eval/t12-gap.json", root / "reports/smoke/tables.md"]
    saved = {path: path.read_bytes() for path in unfinished}
    for path in unfinished:
        path.unlink()
    try:
        jobs = _dry_run_jobs(root, env)
        assert jobs.get("evaluate") == 1 and jobs.get("report") == 1 and "train" not in jobs, jobs
    finally:
        for path, data in saved.items():
            path.write_bytes(data)


def test_a_setting_changed_from_the_command_line_reaches_and_reruns_only_its_jobs(smoke_project):
    """--config set={RUN: [SECTION.KEY=VALUE]}: the run's train, evaluate jobs get --set, nothing else reruns."""
    root, env = smoke_project
    printed = []
    jobs = _dry_run_jobs(root, env, "set={t11-fpn: [train.lr=0.02]}", printed=printed)
    # (its training job also rescores its untrained network and evaluates its own row)
    assert jobs.get("train") == 1 and set(jobs) <= {"train", "curves", "report", "reproduce_all"}, jobs
    commands = [line for line in printed[0].splitlines() if "spgnet train" in line or "spgnet evaluate" in line]
    assert len(commands) == 1 and all("t11-fpn" in c and "--set train.lr=0.02" in c for c in commands), commands
    # a run with a separate evaluation (t3-1stage's GAP and TILED rows): train and both get --set
    printed = []
    jobs = _dry_run_jobs(root, env, "set={t3-1stage: [train.lr=0.02]}", printed=printed)
    assert jobs.get("train") == 1 and jobs.get("evaluate") == 2, jobs
    commands = [line for line in printed[0].splitlines() if "spgnet train" in line or "spgnet evaluate" in line]
    assert len(commands) == 3 and all("--set train.lr=0.02" in c for c in commands), commands
    bad = subprocess.run(["snakemake", "-n", "--cores", "1", "--config", "profile=smoke", "set={t99: [train.lr=1]}"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "set: unknown training run 't99'" in bad.stderr


def test_trained_here_table_has_measured_cells(smoke_project):
    root, _ = smoke_project
    text = (root / "reports/smoke/tables.md").read_text()
    section = text.split("## Table 1 methods trained by this pipeline", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in section.splitlines() if line.rstrip().endswith("`t1-bisenet` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    miou, above, params, flops, seconds = cells[-6:-1]
    assert re.match(r"^[+-]\d+\.\d\d / [+-]\d+\.\d\d$", above), row
    for cell in (miou, params, flops, seconds):
        assert re.match(r"^\d+(\.\d+)?", cell), f"not a number: {cell!r} in {row}"


def test_snakemake_html_report(smoke_project):
    root, env = smoke_project
    out = root / "snakemake-report.zip"
    run = subprocess.run(["snakemake", "--cores", "1", "--report", str(out), "--config", "profile=smoke"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    import zipfile

    names = zipfile.ZipFile(out).namelist()
    assert any(n.endswith("report.html") for n in names), names[:20]
    assert any(n.endswith("tables.md") for n in names) and any(n.endswith("fig5-general.png") for n in names)
