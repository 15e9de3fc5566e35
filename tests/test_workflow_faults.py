"""The workflow survives what users do to it (issue 22): a rule rerun after its data set was
regenerated (case 1, snakemake#1150), two Snakemake runs at once in one checkout (case 2,
snakemake#2225), data and weights under paths with spaces and non-ASCII characters (case 5,
opencv-python#700). Runs in a scratch copy of the project on the smoke profile."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spgnet.config import PROJECT_ROOT
from tests.helpers_workflow import copy_project

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflow-faults")]

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch copy of the workflow in a folder whose name has a space and a non-ASCII letter."""
    root = copy_project(tmp_path_factory.mktemp("faults") / "spgnet rëpro")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SPGNET_", "MLFLOW_"))},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SPGNET_ROOT": str(root),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    return root, env


def _snakemake(project, *args, timeout=900) -> subprocess.CompletedProcess:
    root, env = project
    return subprocess.run(["snakemake", "--cores", "1", *args, "--config", "profile=smoke", "dvc_lock=false"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_data_set_regenerated_reruns_its_preparation_without_hand_cleaning(project):
    """`--forcerun synthetic_voc` regenerates the set; Snakemake deletes summary.json before it
    reruns prepare_data, which then used to refuse its own folder on every later run."""
    target = "results/smoke/data/voc/summary.json"
    first = _snakemake(project, target)
    assert first.returncode == 0, first.stderr[-3000:]
    for _ in range(2):
        again = _snakemake(project, target, "--forcerun", "synthetic_voc")
        assert again.returncode == 0, again.stderr[-3000:]
        assert "rule prepare_data:" in again.stdout + again.stderr
    assert (project[0] / target).is_file()


def test_two_workflows_at_once_each_import_their_own_runs_once(project):
    """A training target and a data target started together in one checkout: every run recorded once
    in MLflow, none KILLED, neither import fails."""
    mlflow = pytest.importorskip("mlflow")
    root, env = project
    started = [subprocess.Popen(["snakemake", "--cores", "1", target, "--config", "profile=smoke", "dvc_lock=false"],
                                cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for target in ("results/smoke/runs/t3-1stage/seed0/checkpoint.pt", "results/smoke/data/person_part/summary.json")]
    outputs = [run.communicate(timeout=900) for run in started]
    for run, (out, err) in zip(started, outputs):
        assert run.returncode == 0, err[-3000:]
        assert "FileNotFoundError" not in err and "warning: MLflow import" not in err, err[-3000:]
        assert re.search(r"spgnet workflow: imported \d+ spooled runs into MLflow\n", err), err[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["spgnet-smoke"])
    jobs = runs[runs["tags.spgnet.kind"] != "invocation"]
    assert len(jobs) and not jobs["tags.mlflow.runName"].duplicated().any(), list(jobs["tags.mlflow.runName"])
    assert set(jobs["status"]) == {"FINISHED"}
    left = [p for p in (root / "results/smoke/mlflow-spool").glob("*/*.json")]
    assert left == []  # every record imported, by the invocation that owned it


def test_paths_with_spaces_and_non_ascii_characters_reach_spgnet_as_one_argument(tmp_path):
    """A dry run of the paper profile with its data and ImageNet files under odd paths: every
    command line, split as the shell splits it, passes each path whole."""
    from tests.test_workflow_gpus import _paper_root, _shell_commands, _weights_home

    odd = tmp_path / "dätä sét"
    data = _paper_root(odd)
    home = _weights_home(odd)
    lines = _shell_commands("--cores", "8", "reproduce_all", "--config", "profile=paper", f"data_root={data}",
                            home=home)
    assert lines
    passed = 0
    for line in lines:
        words = shlex.split(line)
        for flag in ("--data-root", "--weights-root", "--root"):
            if flag in words:
                value = words[words.index(flag) + 1]
                assert value.startswith(str(odd)), (flag, line)
                passed += 1
    assert passed > 10


# Timings and what names the place or the machine, not the result.
_NOT_RESULTS = {"seconds", "it_per_s", "segments", "seconds_per_image", "device_name", "image_size_min", "image_size_max"}


def _results(path: Path) -> dict:
    import json

    values = {key: value for key, value in json.loads(path.read_text()).items() if key not in _NOT_RESULTS}
    if isinstance(values.get("data"), dict):  # where the data set lies differs: two project folders
        values["data"] = {key: value for key, value in values["data"].items() if key != "root"}
    return values


def test_snakemake_and_dvc_write_the_same_numbers_for_the_same_run(project, tmp_path):
    """Issue 22, case 10: the threads come from the profile and spgnet applies them, so a training and
    its evaluation give the same JSONs through either pipeline, whatever OMP_NUM_THREADS DVC leaves."""
    root, env = project
    run = _snakemake(project, "results/smoke/runs/t3-1stage/seed0/checkpoint.pt")
    assert run.returncode == 0, run.stderr[-3000:]

    dvc_root = tmp_path / "dvc project"
    for item in ("params", "dvc.yaml"):
        target = dvc_root / item
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (PROJECT_ROOT / item).is_dir() else shutil.copy)(PROJECT_ROOT / item, target)
    (dvc_root / "spgnet").symlink_to(PROJECT_ROOT / "spgnet")  # the stages' code dependencies
    dvc_env = {k: v for k, v in env.items() if k != "OMP_NUM_THREADS"}
    dvc_env.update(SPGNET_ROOT=str(dvc_root), SPGNET_TRACKING="0")
    steps = [["spgnet", "dvc-plan", "--profile", "smoke", "--out", "workflow/dvc-plan.yaml"],
             ["dvc", "init", "--no-scm", "-q"],
             ["dvc", "repro", "evaluate@t3-1stage"]]
    for step in steps:
        done = subprocess.run(step, cwd=dvc_root, env=dvc_env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (step, done.stdout[-2000:], done.stderr[-3000:])

    run_dir = "results/smoke/runs/t3-1stage/seed0"
    snakemake_train, dvc_train = _results(root / run_dir / "train_metrics.json"), _results(dvc_root / run_dir / "train_metrics.json")
    assert snakemake_train["threads"] == 1  # the smoke profile's resources.train.threads
    assert dvc_train == snakemake_train
    snakemake_eval = _results(root / run_dir / "eval" / "t3-1stage.json")
    dvc_eval = _results(dvc_root / run_dir / "eval" / "t3-1stage.json")
    assert dvc_eval == snakemake_eval and dvc_eval["threads"] == 1
    assert _results(root / run_dir / "untrained.json") == _results(dvc_root / run_dir / "untrained.json")
