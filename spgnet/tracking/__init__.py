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
:func:`import_spool` (``python -m spgnet.tracking import-spool DIR``) writes all of them
into the store at once, with their original timestamps (docs/mlflow.md).

Modules: :mod:`.store` (the URI, the lock, retries, warnings), :mod:`.trackers` (``Tracker``,
``SpoolTracker``, ``NullTracker``), :mod:`.run` (``start_run``), :mod:`.spool` (``import_spool``
and the ``import-spool`` command, run by ``__main__``). Everything a caller needs is imported here.
"""

from spgnet.tracking.run import start_run
from spgnet.tracking.spool import hold_invocation, import_invocations, import_spool, main
from spgnet.tracking.store import (
    _RETRIES,
    CHANGED_TAG,
    INVOCATION_ENV,
    PARENT_RUN_ENV,
    SPOOL_ENV,
    SPOOL_PREFIX,
    TRACKING_ENV,
    flatten,
    search_runs,
    sqlite_path,
    tracking_enabled,
    tracking_uri,
)
from spgnet.tracking.trackers import NullTracker, SpoolTracker, Tracker

__all__ = [
    "CHANGED_TAG", "INVOCATION_ENV", "PARENT_RUN_ENV", "SPOOL_ENV", "SPOOL_PREFIX", "TRACKING_ENV",
    "NullTracker", "SpoolTracker", "Tracker", "flatten", "hold_invocation", "import_invocations", "import_spool", "main", "search_runs",
    "sqlite_path", "start_run", "tracking_enabled", "tracking_uri",
]
