"""The trackers a job logs into: :class:`Tracker` (one open MLflow run), :class:`SpoolTracker`
(the run as a JSON file of the spool, no MLflow import) and :class:`NullTracker` (records
nothing); a parameter logged again with another value becomes a ``spgnet.changed.<key>`` tag.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from spgnet.tracking.store import (
    _MAX_PARAM_VALUE,
    _METRICS_PER_BATCH,
    _PARAMS_PER_BATCH,
    CHANGED_TAG,
    PARENT_RUN_ENV,
    SPOOL_PREFIX,
    _clean_key,
    _now_ms,
    _param_value,
    _retry,
    _StoreLock,
    _warn,
    flatten,
)
from spgnet.errors import SpgnetError
from spgnet.tracking import store


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
            # read at each call: spgnet.tracking.store._RETRIES is the setting a test lowers
            result = _retry(fn, self._lock, what, attempts=1 if self._failures else store._RETRIES)
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
            # a workflow spools each invocation into a folder of its own (spgnet.tracking.spool): the
            # record may lie in the folder of an earlier invocation that ended before importing it
            directory.mkdir(parents=True, exist_ok=True)
            for orphan in sorted(directory.parent.glob(f"*/{name}")):
                if orphan.parent != directory and not (directory / name).exists():
                    with contextlib.suppress(OSError):  # another job took it first
                        os.replace(orphan, directory / name)
            imported = [directory / "imported" / name, *sorted(directory.parent.glob(f"*/imported/{name}"))]
            if (directory / name).is_file():  # not imported yet: continue the same record
                record = json.loads((directory / name).read_text(encoding="utf-8"))
                path = directory / name
            elif any(p.is_file() for p in imported):  # imported: reopen the MLflow run
                found = next(p for p in imported if p.is_file())
                resume_run_id = json.loads(found.read_text(encoding="utf-8")).get("run_id")
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
