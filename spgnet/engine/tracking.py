"""MLflow tracking for train and evaluate runs, safe for parallel pipeline jobs.

``start_run(kind, cfg, run_name)`` opens one MLflow run in the experiment ``spgnet-<profile>`` and
yields a :class:`Tracker`; the whole resolved config is logged as flattened parameters
(``train.lr``, ``model.backbones``, ...) when the run opens. The default store is a SQLite
database inside the project (``sqlite:///<project root>/mlflow.db``, artifacts beside it in
``mlartifacts/``); ``MLFLOW_TRACKING_URI`` points it elsewhere (e.g. ``http://host:5000`` for an
``mlflow server``). ``SPGNET_TRACKING=0`` turns every tracker into a no-op.

Grouping: the workflow sets ``SPGNET_INVOCATION`` once per pipeline invocation; every run gets it
as the tag ``spgnet.invocation`` and becomes a child of a parent run of that name (created by the
first job that needs it; ``SPGNET_PARENT_RUN_ID`` names an existing parent instead).

Concurrency: several jobs write to one SQLite file at once. Every MLflow call on a SQLite store
holds an exclusive ``fcntl`` lock on ``<db>.lock`` (so writers never meet inside SQLite, the schema
is created by exactly one process, and the parent run is looked up and created atomically), and
every call is retried with exponential backoff on transient errors ("database is locked",
connection errors of a remote server).

The client is ``MlflowClient`` with explicit run ids, never the global ``mlflow.start_run`` state,
so a train run and an evaluate run can be open in the same process.

Failures: tracking never ends a job. A store that cannot be opened (unreachable server, locked or
corrupt SQLite, MLflow missing) gives a warning on stderr and a :class:`NullTracker`; a call that
fails after its retries (a parameter conflict, an artifact that cannot be written) a warning and
nothing else. The job's own files (``train_log.csv``, the metrics JSON) hold every figure.

Reopened runs: a training resumed with settings outside its checkpoint's config hash changed
(``--data-root``, evaluation settings) keeps the recorded parameter and gets the tag
``spgnet.changed.<key>`` = ``'<recorded> -> <new>'`` (MLflow parameters are immutable).

Spool (``SPGNET_TRACKING_SPOOL=DIR``): a job writes its run as JSON into ``DIR`` (no MLflow import:
``benchmarks/workflow_time.py --overhead`` measures the start-up it saves) and
:func:`import_spool` (``python -m spgnet.engine.tracking import-spool DIR``) writes all of them
into the store at once, with their original timestamps (docs/mlflow.md).
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote

from spgnet.errors import SpgnetError

INVOCATION_ENV = "SPGNET_INVOCATION"
PARENT_RUN_ENV = "SPGNET_PARENT_RUN_ID"
TRACKING_ENV = "SPGNET_TRACKING"
SPOOL_ENV = "SPGNET_TRACKING_SPOOL"
SPOOL_PREFIX = "spool-"
CHANGED_TAG = "spgnet.changed."

_MAX_PARAM_VALUE = 6000  # MLflow's limit on a parameter value
_MAX_KEY = 250
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
_RETRIES = 8


# --------------------------------------------------------------------------------------------
# Store location
# --------------------------------------------------------------------------------------------


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<absolute project root>/mlflow.db``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    from spgnet.config import PROJECT_ROOT

    # An absolute path after "sqlite:///" gives the four slashes of an absolute SQLite URI.
    return "sqlite:///" + Path(PROJECT_ROOT).resolve().joinpath("mlflow.db").as_posix()


def tracking_enabled() -> bool:
    return os.environ.get(TRACKING_ENV, "1").strip().lower() not in ("0", "false", "no", "off", "")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri[len("sqlite:"):]
    if not rest.startswith("///"):
        return None
    path = unquote(rest[3:].split("?", 1)[0])
    if not path or path == ":memory:":
        return None
    return Path("/" + path.lstrip("/")) if rest.startswith("////") else Path(path).resolve()


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.01}}`` -> ``{"train.lr": 0.01}``; lists and tuples stay values."""
    flat: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                flat.update(flatten(value, name))
            else:
                flat[name] = value
    else:
        flat[prefix or "value"] = obj
    return flat


