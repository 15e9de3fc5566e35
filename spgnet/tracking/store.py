"""Where the MLflow store is, and how every call reaches it: the store's URI and SQLite file,
the settings' names and MLflow's limits, keys and values cleaned for MLflow, the inter-process
lock on a SQLite store, retries with back-off on transient errors, the one-line warning of a
failure, connecting a client, and :func:`search_runs` (the package docstring: the whole design).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from spgnet.errors import first_line

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
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory SQLite).

    The path is read as SQLAlchemy (hence MLflow) reads it: as written, without percent-decoding,
    so a folder named ``spgnet-repro%20copy`` stays that folder (issue 22, case 9: decoding it put
    the store's lock and artifacts into a sibling ``spgnet-repro copy``). :func:`tracking_uri`
    writes the path as it is; file URIs (the artifact location) are built with
    :meth:`pathlib.Path.as_uri`, which percent-encodes, and MLflow decodes them."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri[len("sqlite:"):]
    if not rest.startswith("///"):
        return None
    path = rest[3:].split("?", 1)[0]
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
    """Exclusive inter-process lock on ``<db>.lock`` (re-entrant within a process).

    Why the project keeps a lock of its own beside SQLite's (issue 22 decided it): the GPU profiles'
    jobs log live, several at once, into one SQLite file, where MLflow's SQLAlchemy pool meets
    SQLite's single writer as "database is locked" and, on a network file system, SQLite's own
    locks are not to be trusted; one ``flock`` around each write (and :func:`_retry` around it for
    what slips through) serialises them. The spooled CPU jobs never open the store. The spool's
    invocation locks (:mod:`spgnet.tracking.spool`) say which invocation still runs; an import
    takes an invocation lock first and this one inside it, and nothing takes them the other way
    round, so the two cannot deadlock."""

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


def _warn(what: str, err: BaseException | str) -> None:
    """One line on stderr: a tracking failure never ends a job (issue 11 point 6, issue 12 point 4)."""
    reason = err if isinstance(err, str) else first_line(err)
    print(f"spgnet: warning: MLflow {what} failed ({reason}); the job goes on without it "
          f"(its own files keep every figure)", file=sys.stderr, flush=True)


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------------
# Connecting and querying
# --------------------------------------------------------------------------------------------


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


def search_runs(profile: str, filter_string: str = "", **kwargs):
    """``mlflow.search_runs`` over ``spgnet-<profile>`` in :func:`tracking_uri` (a DataFrame)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.search_runs(experiment_names=[f"spgnet-{profile}"], filter_string=filter_string, **kwargs)
