"""The tracking store of a checkout whose folder name holds a percent-escape or a space stays in that
checkout (issue 22, case 9): the SQLite URI is read as SQLAlchemy reads it (no percent-decoding),
the artifact location is a percent-encoded file URI that MLflow decodes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spgnet.config import PROJECT_ROOT
from spgnet.tracking.store import sqlite_path

pytest.importorskip("mlflow")

_JOB = textwrap.dedent(
    """
    import sys
    from spgnet.config import resolve
    from spgnet.tracking import start_run
    with start_run("train", resolve("t3-plain", "mini"), "t3-plain/train/seed0") as tracker:
        tracker.log_metrics({"loss": 1.5}, step=1)
        tracker.log_artifact(sys.argv[1])
    """
)


@pytest.mark.parametrize("name", ["spgnet-repro%20copy", "spgnet rëpro copy"])
def test_the_store_and_its_artifacts_stay_in_the_checkout(tmp_path, name):
    checkout = tmp_path / name
    (checkout / "params").parent.mkdir(parents=True, exist_ok=True)
    os.symlink(PROJECT_ROOT / "params", checkout / "params")
    artifact = checkout / "train_log.csv"
    artifact.write_text("step,loss\n1,1.5\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SPGNET_"))}
    env.update(SPGNET_ROOT=str(checkout), PYTHONPATH=str(PROJECT_ROOT), SPGNET_TRACKING="1", PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, "-c", _JOB, str(artifact)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "warning" not in run.stderr, run.stderr[-2000:]
    assert (checkout / "mlflow.db").is_file()
    logged = list((checkout / "mlartifacts").rglob("train_log.csv"))
    assert len(logged) == 1 and logged[0].read_text() == "step,loss\n1,1.5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no decoded sibling folder


def test_a_sqlite_uri_is_read_without_percent_decoding():
    assert sqlite_path("sqlite:////data/spgnet-repro%20copy/mlflow.db") == Path("/data/spgnet-repro%20copy/mlflow.db")