_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /:]")


def _clean_key(key: str) -> str:
    return _BAD_KEY_CHARS.sub("_", str(key))[:_MAX_KEY]


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        text = json.dumps(list(value), default=str)
    elif isinstance(value, dict):
        text = json.dumps(value, default=str, sort_keys=True)
    else:
        text = str(value)
    return text[:_MAX_PARAM_VALUE]


# --------------------------------------------------------------------------------------------
# Locking and retries
# --------------------------------------------------------------------------------------------


class _StoreLock:
    """Exclusive inter-process lock on ``<db>.lock`` (re-entrant within a process)."""

    def __init__(self, db: Path | None):
        self.path = None if db is None else db.with_name(db.name + ".lock")
        self._depth = 0
        self._handle = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        if self._depth == 0:
            import fcntl

            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            self._handle = handle
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                import fcntl

                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
                self._handle.close()
                self._handle = None


_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "unable to open database",
    "disk i/o error",
    "connection",
    "timed out",
    "timeout",
    "temporarily unavailable",
    "too many requests",
    "503",
    "502",
)


def _transient(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}".lower()
    return any(marker in text for marker in _TRANSIENT)


def _retry(fn: Callable[[], Any], lock: _StoreLock, what: str, attempts: int = _RETRIES) -> Any:
    delay = 0.05
    for attempt in range(attempts):
        try:
            with lock():
                return fn()
        except Exception as err:  # noqa: BLE001 - MLflow wraps SQLAlchemy/HTTP errors variously
            if attempt == attempts - 1 or not _transient(err):
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _warn(what: str, err: BaseException | str) -> None:
    """One line on stderr: a tracking failure never ends a job (issue 11 point 6, issue 12 point 4)."""
    reason = err if isinstance(err, str) else _first_line(err)
    print(f"spgnet: warning: MLflow {what} failed ({reason}); the job goes on without it "
          f"(its own files keep every figure)", file=sys.stderr, flush=True)


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------------
# Trackers
# --------------------------------------------------------------------------------------------


class _Params:
    """The parameters one run holds. MLflow's parameters are immutable, so a key logged again with
    another value keeps its recorded value and the change becomes the tag
    ``spgnet.changed.<key>`` = ``'<recorded> -> <new>'`` (e.g. a training resumed with
    ``--data-root`` elsewhere)."""

    def __init__(self, known: dict[str, str] | None = None):
        self.values = dict(known or {})

    def add(self, params: dict) -> tuple[dict[str, str], dict[str, str]]:
        """``(fresh params to log, change tags to set)`` of ``params`` (flattened with dots)."""
        fresh, changed = {}, {}
        for key, value in flatten(params).items():
            key, text = _clean_key(key), _param_value(value)
            old = self.values.get(key)
            if old is None:
                self.values[key] = fresh[key] = text
            elif old != text:
                changed[_clean_key(CHANGED_TAG + key)] = f"{old} -> {text}"[:_MAX_PARAM_VALUE]
        for tag, value in changed.items():
            print(f"spgnet: note: setting {tag[len(CHANGED_TAG):]} changed since the run was recorded "
                  f"({value}); MLflow keeps the recorded value, tag {tag} the change", file=sys.stderr, flush=True)
        return fresh, changed


def _metric_entries(metrics: dict, step: int | None) -> list[tuple[str, float, int, int]]:
    """``(key, value, timestamp ms, step)`` of the numeric leaves of ``metrics``."""
    timestamp = _now_ms()
    entries = []
    for key, value in flatten(metrics).items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            if not hasattr(value, "item"):  # numpy / torch scalars
                continue
            try:
                value = value.item()
            except (ValueError, RuntimeError):
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
        entries.append((_clean_key(key), float(value), timestamp, int(step or 0)))
    return entries


