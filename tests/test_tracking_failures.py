"""Tracking never ends a job; a reopened run records changed settings; the spool (issue 12 point 4,
issue 11 point 6, issue 12 point 3)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

from spgnet.config import PROJECT_ROOT, resolve
from spgnet import tracking

mlflow = pytest.importorskip("mlflow")

from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402


@pytest.fixture()
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SPGNET_TRACKING", "1")
    for name in ("SPGNET_INVOCATION", "SPGNET_PARENT_RUN_ID", "SPGNET_TRACKING_SPOOL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tracking.store, "_RETRIES", 2)  # transient errors: one retry, not eight
    return uri


def _runs(uri, profile="mini", **kwargs):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[f"spgnet-{profile}"], **kwargs)


def _moved(cfg, root: str):
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=root))


def _toy_train(tmp_path, **kwargs):
    from tests.helpers_train import ToySet, toy_cfg, toy_model, train_with

    cfg = kwargs.pop("cfg", None) or toy_cfg(iterations=2, checkpoint_every=1)
    return train_with(cfg, tmp_path / "run", seed=0, model=toy_model(), dataset=ToySet(), **kwargs)


# --------------------------------------------------------------------------------------------
# Reopened runs whose non-hashed settings changed
# --------------------------------------------------------------------------------------------


def test_reopened_run_with_moved_data_continues_and_records_the_change(store, tmp_path, capsys):
    """A real SQLite store: the run opened with data root A is reopened with data root B."""
    cfg = resolve("t3-1stage", "mini")
    with tracking.start_run("train", cfg, "t3-1stage/train/seed0") as first:
        first.log_metrics({"loss": 2.0}, step=1)
        run_id = first.run_id
    moved = _moved(cfg, "/new/place/cityscapes")
    with tracking.start_run("train", moved, "t3-1stage/train/seed0", resume_run_id=run_id) as again:
        assert again.run_id == run_id
        again.log_metrics({"loss": 1.0}, step=2)
    err = capsys.readouterr().err
    assert "Changing param values" not in err and "warning" not in err
    assert "data.root changed" in err
    row = _runs(store).iloc[0]
    assert len(_runs(store)) == 1 and row["status"] == "FINISHED"
    assert row["params.data.root"] == cfg.data.root  # MLflow keeps the recorded value
    assert row["tags.spgnet.changed.data.root"] == f"{cfg.data.root} -> /new/place/cityscapes"
    history = MlflowClient(store).get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]


def test_resumed_training_with_other_eval_settings_trains_and_tags(store, tmp_path, capsys):
    """Kill a tracked run, change a setting outside the config hash, resume: it trains to the end."""
    from tests.helpers_train import toy_cfg

    cfg = toy_cfg(iterations=3, checkpoint_every=1)
    _toy_train(tmp_path, cfg=cfg, stop_after=1)
    changed = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, scales=(0.75, 1.0)))
    metrics = _toy_train(tmp_path, cfg=changed, resume=True)
    assert metrics["iterations"] == 3 and (tmp_path / "run" / "train_metrics.json").is_file()
    df = _runs(store)
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "FINISHED" and row["tags.spgnet.resumed_from"] == "1"
    assert row["tags.spgnet.changed.eval.scales"] == "[1.0] -> [0.75, 1.0]"
    assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# A tracking failure of any kind is a warning
# --------------------------------------------------------------------------------------------


def _raise(err):
    def fail(*args, **kwargs):
        raise err
    return fail


FAILURES = {  # failure: (MlflowClient method, its error, what the warning says)
    "store unreachable": ("__init__", MlflowException("connection refused: http://nowhere:5000"),
                          "run at sqlite:"),
    "locked sqlite": ("log_batch", MlflowException("(sqlite3.OperationalError) database is locked"),
                      "database is locked"),
    "param conflict": ("log_batch", MlflowException("Changing param values is not allowed. Params were "
                                                    "already logged='[{'key': 'data.root'}]'"),
                       "Changing param values is not allowed"),
    "artifact write": ("log_artifact", PermissionError(13, "Permission denied", "/shared/mlartifacts"),
                       "PermissionError: [Errno 13] Permission denied"),
    "closing the run": ("set_terminated", OSError(5, "Input/output error"), "set_terminated of run"),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_tracking_failure_never_ends_training(store, tmp_path, monkeypatch, capsys, failure):
    method, err, says = FAILURES[failure]
    monkeypatch.setattr(MlflowClient, method, _raise(err))
    metrics = _toy_train(tmp_path)
    run = tmp_path / "run"
    assert metrics["iterations"] == 2
    assert json.loads((run / "train_metrics.json").read_text())["iterations"] == 2
    assert len((run / "train_log.csv").read_text().splitlines()) == 3  # header + 2 steps
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning: MLflow" in line]
    assert warnings and all("the job goes on without it" in line for line in warnings)
    assert says in warnings[0]


def test_failing_calls_warn_once_then_every_twentieth(store, tmp_path, monkeypatch, capsys):
    cfg = resolve("t3-plain", "mini")
    with tracking.start_run("evaluate", cfg, "eval") as tracker:
        monkeypatch.setattr(MlflowClient, "log_batch", _raise(MlflowException("database is locked")))
        for step in range(25):
            tracker.log_metrics({"miou": 1.0}, step=step)
        monkeypatch.undo()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning: MLflow" in line]
    assert len(warnings) == 2 and "(20 calls so far)" in warnings[1]


def test_job_exception_still_propagates(store):
    cfg = resolve("t3-plain", "mini")
    with pytest.raises(ZeroDivisionError):
        with tracking.start_run("train", cfg, "boom"):
            1 / 0
    assert _runs(store).iloc[0]["status"] == "FAILED"


# --------------------------------------------------------------------------------------------
# The spool
# --------------------------------------------------------------------------------------------


_SPOOL_JOB = textwrap.dedent(
    """
    import sys
    from spgnet.config import resolve
    from spgnet.tracking import start_run
    with start_run("train", resolve("t3-plain", "mini"), "t3-plain/train/seed0", tags={"spgnet.seed": 0}) as t:
        t.log_metrics({"loss": 1.5, "lr": 0.01}, step=5)
        t.log_artifact(sys.argv[1])
        t.log_dict({"a": 1}, "config.json")
    print("mlflow imported:", "mlflow" in sys.modules)
    """
)


def test_spooled_job_never_imports_mlflow_and_the_import_writes_the_run(store, tmp_path):
    spool = tmp_path / "spool"
    artifact = tmp_path / "train_log.csv"
    artifact.write_text("step,loss\n5,1.5\n")
    env = dict(os.environ, SPGNET_TRACKING_SPOOL=str(spool), SPGNET_INVOCATION="inv-spool",
               PYTHONPATH=str(PROJECT_ROOT))
    out = subprocess.run([sys.executable, "-c", _SPOOL_JOB, str(artifact)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "mlflow imported: False" in out.stdout
    (record,) = [json.loads(p.read_text()) for p in spool.glob("*.json")]
    assert record["status"] == "FINISHED" and record["params"]["train.lr"] == "0.01"
    assert not (tmp_path / "mlflow.db").exists()

    imported = tracking.import_spool(spool)
    assert len(imported) == 1 and not list(spool.glob("*.json"))
    assert json.loads(next((spool / "imported").glob("*.json")).read_text())["run_id"] == imported[0]
    df = _runs(store)
    row = df[df["tags.spgnet.kind"] == "train"].iloc[0]
    assert row["status"] == "FINISHED" and row["params.train.lr"] == "0.01" and row["metrics.loss"] == 1.5
    assert row["tags.spgnet.invocation"] == "inv-spool" and row["tags.spgnet.seed"] == "0"
    parent = df[df["tags.spgnet.kind"] == "invocation"].iloc[0]
    assert row["tags.mlflow.parentRunId"] == parent["run_id"]
    assert row["start_time"].value // 10**6 == record["start_time"]  # the job's own time, not the import's
    client = MlflowClient(store)
    assert [(m.step, m.value) for m in client.get_metric_history(imported[0], "loss")] == [(5, 1.5)]
    assert {a.path for a in client.list_artifacts(imported[0])} == {"train_log.csv", "config.json"}
    assert tracking.import_spool(spool) == []  # nothing twice


def test_spooled_training_resumes_into_the_same_run_before_and_after_import(store, tmp_path, monkeypatch):
    from tests.helpers_train import toy_cfg

    spool = tmp_path / "spool"
    monkeypatch.setenv("SPGNET_TRACKING_SPOOL", str(spool))
    cfg = toy_cfg(iterations=3, checkpoint_every=1, log_every=1)
    with monkeypatch.context() as killed:  # SIGKILL after iteration 1: the run is never closed
        killed.setattr(tracking.SpoolTracker, "close", lambda self, status="FINISHED": None)
        _toy_train(tmp_path, cfg=cfg, stop_after=1)
    (record,) = [json.loads(p.read_text()) for p in spool.glob("*.json")]
    assert record["status"] == "RUNNING"
    (first,) = tracking.import_spool(spool)  # e.g. the workflow's end after the failure
    assert _runs(store).iloc[0]["status"] == "KILLED"
    _toy_train(tmp_path, cfg=_moved(cfg, "/moved"), stop_after=2, resume=True)  # spooled again, killed
    _toy_train(tmp_path, cfg=_moved(cfg, "/moved"), resume=True)  # same spool record, to the end
    (record,) = [json.loads(p.read_text()) for p in spool.glob("*.json")]
    assert record["resume_run_id"] == first and record["status"] == "FINISHED"
    assert tracking.import_spool(spool) == [first]
    df = _runs(store)
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "FINISHED" and row["tags.spgnet.changed.data.root"].endswith(" -> /moved")
    steps = [m.step for m in MlflowClient(store).get_metric_history(first, "loss")]
    assert steps == [1, 2, 3]


def test_import_that_fails_keeps_the_file(store, tmp_path, monkeypatch, capsys):
    spool = tmp_path / "spool"
    monkeypatch.setenv("SPGNET_TRACKING_SPOOL", str(spool))
    with tracking.start_run("evaluate", resolve("t3-plain", "mini"), "eval") as tracker:
        tracker.log_metrics({"miou": 50.0})
    monkeypatch.setattr(MlflowClient, "create_run", _raise(MlflowException("database is locked")))
    assert tracking.import_spool(spool) == []
    assert len(list(spool.glob("*.json"))) == 1 and "warning: MLflow import of" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    assert len(tracking.import_spool(spool)) == 1
    assert _runs(store).iloc[0]["metrics.miou"] == 50.0


def test_import_into_a_corrupt_store_is_one_line_and_keeps_every_file(tmp_path, monkeypatch, capsys):
    """Issue 22, point 7: `import-spool` on a store that is not a database printed a 60-line traceback."""
    from spgnet.tracking.spool import main

    spool = tmp_path / "spool"
    monkeypatch.setenv("SPGNET_TRACKING_SPOOL", str(spool))
    with tracking.start_run("evaluate", resolve("t3-plain", "mini"), "eval") as tracker:
        tracker.log_metrics({"miou": 50.0})
    corrupt = tmp_path / "mlflow.db"
    corrupt.write_bytes(os.urandom(4096))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{corrupt}")
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", f"sqlite:///{corrupt}", raising=False)
    assert main(["import-spool", str(spool)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"spgnet: cannot open the tracking store sqlite:///{corrupt} (") and err.endswith(
        f"the 1 spooled run stays in {spool}")
    assert len(list(spool.glob("*.json"))) == 1
