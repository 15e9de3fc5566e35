"""DVC experiments reach training: `dvc exp run -S 'runs.<run>.train.lr=...'` reruns that run with the
new value and `dvc exp show` lists it with its mIoU (the smoke profile's plan, in a scratch repo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spgnet.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _run(*args, cwd, env):
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_dvc_exp_run_set_param_trains_with_the_new_value_and_exp_show_lists_its_miou(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    for item in ("dvc.yaml", "params", "spgnet", "reports/templates"):
        source = PROJECT_ROOT / item
        (root / item).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, root / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / item)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "SPGNET_ROOT": str(root),
           "SPGNET_TRACKING": "0", "PYTHONWARNINGS": "ignore", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    # the smoke profile's plan and params (what `spgnet dvc-plan --profile smoke` writes)
    assert _run(sys.executable, "-m", "spgnet", "dvc-plan", "--profile", "smoke", cwd=root, env=env).returncode == 0
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "plan"]):
        result = _run(*command, cwd=root, env=env)
        assert result.returncode == 0, result.stderr[-2000:]

    run = _run("dvc", "exp", "run", "-S", "runs.t3-1stage.train.lr=0.02", "evaluate@t3-1stage", cwd=root, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Running stage 'train@t3-1stage'" in run.stdout and "Running stage 'evaluate@t3-1stage'" in run.stdout
    assert "train@t3-spg-sigmoid" not in run.stdout  # only what the changed parameter reaches
    trained = torch.load(root / "results/smoke/runs/t3-1stage/seed0/checkpoint.pt", weights_only=True)
    assert trained["config"]["train"]["lr"] == 0.02

    shown = _run("dvc", "exp", "show", "--json", cwd=root, env=env)
    assert shown.returncode == 0, shown.stderr[-2000:]
    experiments = [rev["data"] for commit in json.loads(shown.stdout) for exp in commit.get("experiments") or []
                   for rev in exp["revs"]]
    assert len(experiments) == 1
    [data] = experiments
    assert data["params"]["params.yaml"]["data"]["runs"]["t3-1stage"]["train"]["lr"] == 0.02
    metrics = data["metrics"]["results/smoke/runs/t3-1stage/seed0/eval/t3-1stage.json"]["data"]
    assert isinstance(metrics["miou"], float)