class NullTracker:
    """A tracker that records nothing (``SPGNET_TRACKING=0``, ranks other than 0, a store that
    could not be opened)."""

    run_id: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None

    def log_params(self, params: dict) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        pass

    def set_tags(self, tags: dict) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass


class Tracker(NullTracker):
    """One open MLflow run. Every call retries transient store errors; a call that still fails is a
    warning on stderr (``strict=True``: an exception), never the end of the job. After a failure
    the next calls try once each, without the back-off, until one succeeds."""

    def __init__(self, client, run_id: str, experiment_id: str, lock: _StoreLock,
                 parent_run_id: str | None = None, known_params: dict[str, str] | None = None,
                 strict: bool = False, close_parent: bool = False):
        self._client = client
        self._lock = lock
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self._params = _Params(known_params)
        self._strict = strict
        self._close_parent = close_parent
        self._failures = 0

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            result = _retry(fn, self._lock, what, attempts=1 if self._failures else _RETRIES)
        except Exception as err:  # noqa: BLE001 - any store failure
            if self._strict:
                raise
            self._failures += 1
            if self._failures == 1 or self._failures % 20 == 0:
                _warn(f"{what} of run {self.run_id}" + (f" ({self._failures} calls so far)" if self._failures > 1 else ""), err)
            return None
        self._failures = 0
        return result

    def log_params(self, params: dict) -> None:
        """Log ``params`` flattened with dots; a key logged before with the same value is skipped,
        one with another value keeps its first value and gets a ``spgnet.changed.<key>`` tag."""
        from mlflow.entities import Param

        fresh, changed = self._params.add(params)
        entries = [Param(k, v) for k, v in fresh.items()]
        for start in range(0, len(entries), _PARAMS_PER_BATCH):
            chunk = entries[start:start + _PARAMS_PER_BATCH]
            self._call("log_params", lambda chunk=chunk: self._client.log_batch(self.run_id, params=chunk))
        if changed:
            self.set_tags(changed)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """Log the numeric leaves of ``metrics`` (flattened with dots) at ``step`` (default 0)."""
        self._log_entries(_metric_entries(metrics, step))

    def _log_entries(self, entries) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(key, value, timestamp, step) for key, value, timestamp, step in entries]
        for start in range(0, len(metrics), _METRICS_PER_BATCH):
            chunk = metrics[start:start + _METRICS_PER_BATCH]
            self._call("log_metrics", lambda chunk=chunk: self._client.log_batch(self.run_id, metrics=chunk))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a folder's files) into the run's artifacts."""
        path = Path(path)
        if not path.exists():
            err = SpgnetError(f"cannot log artifact {path}: no such file")
            if self._strict:
                raise err
            _warn("log_artifact", err)
        elif path.is_dir():
            self._call("log_artifacts", lambda: self._client.log_artifacts(self.run_id, str(path), artifact_path))
        else:
            self._call("log_artifact", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        """Write ``obj`` as JSON (or YAML for ``.yaml``/``.yml``) to the artifact ``artifact_file``."""
        target = Path(artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / target.name
            if target.suffix in (".yaml", ".yml"):
                import yaml

                local.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
            else:
                local.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")
            parent = str(target.parent) if str(target.parent) not in ("", ".") else None
            self.log_artifact(local, parent)

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        entries = [RunTag(_clean_key(k), str(v)[:_MAX_PARAM_VALUE]) for k, v in tags.items()]
        for start in range(0, len(entries), _PARAMS_PER_BATCH):
            chunk = entries[start:start + _PARAMS_PER_BATCH]
            self._call("set_tags", lambda chunk=chunk: self._client.log_batch(self.run_id, tags=chunk))

    def close(self, status: str = "FINISHED", end_time: int | None = None) -> None:
        """Mark the run ``status`` (FINISHED, FAILED, KILLED); the parent's end follows its latest child."""
        self._call("set_terminated", lambda: self._client.set_terminated(self.run_id, status, end_time))
        if self.parent_run_id and self._close_parent:
            parent = self.parent_run_id
            self._call("set_terminated", lambda: self._client.set_terminated(parent, "FINISHED", end_time))


