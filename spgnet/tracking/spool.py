"""The spool: runs recorded by jobs (:class:`~spgnet.tracking.trackers.SpoolTracker`),
written into MLflow by one process, :func:`import_spool`, also the command
``python -m spgnet.tracking import-spool DIR`` (:func:`main`; docs/mlflow.md).

One spool folder per workflow invocation (issue 22, snakemake#2225): the workflow's jobs spool
into ``<spool root>/<invocation>/``, whose lock file (:data:`INVOCATION_LOCK`) the workflow's
Snakemake process holds while it runs (:func:`hold_invocation`; the kernel drops the lock when the
process ends, however it ends). At its end the workflow imports its own folder, whose jobs have all
ended, and every other folder whose lock is free, whose invocation has ended without importing it
(:func:`import_invocations`); it never reads a folder whose invocation still runs, and holding a
folder's lock while importing it means that no two imports read the same records.
"""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path
from typing import IO

from spgnet.errors import SpgnetError
from spgnet.tracking.run import _open_run
from spgnet.tracking.store import _connect, _now_ms, _warn, tracking_uri

#: The lock file of an invocation's spool folder (held while the invocation runs or is imported).
INVOCATION_LOCK = ".invocation.lock"
#: Where a spool folder keeps its imported records.
IMPORTED = "imported"


def hold_invocation(folder: str | Path) -> IO | None:
    """Create ``folder`` and take its invocation lock without waiting; returns the open lock file
    (keep it open: closing it, or the end of the process, releases the lock), or None when another
    process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / INVOCATION_LOCK, "a")  # noqa: SIM115 - held for the life of the invocation
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def import_invocations(root: str | Path, own: str | Path | None = None, uri: str | None = None) -> tuple[list[str], int]:
    """Import ``own`` (an invocation folder whose lock the caller holds) and every other folder under
    ``root`` whose invocation has ended (its lock free: taken for the import, then released);
    returns the MLflow run ids imported and the count of records that stay (failed imports). A
    folder without a lock file (``root`` itself in the layout before one folder per invocation, a
    spool of jobs run by hand) is imported as it is."""
    root = Path(root)
    own = Path(own).resolve() if own is not None else None
    done, left = [], 0
    if not root.is_dir():
        return [], 0
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and p.name != IMPORTED)]
    for folder in folders:
        held = None
        if (own is None or folder.resolve() != own) and (folder / INVOCATION_LOCK).exists():
            held = hold_invocation(folder)
            if held is None:
                continue  # its invocation still runs (or another import holds it): not ours to read
        try:
            files = list(folder.glob("*.json"))
            runs = import_spool(folder, uri)
            done += runs
            left += len(files) - len(runs)
        finally:
            if held is not None:
                held.close()
    return done, left


def import_spool(directory: str | Path, uri: str | None = None) -> list[str]:
    """Write every run spooled in ``directory`` into MLflow at ``uri`` (default
    :func:`tracking_uri`); returns the MLflow run ids. Each imported file moves to
    ``directory/imported/`` with its ``run_id``; one that fails stays for the next import (a
    warning names it). A record still ``RUNNING`` (its job was killed) is imported as KILLED:
    run this when no job of the spool is running (the workflow's last step). A store that cannot be
    opened (a corrupt SQLite file, an unreachable server) is a one-line :class:`SpgnetError` naming
    it, and every spooled file stays."""
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
    try:
        client, lock, db = _connect(uri)
    except Exception as err:  # noqa: BLE001 - a corrupt or unreachable store, of any kind
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        runs = f"{len(files)} spooled run{'s stay' if len(files) != 1 else ' stays'}"
        raise SpgnetError(f"cannot open the tracking store {uri} ({type(err).__name__}: {first}); "
                          f"the {runs} in {directory}") from None
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
        write_json(directory / IMPORTED / file.name, record)
        file.unlink()
        done.append(tracker.run_id)
    return done


def main(argv: list[str] | None = None) -> int:
    """``python -m spgnet.tracking import-spool DIR``: the runs spooled in ``DIR`` and in its
    invocation folders whose invocation has ended (:func:`import_invocations`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m spgnet.tracking", description=main.__doc__)
    parser.add_argument("command", choices=["import-spool"])
    parser.add_argument("directory", help="the spool folder (SPGNET_TRACKING_SPOOL of the jobs, or the folder of "
                                          "the workflow's invocation folders, results/<profile>/mlflow-spool)")
    args = parser.parse_args(argv)
    if not Path(args.directory).is_dir():
        print(f"spgnet: {args.directory}: no such spool folder", file=sys.stderr)
        return 2
    try:
        runs, left = import_invocations(args.directory)
    except SpgnetError as err:
        print(f"spgnet: {err}", file=sys.stderr)
        return 1
    print(f"imported {len(runs)} of {len(runs) + left} spooled runs into {tracking_uri()}", file=sys.stderr)
    return 0 if left == 0 else 1
