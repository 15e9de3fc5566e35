# Shared set-up: validate the config, build the plan (spgnet.workflow.plan) that every rule reads.
import os
import sys
import time

from spgnet.errors import SpgnetError
from spgnet.runtime.checkout import warn_if_other_checkout
from spgnet.workflow import commands
from spgnet.workflow.gpu_slots import launcher
from spgnet.workflow.plan import make_plan
from spgnet.workflow.support import check_config, check_data_roots, resources_for


warn_if_other_checkout()  # the workflow runs this checkout's code and params/ (issue 22, case 3)
try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
    PLAN = make_plan(config["profile"], data_root=config.get("data_root"), seeds=config.get("seeds"),
                     overrides=config.get("set"), experiments=config.get("experiments"))
    check_data_roots(PLAN)
    # a network of your own (model.builder) must build an nn.Module: checked here, before any job
    if any(cfg.model.builder for cfg in PLAN.runs.values()):
        from spgnet.models.custom import check_builder

        for _cfg in PLAN.runs.values():
            if _cfg.model.builder:
                check_builder(_cfg)
    # torchvision's ImageNet files, one per backbone (spgnet.models.weights): all present, or stop here
    WEIGHTS_ROOT = config.get("weights_root") or PLAN.profile.weights_root
    if WEIGHTS_ROOT:
        from spgnet.models.weights import require_weights

        WEIGHTS_ROOT = require_weights(PLAN, WEIGHTS_ROOT)
except SpgnetError as err:
    sys.stderr.write(f"spgnet workflow: config error: {err}\n")
    sys.exit(2)

PROFILE = PLAN.profile.name
SEEDS = list(PLAN.seeds)
# Values every rule file shares (set here once, not by include order):
# threads / mem_mb / gpu per kind of job, from the profile's resources
RESOURCES_LIGHT = resources_for(PLAN.profile.resources, "light")
RESOURCES_TRAIN = resources_for(PLAN.profile.resources, "train")
RESOURCES_EVAL = resources_for(PLAN.profile.resources, "evaluate")
# the command prefix that places a job on its own GPUs (spgnet.workflow.gpu_slots; "spgnet" without GPUs, or
# torchrun with resources.train.processes on the CPU: the paper path rehearsed, params/profiles/rehearsal.yaml)
TRAIN_LAUNCH = launcher(RESOURCES_TRAIN["gpu"], processes=RESOURCES_TRAIN["processes"])
EVAL_LAUNCH = launcher(RESOURCES_EVAL["gpu"])
# the --data-root of every verb that reads a data set (spgnet.workflow.commands writes every command line)
DATA_ROOT = config.get("data_root")
# MLflow: on CPU profiles each job spools its run record as JSON (no MLflow import or store check
# per job: ~3 s of a short job's start-up) and the workflow writes the records into MLflow when it
# ends (Snakefile onsuccess/onerror); GPU profiles log live, so long runs show their curves, and so
# does a CPU profile whose trainings run several processes (the paper path rehearsed: its runs log
# and register their MLflow models as the paper profile's do, which a spooled run cannot).
# Runs of one invocation are grouped in MLflow by this tag (spgnet.tracking).
os.environ.setdefault("SPGNET_INVOCATION", f"snakemake-{PROFILE}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
# Each invocation spools into a folder of its own, whose lock this process holds from its start
# (Snakefile onstart) to its end (spgnet.tracking.spool), so two workflows started at once never
# import or delete each other's records (snakemake#2225). A job that parses this file again (SLURM,
# run: directives) inherits SPGNET_TRACKING_SPOOL and leaves it alone.
TRACKING_SPOOL_ROOT = os.path.abspath(f"results/{PROFILE}/mlflow-spool")
TRACKING_SPOOL = None  # this invocation's folder, when this process spools
TRACKING_SPOOL_LOCK = []  # its lock (an open file), held until this process ends
if RESOURCES_TRAIN["gpu"] == 0 and RESOURCES_TRAIN["processes"] == 1 and "SPGNET_TRACKING_SPOOL" not in os.environ:
    TRACKING_SPOOL = os.path.join(TRACKING_SPOOL_ROOT, os.environ["SPGNET_INVOCATION"])
    os.environ["SPGNET_TRACKING_SPOOL"] = TRACKING_SPOOL


wildcard_constraints:
    run="[^/]+",
    evaluation="[^/]+",
    seed=r"\d+",
    dataset="[^/]+",


def training_data(wildcards):
    """The checked data set a run trains on (its prepare_data summary)."""
    return PLAN.data_summary(PLAN.runs[wildcards.run].train.dataset)


def table_experiments(table):
    from spgnet.config import load_registry

    return [e.name for e in load_registry().values() if e.table == table and e.name in PLAN.evaluations]