class SpoolTracker(NullTracker):
    """Records a run in a JSON file of the spool folder (``SPGNET_TRACKING_SPOOL``) instead of
    MLflow: no MLflow import, no store access in the job. :func:`import_spool` later writes the
    spooled runs into MLflow as if they had been logged directly (same params, tags, metric steps
    and timestamps, artifacts, status, start and end times).

    ``run_id`` is ``"spool-<id>"`` (a checkpoint keeps it): a training resumed with that id appends
    to the same record, or, once imported, reopens the MLflow run it became.
    """

    def __init__(self, path: Path, record: dict):
        self.path = path
        self.record = record
        self.run_id = SPOOL_PREFIX + path.stem
        self._params = _Params(record["params"])
        self._failed = False

    @classmethod
    def open(cls, directory: Path, *, experiment_name: str, run_name: str, tags: dict,
             resume_run_id: str | None) -> "SpoolTracker":
        import uuid

        record = None
        if resume_run_id and resume_run_id.startswith(SPOOL_PREFIX):
            name = resume_run_id[len(SPOOL_PREFIX):] + ".json"
            if (directory / name).is_file():  # not imported yet: continue the same record
                record = json.loads((directory / name).read_text(encoding="utf-8"))
                path = directory / name
            elif (directory / "imported" / name).is_file():  # imported: reopen the MLflow run
                resume_run_id = json.loads((directory / "imported" / name).read_text(encoding="utf-8")).get("run_id")
            else:
                resume_run_id = None
        if record is None:
            path = directory / f"{uuid.uuid4().hex}.json"
            record = {"version": 1, "experiment_name": experiment_name, "run_name": run_name,
                      "start_time": _now_ms(), "end_time": None, "status": "RUNNING",
                      "resume_run_id": resume_run_id, "parent_run_id": os.environ.get(PARENT_RUN_ENV) or None,
                      "tags": {}, "params": {}, "metrics": [], "artifacts": [], "dicts": []}
        record["status"], record["end_time"] = "RUNNING", None
        record["tags"].update({k: str(v) for k, v in tags.items()})
        tracker = cls(path, record)
        tracker._save(raise_errors=True)
        return tracker

    def _save(self, raise_errors: bool = False) -> None:
        from spgnet.atomic import write_json

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, self.record)
        except Exception as err:  # noqa: BLE001 - a full disk, a read-only folder...
            if raise_errors:
                raise
            if not self._failed:
                _warn(f"spool write to {self.path}", err)
            self._failed = True

    def log_params(self, params: dict) -> None:
        fresh, changed = self._params.add(params)
        self.record["params"].update(fresh)
        self.record["tags"].update(changed)
        self._save()

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.record["metrics"].extend(_metric_entries(metrics, step))
        self._save()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Note ``path`` (absolute); :func:`import_spool` copies the file as it is then."""
        path = Path(path).resolve()
        if not path.exists():
            _warn("log_artifact", f"no such file {path}")
            return
        self.record["artifacts"].append([str(path), artifact_path])
        self._save()

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.record["dicts"].append([json.loads(json.dumps(obj, default=str)), artifact_file])
        self._save()

    def set_tags(self, tags: dict) -> None:
        self.record["tags"].update({k: str(v) for k, v in tags.items()})
        self._save()

    def close(self, status: str = "FINISHED") -> None:
        self.record["status"], self.record["end_time"] = status, _now_ms()
        self._save()


# --------------------------------------------------------------------------------------------
# Opening runs
# --------------------------------------------------------------------------------------------


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


def _connect(uri: str):
    """``(MlflowClient, store lock, SQLite file or None)`` of ``uri``."""
    from mlflow.tracking import MlflowClient

    db = sqlite_path(uri)
    lock = _StoreLock(db)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    # Building the client creates (or migrates) the SQLite schema: one process at a time.
    client = _retry(lambda: MlflowClient(tracking_uri=uri), lock, "connect")
    return client, lock, db


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


# --------------------------------------------------------------------------------------------
# The spool: runs recorded by jobs, written into MLflow by one process
# --------------------------------------------------------------------------------------------


def import_spool(directory: str | Path, uri: str | None = None) -> list[str]:
    """Write every run spooled in ``directory`` into MLflow at ``uri`` (default
    :func:`tracking_uri`); returns the MLflow run ids. Each imported file moves to
    ``directory/imported/`` with its ``run_id``; one that fails stays for the next import (a
    warning names it). A record still ``RUNNING`` (its job was killed) is imported as KILLED:
    run this when no job of the spool is running (the workflow's last step)."""
    directory = Path(directory)
    files = sorted(directory.glob("*.json"))
    if not files:
        return []
    records = []
    for file in files:
        try:
            records.append((json.loads(file.read_text(encoding="utf-8")), file))
        except (OSError, ValueError) as err:
            _warn(f"import of {file}", err)
    records.sort(key=lambda item: (item[0].get("start_time") or 0, item[1].name))
    uri = uri or tracking_uri()
    client, lock, db = _connect(uri)
    done = []
    for record, file in records:
        try:
            tracker = _open_run(client, lock, db, record["experiment_name"], record["run_name"],
                                record["tags"], record.get("resume_run_id"), record.get("parent_run_id"),
                                start_time=record.get("start_time"), strict=True)
            tracker.log_params(record["params"])
            tracker._log_entries([tuple(entry) for entry in record["metrics"]])
            for path, artifact_path in record["artifacts"]:
                if Path(path).exists():
                    tracker.log_artifact(path, artifact_path)
                else:  # removed since the job ran: the run keeps everything else
                    _warn(f"import of artifact {path} of {file}", "no such file any more")
            for obj, artifact_file in record["dicts"]:
                tracker.log_dict(obj, artifact_file)
            status = "KILLED" if record["status"] == "RUNNING" else record["status"]
            tracker.close(status, record.get("end_time") or _now_ms())
        except Exception as err:  # noqa: BLE001
            _warn(f"import of {file} into {uri}", err)
            continue
        from spgnet.atomic import write_json

        record["run_id"] = tracker.run_id
        write_json(directory / "imported" / file.name, record)
        file.unlink()
        done.append(tracker.run_id)
    return done


def search_runs(profile: str, filter_string: str = "", **kwargs):
    """``mlflow.search_runs`` over ``spgnet-<profile>`` in :func:`tracking_uri` (a DataFrame)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.search_runs(experiment_names=[f"spgnet-{profile}"], filter_string=filter_string, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """``python -m spgnet.engine.tracking import-spool DIR``: :func:`import_spool`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m spgnet.engine.tracking", description=main.__doc__)
    parser.add_argument("command", choices=["import-spool"])
    parser.add_argument("directory", help="the spool folder (SPGNET_TRACKING_SPOOL of the jobs)")
    args = parser.parse_args(argv)
    if not Path(args.directory).is_dir():
        print(f"spgnet: {args.directory}: no such spool folder", file=sys.stderr)
        return 2
    left = len(list(Path(args.directory).glob("*.json")))
    runs = import_spool(args.directory)
    print(f"imported {len(runs)} of {left} spooled runs into {tracking_uri()}", file=sys.stderr)
    return 0 if len(runs) == left else 1


if __name__ == "__main__":
    sys.exit(main())
