# spgnet-repro: regenerate the paper's Tables 1-12 as reports/tables.md.
#
#   snakemake --cores all reproduce_all                      # embedded default (profile mini)
#   snakemake --cores all table3                             # the results of one table
#   snakemake --cores all reproduce_spgnet                   # SPGNet's own rows, no Table 1 peers
#   snakemake --cores all reproduce_all --config profile=paper data_root=/data
#   snakemake --workflow-profile workflow/profiles/slurm reproduce_all --config profile=paper data_root=/data
#
# Wiring only: every job is one `spgnet <verb>` call; spgnet.workflow.plan decides what runs.
import os
import sys

from snakemake.utils import min_version

min_version("9.0")


configfile: "workflow/config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/dvc.smk"


def import_tracking_spool():
    """Write the runs this invocation's jobs spooled (common.smk) into MLflow, and those of earlier
    invocations that ended without doing so (spgnet.tracking.spool); a failure is a warning."""
    if TRACKING_SPOOL is None or not os.path.isdir(TRACKING_SPOOL):
        return
    from spgnet.tracking.spool import import_invocations

    try:
        runs, left = import_invocations(TRACKING_SPOOL_ROOT, own=TRACKING_SPOOL)
    except Exception as err:  # noqa: BLE001 - the results stand; the runs stay spooled for the next import
        sys.stderr.write(f"spgnet workflow: warning: MLflow import of {TRACKING_SPOOL_ROOT} failed: {err}\n")
        return
    stays = f"; {left} stay in {TRACKING_SPOOL_ROOT} (warnings above)" if left else ""
    sys.stderr.write(f"spgnet workflow: imported {len(runs)} spooled runs into MLflow{stays}\n")


def hold_tracking_spool():
    """Create this invocation's spool folder and hold its lock until the workflow ends."""
    if TRACKING_SPOOL is not None:
        from spgnet.tracking.spool import hold_invocation

        TRACKING_SPOOL_LOCK.append(hold_invocation(TRACKING_SPOOL))


onstart:
    hold_tracking_spool()


onsuccess:
    import_tracking_spool()


onerror:
    import_tracking_spool()


rule reproduce_all:
    default_target: True
    input:
        f"{PLAN.report_dir}/tables.md",
        BUILT_MARKERS,
        "dvc.lock" if DVC_LOCK else [],


# What the paper itself reports: every SPGNet row, without the Table 1 competitors trained here for
# comparison (model.arch other than spgnet; about half of reproduce_all's training FLOPs, README
# "Cost on paper"); evaluations, #Params/#FLOPs and the guided-attention figures, no report.
rule reproduce_spgnet:
    input:
        PLAN.eval_files([e for e in PLAN.experiments if PLAN.experiment_config(e).model.arch == "spgnet"]),
        PLAN.profile_json,
        ATTENTION_FIGURES,


for _table in ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]:

    rule:
        name:
            f"table{_table}"
        input:
            PLAN.eval_files(table_experiments(_table)),
            f"results/{PROFILE}/profile.json",
