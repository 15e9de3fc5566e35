"""The Snakemake workflow and the DVC pipeline: dry runs, agreement, config errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spgnet.config import PROJECT_ROOT
from spgnet.workflow.dvc import DVC_PARAMS, DVC_PLAN, dvc_variables, render, render_params
from spgnet.workflow.plan import make_plan

BIN = Path(sys.executable).parent


def _run(*args, cwd=PROJECT_ROOT, env=None):
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=environment, timeout=300)


def _dry_run_jobs(*config) -> dict[str, int]:
    # --forceall: every job of the DAG, whatever this checkout has already built
    result = _run("snakemake", "-n", "--forceall", "--cores", "2", "reproduce_all", "--config", *config)
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    table = re.search(r"Job stats:\n(.*?)\n\s*total\s+(\d+)", result.stdout, re.S)
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table.group(1), re.M)}


@pytest.mark.parametrize("profile", ["mini", "smoke"])
def test_dry_run_covers_every_step(profile):
    plan = make_plan(profile)
    jobs = _dry_run_jobs(f"profile={profile}")
    assert jobs["train"] == len(plan.train_runs()) == sum(len(plan.seeds_of_run(r)) for r in plan.runs)
    # each training job evaluates its run's own row on the CPU profiles (evaluate_in_train_job)
    separate = [ev for ev in plan.unique_evaluations().values() if plan.evaluated_by_training(ev.run) != ev.evaluation]
    assert plan.profile.evaluate_in_train_job and len(separate) < len(plan.unique_evaluations())
    assert jobs["evaluate"] == sum(len(plan.seeds_of_run(ev.run)) for ev in separate)
    assert jobs["reference_majority"] == len(plan.datasets())
    assert "reference_untrained" not in jobs  # each training job scores its untrained network
    assert jobs.get("memory", 0) == (1 if plan.memory_settings() else 0)
    for step in ("prepare_data", "profile", "attention", "report", "reproduce_all"):
        assert jobs[step] >= 1, step
    assert any(name.startswith("synthetic_") for name in jobs)


def test_dry_run_of_the_paper_profile(tmp_path):
    from spgnet.models.weights import plan_backbones, weights_file_name

    for folder in ("cityscapes", "VOCdevkit/VOC2012", "person_part", "imagenet"):
        (tmp_path / folder).mkdir(parents=True)
    for backbone in plan_backbones(make_plan("paper", data_root=str(tmp_path))):
        (tmp_path / "imagenet" / weights_file_name(backbone)).touch()
    jobs = _dry_run_jobs("profile=paper", f"data_root={tmp_path}", f"weights_root={tmp_path / 'imagenet'}", "seeds=[0,1]")
    plan = make_plan("paper", data_root=str(tmp_path))
    assert jobs["train"] == 2 * len(plan.runs)
    # on GPUs every evaluation is a job of its own (a changed evaluation never retrains)
    assert not plan.profile.evaluate_in_train_job
    assert jobs["evaluate"] == 2 * len(plan.unique_evaluations())
    assert not any(name.startswith("synthetic_") for name in jobs)


@pytest.mark.parametrize(
    "config, message",
    [
        (["profile=nope"], "config: key 'profile': unknown profile 'nope' (valid: mini, paper, rehearsal, smoke)"),
        (["profle=mini"], "config: unknown key 'profle' (valid keys: data_root, dvc_lock, experiments, profile, seeds, set, weights_root)"),
        (["profile=paper"], "needs data_root"),
        (["profile=paper", "data_root=/nonexistent/x"], "config: key 'data_root': /nonexistent/x/cityscapes"),
        (["seeds=[x]"], "config: key 'seeds'"),
    ],
)
def test_bad_config_fails_at_start_with_one_line(config, message):
    result = _run("snakemake", "-n", "--cores", "1", "--config", *config)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "config error" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-1500:]


def test_dvc_plan_file_is_up_to_date():
    assert (PROJECT_ROOT / DVC_PLAN).read_text() == render("mini")
    assert (PROJECT_ROOT / DVC_PARAMS).read_text() == render_params("mini")


def test_snakemake_and_dvc_cover_the_same_runs_and_outputs():
    plan = make_plan("mini")
    variables = dvc_variables(plan)
    assert {(v["run"], v["seed"]) for v in variables["runs"].values()} == set(plan.train_runs())
    assert {v["dir"] for v in variables["runs"].values()} == {plan.run_dir(r, s) for r, s in plan.train_runs()}
    assert len(plan.train_runs()) > len(plan.runs)  # the ResNet-18 rows' extra seeds (table_seeds)
    assert {v["experiment"] for v in variables["evaluations"].values()} == set(plan.unique_evaluations())
    assert {v["metrics"] for v in variables["evaluations"].values()} == set(plan.eval_files())
    references = {d["majority"] for d in variables["datasets"].values()} | {
        v["untrained"] for v in variables["runs"].values()}
    assert references == set(plan.reference_files())
    assert variables["memory"]["measure"]["out"] == plan.memory_json
    stages = _run("dvc", "stage", "list", "--name-only")
    assert stages.returncode == 0, stages.stderr
    names = stages.stdout.split()
    assert {n.split("@", 1)[1] for n in names if n.startswith("train@")} == set(variables["runs"])
    assert {n.split("@", 1)[1] for n in names if n.startswith("evaluate@")} == set(variables["evaluations"])
    assert {n.split("@", 1)[1] for n in names if n.startswith("reference_majority@")} == set(plan.datasets())
    dvc_yaml = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
    assert {"data", "prepare", "train", "evaluate", "profile", "report", "reference_majority",
            "memory"} <= set(dvc_yaml["stages"])
    assert dvc_yaml["stages"]["train"]["do"]["cmd"] == "${item.cmd}"  # spgnet.workflow.commands.train
    assert all(f"--untrained-out {v['untrained']} " in v["cmd"] + " " for v in variables["runs"].values())


def test_dvc_repro_of_a_generated_set_matches_the_committed_lock_and_is_then_up_to_date(tmp_path):
    """Issue 3: the generated set is a DVC stage output whose hash dvc.lock records; generating it
    again (another machine, another checkout) gives the same hash, and a second `dvc repro` finds
    it up to date. Uses the smallest set (voc) in a scratch DVC project with this dvc.yaml."""
    for item in ("dvc.yaml", DVC_PLAN, DVC_PARAMS):
        (tmp_path / item).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / item, tmp_path / item)
    assert _run("dvc", "init", "--no-scm", "-q", cwd=tmp_path).returncode == 0
    committed = yaml.safe_load((PROJECT_ROOT / "dvc.lock").read_text())["stages"]["data@voc"]["outs"][0]

    first = _run("dvc", "repro", "data@voc", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "Running stage 'data@voc'" in first.stdout
    made = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["data@voc"]["outs"][0]
    assert (made["path"], made["md5"], made["nfiles"]) == (committed["path"], committed["md5"], committed["nfiles"])

    second = _run("dvc", "repro", "data@voc", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Running stage" not in second.stdout and "didn't change" in second.stdout


def test_make_reproduce_runs_the_workflow_as_the_readme_says():
    """README's main-job command, as a dry run (SNAKEMAKE_ARGS=-n): the Makefile's snakemake call
    must parse (targets before --config, which takes every following word as a key=value)."""
    result = _run("make", "reproduce", "PROFILE=smoke", "SNAKEMAKE_ARGS=-n --forceall")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reproduce_all" in result.stdout and "Job stats" in result.stdout


def test_a_fresh_clone_with_the_committed_report_still_runs_everything(tmp_path):
    """The mini report and figures are committed; in a checkout without results/ Snakemake must
    still plan every job (the results/<profile>/built/ markers, see workflow/rules/report.smk)."""
    for item in ["Snakefile", "workflow", "params", "reports", "dvc.lock"]:
        source, target = PROJECT_ROOT / item, tmp_path / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    assert (tmp_path / "reports/tables.md").exists()
    result = _run("snakemake", "-n", "--cores", "2", "reproduce_all", cwd=tmp_path,
                  env={"SPGNET_ROOT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    plan = make_plan("mini")
    table = re.search(r"Job stats:\n(.*?)\n\s*total\s+(\d+)", result.stdout, re.S).group(1)
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    fused = {plan.eval_json(run, seed) for run, seed in plan.train_runs() if plan.evaluated_by_training(run)}
    assert jobs["train"] == len(plan.train_runs()) and jobs["evaluate"] == len(set(plan.eval_files()) - fused)
    assert "reference_untrained" not in jobs
    assert jobs["report"] == jobs["attention"] == jobs["curves"] == 1
