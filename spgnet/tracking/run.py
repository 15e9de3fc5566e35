"""Opening runs: the experiment ``spgnet-<profile>``, the parent run of a pipeline invocation, a
resumed run reopened with its recorded parameters, the run's tags, and :func:`start_run`, which
every job calls (the package docstring: the whole design).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from spgnet.tracking.store import (
    INVOCATION_ENV,
    PARENT_RUN_ENV,
    SPOOL_ENV,
    SPOOL_PREFIX,
    _connect,
    _retry,
    _StoreLock,
    _warn,
    tracking_enabled,
    tracking_uri,
)
from spgnet.tracking.trackers import NullTracker, SpoolTracker, Tracker


def _experiment_id(client, name: str, db: Path | None) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if db is not None:  # keep artifacts beside the database, not in the current folder's ./mlruns
        artifact_location = (db.parent / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # created meanwhile by another job
        if experiment is None:
            raise
        return experiment.experiment_id


def _parent_run(client, experiment_id: str, invocation: str, explicit: str | None = None) -> str:
    """The parent run of ``invocation``: found by tag, else created. Under the store lock for
    SQLite, so exactly one parent per invocation; for a remote store, concurrent creators
    settle on the oldest parent and delete their own duplicate."""
    if explicit:
        return explicit
    query = f"tags.`spgnet.parent` = 'true' AND tags.`spgnet.invocation` = '{invocation}'"

    def find() -> list:
        runs = client.search_runs([experiment_id], filter_string=query, max_results=50)
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    found = find()
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=invocation,
        tags={"spgnet.parent": "true", "spgnet.invocation": invocation, "spgnet.kind": "invocation"},
    )
    found = find()
    winner = found[0].info.run_id if found else run.info.run_id
    if winner != run.info.run_id:
        client.delete_run(run.info.run_id)
    return winner


def _git_commit() -> str | None:
    from spgnet.config import PROJECT_ROOT

    head = Path(PROJECT_ROOT) / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_file = Path(PROJECT_ROOT) / ".git" / ref[5:]
            if ref_file.exists():
                return ref_file.read_text().strip()
            packed = Path(PROJECT_ROOT) / ".git" / "packed-refs"
            for line in packed.read_text().splitlines():
                if line.endswith(ref[5:]):
                    return line.split()[0]
            return None
        return ref
    except OSError:
        return None


def _open_run(client, lock: _StoreLock, db: Path | None, experiment_name: str, run_name: str,
              run_tags: dict, resume_run_id: str | None, parent_run_id: str | None = None,
              start_time: int | None = None, strict: bool = False) -> Tracker:
    """Reopen ``resume_run_id`` when this store has it (its recorded params kept, changed ones
    tagged), else create a run (a child of its invocation's parent run when tagged with one)."""
    run_tags = {k: str(v) for k, v in run_tags.items()}
    invocation = run_tags.get("spgnet.invocation")

    def open_run():
        experiment_id = _experiment_id(client, experiment_name, db)
        if resume_run_id and not resume_run_id.startswith(SPOOL_PREFIX):
            try:
                previous = client.get_run(resume_run_id)
            except Exception:  # noqa: BLE001 - not in this store (another URI): start afresh
                previous = None
            if previous is not None and previous.info.experiment_id == experiment_id \
                    and previous.info.lifecycle_stage == "active":
                client.update_run(resume_run_id, status="RUNNING")
                for key, value in run_tags.items():
                    if not key.startswith("mlflow."):
                        client.set_tag(resume_run_id, key, value)
                return (experiment_id, previous.data.tags.get("mlflow.parentRunId"), resume_run_id,
                        dict(previous.data.params))
        parent = None
        if invocation:
            parent = _parent_run(client, experiment_id, invocation, parent_run_id)
            run_tags["mlflow.parentRunId"] = parent
        run = client.create_run(experiment_id, run_name=run_name, tags=run_tags, start_time=start_time)
        return experiment_id, parent, run.info.run_id, {}

    experiment_id, parent, run_id, known = _retry(open_run, lock, "create_run")
    return Tracker(client, run_id, experiment_id, lock, parent, known_params=known, strict=strict,
                   close_parent=bool(parent) and not parent_run_id)


def _run_tags(kind: str, cfg, tags: dict | None) -> dict:
    from spgnet.config import config_hash

    profile = getattr(cfg, "profile", "default")
    run_tags = {
        "spgnet.kind": kind,
        "spgnet.experiment": getattr(cfg, "experiment", ""),
        "spgnet.profile": profile,
        "spgnet.table": getattr(cfg, "table", ""),
        "spgnet.row": getattr(cfg, "row", ""),
        "mlflow.source.name": "spgnet " + kind,
        "mlflow.source.type": "LOCAL",
    }
    if hasattr(cfg, "model") and hasattr(cfg, "train"):
        run_tags["spgnet.config_hash"] = config_hash(cfg.model, cfg.train)
    commit = _git_commit()
    if commit:
        run_tags["mlflow.source.git.commit"] = commit
    invocation = os.environ.get(INVOCATION_ENV) or None
    if invocation:
        run_tags["spgnet.invocation"] = invocation
    run_tags.update({k: str(v) for k, v in (tags or {}).items()})
    return run_tags


def _open_tracker(kind: str, cfg, run_name: str, tags: dict | None, resume_run_id: str | None) -> NullTracker:
    """A :class:`SpoolTracker` (``SPGNET_TRACKING_SPOOL``) or a :class:`Tracker`; a
    :class:`NullTracker` and a warning when neither can be opened."""
    experiment_name = f"spgnet-{getattr(cfg, 'profile', 'default')}"
    spool = os.environ.get(SPOOL_ENV)
    where = spool or tracking_uri()
    try:
        run_tags = _run_tags(kind, cfg, tags)
        if spool:
            return SpoolTracker.open(Path(spool).expanduser().resolve(), experiment_name=experiment_name,
                                     run_name=run_name, tags=run_tags, resume_run_id=resume_run_id)
        client, lock, db = _connect(where)
        return _open_run(client, lock, db, experiment_name, run_name, run_tags, resume_run_id,
                         parent_run_id=os.environ.get(PARENT_RUN_ENV) or None)
    except Exception as err:  # noqa: BLE001 - not installed, unreachable, locked, corrupt...
        _warn(f"run at {where}", err)
        return NullTracker()


@contextlib.contextmanager
def start_run(kind: str, cfg, run_name: str, tags: dict | None = None,
              enabled: bool | None = None, resume_run_id: str | None = None) -> Iterator[NullTracker]:
    """Open an MLflow run for a ``kind`` ("train", "evaluate", ...) job of ``cfg`` (a RunConfig).

    Yields a :class:`Tracker` (a :class:`SpoolTracker` when ``SPGNET_TRACKING_SPOOL`` names a
    folder; a :class:`NullTracker` when ``SPGNET_TRACKING=0``, ``enabled=False`` or the store
    cannot be opened, with a warning). The run is marked FINISHED on exit, FAILED on an exception
    and KILLED on Ctrl-C; the job's own exception propagates, a tracking failure never does.
    ``resume_run_id`` reopens that run (a resumed training run continues its curves) when it
    exists in this store; settings that changed since (``--data-root``, eval settings) keep their
    recorded parameter and get a ``spgnet.changed.<key>`` tag. Otherwise a new run is opened.
    """
    if enabled is None:
        enabled = tracking_enabled()
    if not enabled:
        yield NullTracker()
        return
    tracker = _open_tracker(kind, cfg, run_name, tags, resume_run_id)
    status = "FINISHED"
    try:
        if hasattr(cfg, "to_dict"):
            tracker.log_params(cfg.to_dict())
        yield tracker
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        try:
            tracker.close(status)
        except Exception as err:  # noqa: BLE001 - never hide the run's own exception
            _warn(f"closing run {tracker.run_id}", err)
