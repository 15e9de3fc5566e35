"""MLflow tracking: runs, params, metrics, artifacts, grouping, 4 concurrent writers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from spgnet.config import PROJECT_ROOT, resolve
from spgnet import tracking

mlflow = pytest.importorskip("mlflow")


@pytest.fixture()
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # absolute path: four slashes
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SPGNET_TRACKING", "1")
    monkeypatch.delenv("SPGNET_INVOCATION", raising=False)
    monkeypatch.delenv("SPGNET_PARENT_RUN_ID", raising=False)
    return uri


def _runs(uri, profile="mini", **kwargs):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[f"spgnet-{profile}"], **kwargs)


def test_tracking_uri_default_and_override(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.tracking_uri()
    assert uri == "sqlite:///" + (PROJECT_ROOT.resolve() / "mlflow.db").as_posix()
    assert uri.startswith("sqlite:////")
    assert tracking.sqlite_path(uri) == PROJECT_ROOT.resolve() / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")
    assert tracking.tracking_uri() == "http://localhost:5000"
    assert tracking.sqlite_path("http://localhost:5000") is None


def test_flatten():
    assert tracking.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": None,
    }


def test_disabled_tracker_is_noop(tmp_path, monkeypatch):
    monkeypatch.setenv("SPGNET_TRACKING", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'never.db'}")
    cfg = resolve("t3-plain", "mini")
    with tracking.start_run("train", cfg, "noop") as tracker:
        tracker.log_params({"a": 1})
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.log_dict({"x": 1}, "x.json")
        assert tracker.run_id is None
    assert not (tmp_path / "never.db").exists()


def test_run_logs_config_metrics_artifacts(store, tmp_path):
    cfg = resolve("t3-spg-sigmoid", "mini")
    artifact = tmp_path / "metrics.json"
    artifact.write_text('{"miou": 0.5}')
    with tracking.start_run("evaluate", cfg, "t3-spg-sigmoid/eval", tags={"seed": 0}) as tracker:
        for step in range(3):
            tracker.log_metrics({"loss": 1.0 / (step + 1), "per_class": {"road": 0.9, "name": "skip"}}, step=step)
        tracker.log_metrics({"miou": 0.5})
        tracker.log_params({"extra": {"k": "v"}})
        tracker.log_params({"train.lr": 0.01})  # same value again: silently skipped
        tracker.log_artifact(artifact)
        tracker.log_dict({"confusion": [[1, 0], [0, 1]]}, "eval/confusion.json")
        run_id = tracker.run_id
    df = _runs(store)
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "FINISHED"
    assert row["tags.spgnet.kind"] == "evaluate"
    assert row["tags.spgnet.experiment"] == "t3-spg-sigmoid"
    assert row["tags.seed"] == "0"
    assert row["params.train.lr"] == "0.01"
    assert row["params.model.link"] == "spg_sigmoid"
    assert row["params.model.backbones"] == '["resnet18", "resnet18"]'
    assert row["params.extra.k"] == "v"
    assert row["metrics.miou"] == 0.5
    assert row["metrics.per_class.road"] == 0.9
    client = mlflow.tracking.MlflowClient(store)
    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2]
    names = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "eval")}
    assert {"metrics.json", "eval/confusion.json"} <= names
    # Artifacts land beside the database, not in the current folder.
    assert row["artifact_uri"].startswith((tmp_path / "mlartifacts").as_uri())


def test_failed_run_is_marked(store):
    cfg = resolve("t3-plain", "mini")
    with pytest.raises(ValueError):
        with tracking.start_run("train", cfg, "boom"):
            raise ValueError("boom")
    assert _runs(store).iloc[0]["status"] == "FAILED"


_WORKER = textwrap.dedent(
    """
    import sys
    from spgnet.config import resolve
    from spgnet.tracking import start_run
    cfg = resolve("t3-plain", "mini")
    worker = sys.argv[1]
    for k in range(3):
        with start_run("train", cfg, f"w{worker}-{k}") as t:
            for step in range(4):
                t.log_metrics({"loss": float(step), "worker": float(worker)}, step=step)
            t.log_dict({"worker": worker, "k": k}, "metrics.json")
    """
)


def test_four_concurrent_writers_lose_no_runs(store, tmp_path):
    """4 processes open 3 runs each on one fresh SQLite file (schema creation included)."""
    env = dict(os.environ, SPGNET_INVOCATION="inv-test", PYTHONWARNINGS="ignore")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    procs = [
        subprocess.Popen([sys.executable, str(script), str(i)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert "database is locked" not in err
    df = _runs(store)
    children = df[df["tags.spgnet.kind"] == "train"]
    parents = df[df["tags.spgnet.kind"] == "invocation"]
    assert sorted(children["tags.mlflow.runName"]) == sorted(f"w{i}-{k}" for i in range(4) for k in range(3))
    assert (children["status"] == "FINISHED").all()
    assert (children["metrics.loss"] == 3.0).all()
    assert len(parents) == 1  # exactly one parent run for the invocation
    assert parents.iloc[0]["tags.mlflow.runName"] == "inv-test"
    assert (children["tags.mlflow.parentRunId"] == parents.iloc[0]["run_id"]).all()
    assert (df["tags.spgnet.invocation"] == "inv-test").all()
    grouped = _runs(store, filter_string="tags.`spgnet.invocation` = 'inv-test'")
    assert len(grouped) == 13
