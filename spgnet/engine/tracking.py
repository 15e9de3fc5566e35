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
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote

from spgnet.errors import SpgnetError

INVOCATION_ENV = "SPGNET_INVOCATION"
PARENT_RUN_ENV = "SPGNET_PARENT_RUN_ID"
TRACKING_ENV = "SPGNET_TRACKING"

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


def _retry(fn: Callable[[], Any], lock: _StoreLock, what: str) -> Any:
    delay = 0.05
    for attempt in range(_RETRIES):
        try:
            with lock():
                return fn()
        except Exception as err:  # noqa: BLE001 - MLflow wraps SQLAlchemy/HTTP errors variously
            if attempt == _RETRIES - 1 or not _transient(err):
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Trackers
# --------------------------------------------------------------------------------------------


class NullTracker:
    """A tracker that records nothing (``SPGNET_TRACKING=0``, ranks other than 0)."""

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


class Tracker(NullTracker):
    """One open MLflow run. All methods retry transient store errors."""

    def __init__(self, client, run_id: str, experiment_id: str, lock: _StoreLock,
                 parent_run_id: str | None = None):
        self._client = client
        self._lock = lock
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self._params: dict[str, str] = {}

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        return _retry(fn, self._lock, what)

    def log_params(self, params: dict) -> None:
        """Log ``params`` flattened with dots; a key logged before with the same value is skipped,
        one with a different value keeps its first value (MLflow parameters are immutable)."""
        from mlflow.entities import Param

        fresh = []
        for key, value in flatten(params).items():
            key, text = _clean_key(key), _param_value(value)
            if key in self._params:
                if self._params[key] != text:
                    warnings.warn(f"MLflow parameter '{key}' already logged as '{self._params[key]}'; "
                                  f"ignoring '{text}'", RuntimeWarning, stacklevel=2)
                continue
            self._params[key] = text
            fresh.append(Param(key, text))
        for start in range(0, len(fresh), _PARAMS_PER_BATCH):
            chunk = fresh[start:start + _PARAMS_PER_BATCH]
            self._call("log_params", lambda chunk=chunk: self._client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """Log the numeric leaves of ``metrics`` (flattened with dots) at ``step`` (default 0)."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        entries = []
        for key, value in flatten(metrics).items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                if hasattr(value, "item"):  # numpy / torch scalars
                    try:
                        value = value.item()
                    except (ValueError, RuntimeError):
                        continue
                else:
                    continue
            value = float(value)
            entries.append(Metric(_clean_key(key), value, timestamp, int(step or 0)))
        for start in range(0, len(entries), _METRICS_PER_BATCH):
            chunk = entries[start:start + _METRICS_PER_BATCH]
            self._call("log_metrics", lambda chunk=chunk: self._client.log_batch(self.run_id, metrics=chunk))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file (or a folder's files) into the run's artifacts."""
        path = Path(path)
        if not path.exists():
            raise SpgnetError(f"cannot log artifact {path}: no such file")
        if path.is_dir():
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


def _parent_run(client, experiment_id: str, invocation: str) -> str:
    """The parent run of ``invocation``: found by tag, else created. Under the store lock for
    SQLite, so exactly one parent per invocation; for a remote store, concurrent creators
    settle on the oldest parent and delete their own duplicate."""
    explicit = os.environ.get(PARENT_RUN_ENV)
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


@contextlib.contextmanager
def start_run(kind: str, cfg, run_name: str, tags: dict | None = None,
              enabled: bool | None = None, resume_run_id: str | None = None) -> Iterator[NullTracker]:
    """Open an MLflow run for a ``kind`` ("train", "evaluate", ...) job of ``cfg`` (a RunConfig).

    Yields a :class:`Tracker` (a :class:`NullTracker` when ``SPGNET_TRACKING=0`` or
    ``enabled=False``). The run is marked FINISHED on exit, FAILED on an exception and KILLED on
    Ctrl-C; the exception propagates. ``resume_run_id`` reopens that run (a resumed training run
    continues its curves) when it exists in this store; otherwise a new run is opened.
    """
    if enabled is None:
        enabled = tracking_enabled()
    if not enabled:
        yield NullTracker()
        return

    try:
        from mlflow.tracking import MlflowClient
    except ImportError as err:  # pragma: no cover - mlflow is a dependency
        raise SpgnetError(f"MLflow is not installed ({err}); set SPGNET_TRACKING=0 to run without it") from None

    uri = tracking_uri()
    db = sqlite_path(uri)
    lock = _StoreLock(db)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    # Building the client creates (or migrates) the SQLite schema: one process at a time.
    client = _retry(lambda: MlflowClient(tracking_uri=uri), lock, "connect")

    from spgnet.config import config_hash

    profile = getattr(cfg, "profile", "default")
    experiment_name = f"spgnet-{profile}"
    invocation = os.environ.get(INVOCATION_ENV) or None
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
    if invocation:
        run_tags["spgnet.invocation"] = invocation
    run_tags.update({k: str(v) for k, v in (tags or {}).items()})

    def open_run():
        experiment_id = _experiment_id(client, experiment_name, db)
        if resume_run_id:
            try:
                previous = client.get_run(resume_run_id)
            except Exception:  # noqa: BLE001 - not in this store (another URI): start afresh
                previous = None
            if previous is not None and previous.info.experiment_id == experiment_id \
                    and previous.info.lifecycle_stage == "active":
                client.update_run(resume_run_id, status="RUNNING")
                for key, value in run_tags.items():
                    if not key.startswith("mlflow."):
                        client.set_tag(resume_run_id, key, str(value))
                return experiment_id, previous.data.tags.get("mlflow.parentRunId"), resume_run_id
        parent = None
        if invocation:
            parent = _parent_run(client, experiment_id, invocation)
            run_tags["mlflow.parentRunId"] = parent
        run = client.create_run(experiment_id, run_name=run_name, tags={k: str(v) for k, v in run_tags.items()})
        return experiment_id, parent, run.info.run_id

    try:
        experiment_id, parent, run_id = _retry(open_run, lock, "create_run")
    except Exception as err:  # noqa: BLE001
        raise SpgnetError(f"cannot open an MLflow run at {uri}: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''} (SPGNET_TRACKING=0 disables tracking)") from err
    tracker = Tracker(client, run_id, experiment_id, lock, parent)
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
            _retry(lambda: client.set_terminated(run_id, status), lock, "set_terminated")
            if parent and not os.environ.get(PARENT_RUN_ENV):
                # The parent's end time follows its latest child.
                _retry(lambda: client.set_terminated(parent, "FINISHED"), lock, "set_terminated")
        except Exception as err:  # noqa: BLE001 - never hide the run's own exception
            print(f"warning: could not close MLflow run {run_id}: {err}", file=sys.stderr)


def search_runs(profile: str, filter_string: str = "", **kwargs):
    """``mlflow.search_runs`` over ``spgnet-<profile>`` in :func:`tracking_uri` (a DataFrame)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.search_runs(experiment_names=[f"spgnet-{profile}"], filter_string=filter_string, **kwargs)
