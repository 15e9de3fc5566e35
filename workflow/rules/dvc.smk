# Hand the finished outputs to DVC: `dvc commit` records their hashes in dvc.lock, so that
# `dvc repro` after this workflow finds the pipeline up to date instead of training everything
# again. Only for the profile dvc.yaml describes (workflow/dvc-plan.yaml), with its own seeds.
import shutil

import yaml

DVC_PROFILE = yaml.safe_load(open("workflow/dvc-plan.yaml"))["profile"]
DVC_LOCK = (
    config.get("dvc_lock", True)
    and PROFILE == DVC_PROFILE
    and config.get("seeds") is None
    and not config.get("set")
    and shutil.which("dvc") is not None
)

if DVC_LOCK:

    rule dvc_lock:
        input:
            rules.report.output.tables,
            PLAN.curves_figure,
            ATTENTION_FIGURES,
        output:
            "dvc.lock",
        log:
            f"results/{PROFILE}/logs/dvc_lock.log",
        threads: 1
        shell:
            "dvc commit --force --quiet > {log} 2>&1"
