# Shared set-up: validate the config, build the plan (spgnet.pipeline) that every rule reads.
import os
import sys
import time

from spgnet.errors import SpgnetError
from spgnet.pipeline import make_plan
from spgnet.workflow_support import check_config, check_data_roots, resources_for


try:
    check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
    PLAN = make_plan(config["profile"], data_root=config.get("data_root"), seeds=config.get("seeds"),
                     overrides=config.get("set"))
    check_data_roots(PLAN)
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
# Runs of one invocation are grouped in MLflow by this tag (spgnet.engine.tracking).
os.environ.setdefault("SPGNET_INVOCATION", f"snakemake-{PROFILE}-{time.strftime('%Y%m%dT%H%M%S')}")


wildcard_constraints:
    run="[^/]+",
    evaluation="[^/]+",
    seed=r"\d+",
    dataset="[^/]+",


def eval_files(experiments):
    return [PLAN.eval_json(e, s) for e in experiments if e in PLAN.evaluations for s in SEEDS]


def table_experiments(table):
    from spgnet.config import load_registry

    return [e.name for e in load_registry().values() if e.table == table and e.name in PLAN.evaluations]

