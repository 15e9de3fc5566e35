"""The smoke profile end to end through Snakemake (every rule), in a scratch copy of the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spgnet.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

COPIED = ["Snakefile", "workflow", "params", "reports/templates"]


@pytest.fixture(scope="module")
def smoke_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    for item in COPIED:
        source, target = PROJECT_ROOT / item, root / item
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    env = {
        **os.environ,
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
    measured = cells[-7:-1]  # paper / this run pairs of mIoU, #Params, #FLOPs
    for cell in measured:
        assert re.match(r"^-?\d+(\.\d+)?", cell), f"not a number: {cell!r} in {rows[0]}"
    for figure in ("fig5-general.png", "fig6-person-rider.png", "fig7-truck-bus-train.png", "training-curves.png"):
        assert (root / "reports/smoke/figures" / figure).stat().st_size > 0


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
