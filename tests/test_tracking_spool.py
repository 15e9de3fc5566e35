"""One spool folder per workflow invocation (spgnet.tracking.spool; issue 22, case 2, snakemake#2225):
an import never reads the records of an invocation that still runs, two imports at once import
each record once, and a resumed training continues the record an ended invocation left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from spgnet import tracking
from spgnet.config import PROJECT_ROOT, resolve
from spgnet.tracking.spool import INVOCATION_LOCK, hold_invocation, import_invocations

mlflow = pytest.importorskip("mlflow")

from tests.test_tracking_failures import store  # noqa: E402,F401 - the fixture: a SQLite store in tmp_path


def _spool_a_run(folder, monkeypatch, name: str) -> None:
    """One finished evaluate run spooled into ``folder`` (an invocation folder with its lock file)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INVOCATION_LOCK).touch()
    with monkeypatch.context() as env:
        env.setenv("SPGNET_TRACKING_SPOOL", str(folder))
        env.setenv("SPGNET_INVOCATION", folder.name)
        with tracking.start_run("evaluate", resolve("t3-plain", "mini"), name) as tracker:
            tracker.log_metrics({"miou": 50.0})


def _runs(uri):
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["spgnet-mini"])
    return runs[runs["tags.spgnet.kind"] == "evaluate"] if len(runs) else runs


_HOLD = "import sys, time; from spgnet.tracking.spool import hold_invocation; h = hold_invocation(sys.argv[1]); " \
        "print('held' if h else 'busy', flush=True); time.sleep(600)"


def test_an_import_never_reads_the_folder_of_an_invocation_that_still_runs(store, tmp_path, monkeypatch):
    root = tmp_path / "mlflow-spool"
    _spool_a_run(root / "running", monkeypatch, "of the running invocation")
    _spool_a_run(root / "ended", monkeypatch, "of the ended invocation")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(root / "running")], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
    try:
        assert holder.stdout.readline().strip() == "held"
        runs, left = import_invocations(root)
        assert len(runs) == 1 and left == 0
        assert list(_runs(store)["tags.mlflow.runName"]) == ["of the ended invocation"]
        assert len(list((root / "running").glob("*.json"))) == 1  # untouched
    finally:
        holder.kill()
        holder.wait()
    runs, left = import_invocations(root)  # the invocation has ended: its records are imported now
    assert len(runs) == 1 and left == 0
    assert sorted(_runs(store)["tags.mlflow.runName"]) == ["of the ended invocation", "of the running invocation"]


def test_the_invocations_own_folder_is_imported_while_it_holds_the_lock(store, tmp_path, monkeypatch):
    root = tmp_path / "mlflow-spool"
    _spool_a_run(root / "mine", monkeypatch, "mine")
    held = hold_invocation(root / "mine")
    assert held is not None and hold_invocation(root / "mine") is None  # a second holder waits its turn
    try:
        runs, left = import_invocations(root, own=root / "mine")
    finally:
        held.close()
    assert len(runs) == 1 and left == 0 and list(_runs(store)["status"]) == ["FINISHED"]


_IMPORT = textwrap.dedent(
    """
    import sys
    from spgnet.tracking.spool import import_invocations
    runs, left = import_invocations(sys.argv[1])
    print(len(runs), left)
    """
)


def test_two_imports_at_once_import_each_record_once(store, tmp_path, monkeypatch):
    """What two workflows ending together do: each record becomes one MLflow run, none KILLED."""
    root = tmp_path / "mlflow-spool"
    for index in range(6):
        _spool_a_run(root / f"invocation-{index}", monkeypatch, f"run {index}")
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    importers = [subprocess.Popen([sys.executable, "-c", _IMPORT, str(root)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [importer.communicate(timeout=300) for importer in importers]
    assert all(importer.returncode == 0 for importer in importers), outputs
    counts = [tuple(map(int, out.split())) for out, _ in outputs]
    assert sum(imported for imported, _ in counts) == 6 and all(left == 0 for _, left in counts)
    runs = _runs(store)
    assert sorted(runs["tags.mlflow.runName"]) == [f"run {index}" for index in range(6)]
    assert set(runs["status"]) == {"FINISHED"}


def test_a_resumed_training_continues_the_record_an_ended_invocation_left(tmp_path):
    from spgnet.tracking.trackers import SpoolTracker

    root = tmp_path / "mlflow-spool"
    first = SpoolTracker.open(root / "killed", experiment_name="spgnet-mini", run_name="t3-plain/train/seed0",
                              tags={}, resume_run_id=None)
    first.log_metrics({"loss": 2.0}, step=1)  # then the invocation is killed: the record stays RUNNING
    time.sleep(0.01)
    again = SpoolTracker.open(root / "next", experiment_name="spgnet-mini", run_name="t3-plain/train/seed0",
                              tags={}, resume_run_id=first.run_id)
    assert again.run_id == first.run_id and again.path.parent == root / "next"
    assert not list((root / "killed").glob("*.json"))  # moved, so it is imported once
    record = json.loads(again.path.read_text())
    assert record["metrics"] and record["metrics"][0][1] == 2.0 and record["status"] == "RUNNING"
