"""The workflow through the real SLURM executor plugin on the one-node cluster (issue 25, points 2-3).

Each test module fixture runs Snakemake once, in a scratch copy of the project, with the project's
SLURM workflow profile filled in as the README says (no account, the node's partition) and the
flags a cluster without accounting needs (``--slurm-status-command squeue``; tests/helpers_slurm.py):

* ``smoke``: the smoke workflow end to end (``reproduce_all``, every job a SLURM job), with one
  training (t3-1stage) made long (900 iterations, a checkpoint every 40) and three faults a
  cluster causes, one after the other, injected while it runs: its first attempt has a 1-minute
  limit (``runtime``: an expression of ``attempt`` in the profile's set-resources) and SLURM
  stops it (TIMEOUT); Snakemake submits it again (``retries``), and that job is ``scancel``-ed
  (CANCELLED); the third is requeued by SLURM (``scontrol requeue``: what pre-emption with
  ``--requeue`` does; the plugin waits for the same job id). Each start resumes from latest.pt, and
  the checkpoint equals that of an uninterrupted ``spgnet train`` run to 1e-6 (the check of
  tests/test_resume_snakemake.py), which runs beside the workflow once its data exist.
* ``paper``: one training of the paper profile (t3-1stage: InPlaceABNSync, torchrun; on the CPU,
  2 iterations of 65-pixel crops through ``--config set=``) whose 64 threads, 256 GB and 8 GPUs
  are overridden for this node in the profile (``set-threads``, ``set-resources``: 2 threads,
  6000 MB, 2 of the node's fake GPUs). It must be exactly one SLURM job with one task, 2 CPUs and
  GRES gpu:2, inside which gpu_slots and torchrun use SLURM's CUDA_VISIBLE_DEVICES (a ``torchrun``
  first in PATH records what it was given, then runs the real one: 2 gloo processes).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers_slurm import (  # noqa: F401
    GPUS,
    LOCAL_FLAGS,
    cluster,
    jobs,
    require_plugin,
    run,
    show_job,
    slurm_env,
    slurm_project,
    state,
    wait_state,
)

pytestmark = pytest.mark.slurm

RUN = "t3-1stage"
RUN_DIR = f"results/smoke/runs/{RUN}/seed0"
TRAIN_COMMENT = f"rule_train_wildcards_{RUN}_0"
ITERATIONS = 900
LONG = [f"train.iterations={ITERATIONS}", "train.checkpoint_every=40", "train.log_every=40"]
#: the first attempt of the long training gets 1 minute, every other job an hour
RUNTIME = f"1 if attempt == 1 and wildcards.run == '{RUN}' else 60"


def _iteration(path: Path) -> int | None:
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["iteration"])
    except (OSError, RuntimeError, EOFError, KeyError):
        return None  # not there (yet)


def _workflow_env(root: Path, **extra) -> dict:
    env = slurm_env(SPGNET_ROOT=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db", **extra)
    for key in [k for k in env if k.startswith("SPGNET_TRACKING") or k == "SPGNET_INVOCATION"]:
        del env[key]  # tracking on, as a user runs it; a fresh invocation
    return env


def _snakemake(*args: str) -> list[str]:
    return ["snakemake", "--workflow-profile", "workflow/profiles/slurm", *LOCAL_FLAGS, *args]


def _mlflow_runs(db: Path) -> list[dict]:
    with sqlite3.connect(db) as con:
        runs = [dict(zip(("id", "status"), row)) for row in con.execute("SELECT run_uuid, status FROM runs")]
        for item in runs:
            item["tags"] = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (item["id"],)))
            item["params"] = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (item["id"],)))
            item["loss_steps"] = [s for (s,) in con.execute(
                "SELECT step FROM metrics WHERE run_uuid = ? AND key = 'loss' ORDER BY step", (item["id"],))]
    return runs


# --------------------------------------------------------------------------------------------
# The smoke workflow, and a training stopped by a time limit, scancel and a requeue
# --------------------------------------------------------------------------------------------


class _Faults:
    """Watches the long training's SLURM jobs and injects the faults, one per attempt."""

    def __init__(self, root: Path, before: set[str]):
        self.root, self.before = root, before
        self.latest = root / RUN_DIR / "latest.pt"
        self.log = root / f"results/smoke/logs/train_{RUN}_seed0.log"
        self.jobs: list[str] = []  # the training's SLURM jobs, in order
        self.killed_at: dict[str, int] = {}  # fault -> latest.pt's iteration once the job had stopped
        self.logs: dict[str, str] = {}  # fault -> the training log of the job it stopped
        self.phase = "timeout"
        self._stamp = None
        self._seen_iteration = None

    def _progress(self) -> int | None:
        """latest.pt's iteration (read again only when the file changed)."""
        try:
            stamp = self.latest.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if stamp != self._stamp:
            iteration = _iteration(self.latest)
            if iteration is not None:
                self._stamp, self._seen_iteration = stamp, iteration
        return self._seen_iteration

    def _attempts(self) -> dict[str, dict]:
        """squeue's jobs; ``self.jobs`` gains the training's new ones (in submission order)."""
        listed = jobs()
        for job in sorted((j for j in listed.values() if j["comment"] == TRAIN_COMMENT and j["id"] not in self.before),
                          key=lambda j: int(j["id"])):
            if job["id"] not in self.jobs:
                self.jobs.append(job["id"])
        return listed

    def _resumed_past(self, job: dict, fault: str) -> bool:
        """The job runs and has saved a checkpoint past the one the previous fault left."""
        iteration = self._progress()
        return job["state"] == "RUNNING" and iteration is not None and iteration > self.killed_at[fault]

    def _stopped(self, fault: str) -> None:
        self._stamp = None  # read latest.pt again: the job's processes are gone
        self.killed_at[fault] = self._progress()

    def step(self) -> None:
        listed = self._attempts()
        attempt = {"timeout": 0, "cancel": 1, "requeue": 2}.get(self.phase)
        if attempt is None or len(self.jobs) <= attempt or self.jobs[attempt] not in listed:
            return
        job = listed[self.jobs[attempt]]
        if self.phase == "timeout":
            assert job["state"] != "COMPLETED", (
                f"SLURM job {job['id']} finished its {ITERATIONS} iterations within its 1-minute limit: lengthen LONG")
            if job["state"] == "TIMEOUT":
                self._stopped("timeout")
                self.phase = "cancel"
        elif self.phase == "cancel" and self._resumed_past(job, "timeout"):
            self.logs["cancel-resumed"] = self.log.read_text()
            run("scancel", job["id"])
            assert wait_state(job["id"], {"CANCELLED"}, 90) == "CANCELLED"
            self._stopped("cancel")
            self.phase = "requeue"
        elif self.phase == "requeue" and self._resumed_past(job, "cancel"):
            self.logs["requeue-resumed"] = self.log.read_text()
            run("scontrol", "requeue", job["id"])
            # requeued: PENDING once its processes are gone, then held back 2 minutes (BeginTime)
            # by SLURM; the test lets it start at once
            assert wait_state(job["id"], {"PENDING"}, 90) == "PENDING", f"job {job['id']} not pending after its requeue"
            self._stopped("requeue")
            run("scontrol", "update", f"JobId={job['id']}", "StartTime=now")
            self.phase = "done"


@pytest.fixture(scope="module")
def smoke(cluster, tmp_path_factory):
    require_plugin()
    root = slurm_project(tmp_path_factory.mktemp("slurm-smoke"), set_resources={"train": {"runtime": RUNTIME}})
    env = _workflow_env(root)
    settings = "set={%s: [%s]}" % (RUN, ", ".join(LONG))
    # the long training first (--prioritize): it starts beside the other trainings, not after them
    command = _snakemake("reproduce_all", "--prioritize", f"{RUN_DIR}/checkpoint.pt", "--config", "profile=smoke", settings)
    before = set(jobs())
    faults = _Faults(root, before)
    summary = root / "results/smoke/data/cityscapes/summary.json"
    reference, reference_err = None, root / "reference.err"
    started = time.monotonic()
    with open(root / "snakemake.out", "w") as out:
        workflow = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    try:
        while workflow.poll() is None:
            assert time.monotonic() - started < 1200, "the smoke workflow on SLURM ran past 20 minutes"
            if reference is None and summary.exists():  # the uninterrupted reference, beside the workflow
                with open(reference_err, "w") as err:
                    reference = subprocess.Popen(
                        ["spgnet", "train", RUN, "--profile", "smoke", "--seed", "0",
                         *[word for item in LONG for word in ("--set", item)], "--out", str(root / "reference")],
                        cwd=root, env={**env, "SPGNET_TRACKING": "0", "OMP_NUM_THREADS": "1"},
                        stdout=subprocess.DEVNULL, stderr=err)
            faults.step()
            time.sleep(1)
        if reference is not None:
            reference.wait(timeout=600)
    finally:
        if workflow.poll() is None:
            os.killpg(workflow.pid, signal.SIGTERM)  # Snakemake cancels its SLURM jobs (scancel)
            workflow.wait(timeout=120)
        if reference is not None and reference.poll() is None:
            reference.kill()
            reference.wait()
    output = (root / "snakemake.out").read_text()
    assert workflow.returncode == 0, output[-5000:]
    assert reference is not None and reference.returncode == 0, reference_err.read_text()[-3000:]
    return {"root": root, "output": output, "faults": faults, "seconds": time.monotonic() - started}


def test_the_smoke_workflow_runs_end_to_end_every_job_a_slurm_job(smoke):
    root, output = smoke["root"], smoke["output"]
    tables = (root / "reports/smoke/tables.md").read_text()
    assert all(re.search(rf"^## Table {n}\. ", tables, re.M) for n in range(1, 13)), tables[:2000]
    # only reproduce_all (no command: Snakemake's own bookkeeping) ran in Snakemake's process
    assert re.findall(r"^localrule (\S+):", output, re.M) == ["reproduce_all"]
    [total] = re.findall(r"^total\s+(\d+)$", output, re.M)  # Snakemake's job stats: every job of the run
    submitted = re.findall(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", output, re.M)
    assert len({job for job, _ in submitted}) == int(total) - 1  # every other job went to SLURM
    ids = [slurm for _, slurm in submitted]
    assert len(ids) == len(set(ids)) == int(total) - 1 + 2  # the long training's two resubmissions
    listed = jobs()
    names = {listed[i]["name"] for i in ids}
    assert len(names) == 1, names  # one run: the plugin names every job after its run uuid
    # squeue knows every job the plugin submitted and nothing else under that name
    assert {i for i, j in listed.items() if j["name"] in names} == set(ids)
    faults = smoke["faults"]
    expected = {i: "COMPLETED" for i in ids} | {faults.jobs[0]: "TIMEOUT", faults.jobs[1]: "CANCELLED"}
    assert {i: listed[i]["state"] for i in ids} == expected
    print(f"smoke workflow on SLURM with the three faults: {smoke['seconds']:.0f} s, {len(ids)} SLURM jobs")


def test_a_time_limit_a_scancel_and_a_requeue_each_resume_from_the_last_checkpoint(smoke):
    root, output, faults = smoke["root"], smoke["output"], smoke["faults"]
    assert faults.phase == "done", f"the faults stopped at {faults.phase!r} (jobs {faults.jobs})"
    first, second, third = faults.jobs
    assert f"SLURM-job '{first}' failed, SLURM status is: 'TIMEOUT'" in output
    assert f"SLURM-job '{second}' failed, SLURM status is: 'CANCELLED'" in output
    assert show_job(third)["Restarts"] == "1" and state(third) == "COMPLETED"
    at = faults.killed_at
    assert 0 < at["timeout"] < at["cancel"] < at["requeue"] < ITERATIONS, at
    line = "spgnet train: resuming from iteration {} (%s/latest.pt)" % RUN_DIR
    assert line.format(at["timeout"]) in faults.logs["cancel-resumed"].splitlines()
    assert line.format(at["cancel"]) in faults.logs["requeue-resumed"].splitlines()
    assert line.format(at["requeue"]) in (root / f"results/smoke/logs/train_{RUN}_seed0.log").read_text().splitlines()
    assert not (root / RUN_DIR / "latest.pt").exists()


def test_the_resumed_training_has_the_weights_of_an_uninterrupted_run(smoke):
    import torch

    root = smoke["root"]
    resumed = torch.load(root / RUN_DIR / "checkpoint.pt", map_location="cpu", weights_only=True)
    plain = torch.load(root / "reference/checkpoint.pt", map_location="cpu", weights_only=True)
    assert resumed["iteration"] == plain["iteration"] == ITERATIONS
    assert resumed["model"].keys() == plain["model"].keys()
    for name, tensor in plain["model"].items():
        if tensor.is_floating_point():
            assert torch.allclose(resumed["model"][name], tensor, rtol=0, atol=1e-6), name
        else:
            assert torch.equal(resumed["model"][name], tensor), name


def test_mlflow_holds_each_run_once_and_finished(smoke):
    """The jobs spooled their runs (CPU profile); the workflow imported them once, at its end: one
    MLflow run for the training stopped three times, FINISHED, its curve from iteration 40 on."""
    root, output = smoke["root"], smoke["output"]
    [imported] = re.findall(r"^spgnet workflow: imported (\d+) spooled runs into MLflow$", output, re.M)
    spool = root / "results/smoke/mlflow-spool"
    assert not list(spool.glob("*/*.json")), "records left in the spool"
    assert len(list(spool.glob("*/imported/*.json"))) == int(imported)
    runs = [r for r in _mlflow_runs(root / "mlflow.db") if r["tags"].get("spgnet.kind") != "invocation"]
    assert len(runs) == int(imported)
    assert {r["status"] for r in runs} == {"FINISHED"}
    keys = [(r["tags"]["spgnet.kind"], r["tags"]["spgnet.experiment"], r["tags"].get("mlflow.runName")) for r in runs]
    assert len(keys) == len(set(keys)), "a run imported twice"
    [train] = [r for r in runs if r["tags"]["spgnet.kind"] == "train" and r["tags"]["spgnet.experiment"] == RUN]
    assert train["tags"]["spgnet.resumed_from"] == str(smoke["faults"].killed_at["requeue"])
    assert set(range(40, ITERATIONS + 1, 40)) <= set(train["loss_steps"])  # one curve, continued


# --------------------------------------------------------------------------------------------
# One paper-profile training: one SLURM job, its tasks, CPUs and GPUs
# --------------------------------------------------------------------------------------------

PAPER_TARGET = f"results/paper/runs/{RUN}/seed0/checkpoint.pt"
PAPER_SET = ["train.device=cpu", "train.iterations=2", "train.crop=65", "train.batch_size=2", "train.workers=0",
             "train.checkpoint_every=1", "train.log_every=1"]
PAPER_GPUS, PAPER_THREADS, PAPER_MEM = 2, 2, 6000

TORCHRUN_SHIM = """#!/bin/sh
# records what the job gave torchrun, then runs the real one
{{ echo "ARGV $*"; env | grep -E '^(CUDA_VISIBLE_DEVICES|SLURM_[A-Z_]+|OMP_NUM_THREADS)=' | sort; }} > "{record}"
exec "{python}" -m torch.distributed.run "$@"
"""


@pytest.fixture(scope="module")
def paper(cluster, tmp_path_factory):
    require_plugin()
    if GPUS < PAPER_GPUS:
        pytest.skip(f"the cluster has {GPUS} fake GPUs (SLURM_LOCAL_GPUS), this test asks for {PAPER_GPUS}")
    base = tmp_path_factory.mktemp("slurm-paper")
    root = slurm_project(base / "project", set_resources={"train": {"mem_mb": PAPER_MEM, "gpu": PAPER_GPUS}},
                         set_threads={"train": PAPER_THREADS})
    env = _workflow_env(root)
    data, weights = base / "data", base / "imagenet"
    for folder in ("VOCdevkit/VOC2012", "person_part"):
        (data / folder).mkdir(parents=True)  # the paper profile's other sets: only their folders are checked
    make = subprocess.run(["spgnet", "make-synthetic", "--out", str(data / "cityscapes"), "--kind", "cityscapes",
                           "--num-train", "2", "--num-val", "1", "--num-test", "0", "--height", "64", "--width", "128"],
                          cwd=root, env={**env, "SPGNET_TRACKING": "0"}, capture_output=True, text=True, timeout=300)
    assert make.returncode == 0, make.stderr[-2000:]
    from spgnet.models.weights import fabricate_weights_file, plan_backbones, weights_file_name
    from spgnet.workflow.plan import make_plan

    weights.mkdir()
    fabricate_weights_file(weights, "resnet18")  # t3-1stage's; the others need only exist for the start check
    for backbone in plan_backbones(make_plan("paper", data_root=str(data))):
        (weights / weights_file_name(backbone)).touch(exist_ok=True)
    shim = base / "shim"
    shim.mkdir()
    record = base / "torchrun.env"
    (shim / "torchrun").write_text(TORCHRUN_SHIM.format(record=record, python=sys.executable))
    (shim / "torchrun").chmod(0o755)
    env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    settings = "set={%s: [%s]}" % (RUN, ", ".join(PAPER_SET))
    started = time.monotonic()
    done = subprocess.run(_snakemake(PAPER_TARGET, "--verbose", "--slurm-keep-successful-logs", "--config",
                                     "profile=paper", f"data_root={data}", f"weights_root={weights}", settings),
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    (root / "snakemake.out").write_text(output)
    assert done.returncode == 0, output[-5000:]
    return {"root": root, "output": output, "record": record, "seconds": time.monotonic() - started}


def _train_submission(output: str) -> tuple[str, str]:
    """(the sbatch call of the training, its SLURM job id)."""
    calls = re.findall(r"sbatch call: (sbatch .*)$", output, re.M)
    [train] = [c for c in calls if f"--comment {TRAIN_COMMENT} " in c]
    ids = re.findall(r"^Job \d+ has been submitted with SLURM jobid (\d+) \(log: \S*/rule_train/", output, re.M)
    assert len(ids) == 1, ids
    return train, ids[0]


def test_the_paper_training_is_one_slurm_job_with_the_resources_it_asks_for(paper):
    output = paper["output"]
    assert len(re.findall(r"^Job \d+ has been submitted with SLURM jobid", output, re.M)) == 2  # prepare_data, train
    call, job = _train_submission(output)
    sbatch = call.split(" --wrap=")[0].split()
    for flag in (f"--gpus={PAPER_GPUS}", f"--cpus-per-task={PAPER_THREADS}", "--nodes=1", "--requeue", "--export=ALL"):
        assert flag in sbatch, call
    for option, value in (("--mem", str(PAPER_MEM)), ("-t", "2880"), ("-p", "debug")):
        assert sbatch[sbatch.index(option) + 1] == value, call
    assert "-A" not in sbatch and not [w for w in sbatch if w.startswith(("--ntasks", "-n"))], call  # one task
    shown = show_job(job)
    print(f"paper training on SLURM: {paper['seconds']:.0f} s; scontrol show job -d {job}: {shown}")
    assert shown["JobState"] == "COMPLETED" and shown["Partition"] == "debug" and shown["Requeue"] == "1"
    assert (shown["NumNodes"], shown["NumCPUs"], shown["NumTasks"], shown["CPUs/Task"]) == (
        "1", str(PAPER_THREADS), "1", str(PAPER_THREADS))
    # what it asked for (--gpus) and was given (-d: JOB_GRES); TRES counts no GPUs without accounting
    assert shown["TresPerJob"] == f"gres:gpu:{PAPER_GPUS}" and shown["JOB_GRES"] == f"gpu:{PAPER_GPUS}"
    assert shown["TRES"].startswith(f"cpu={PAPER_THREADS},mem={PAPER_MEM}M,node=1"), shown["TRES"]
    assert shown["TimeLimit"] == "2-00:00:00"


def test_gpu_slots_and_torchrun_use_what_slurm_gave_the_job(paper):
    root = paper["root"]
    _, job = _train_submission(paper["output"])
    record = paper["record"].read_text().splitlines()
    argv = record[0].split()[1:]
    seen = dict(line.split("=", 1) for line in record[1:])
    assert argv[:8] == ["--standalone", "--nproc_per_node", str(PAPER_GPUS), "-m", "spgnet", "train", RUN, "--profile"]
    # the job step's allocation (srun --gpus=2 inside the job): SLURM's devices, SLURM's ids
    assert seen["SLURM_JOB_ID"] == job
    assert seen["CUDA_VISIBLE_DEVICES"] == seen["SLURM_STEP_GPUS"] == ",".join(str(i) for i in range(PAPER_GPUS))
    assert seen["SLURM_GPUS_ON_NODE"] == str(PAPER_GPUS)
    assert seen["SLURM_CPUS_PER_TASK"] == str(PAPER_THREADS) and seen["SLURM_NTASKS"] == "1"
    assert seen["OMP_NUM_THREADS"] == str(PAPER_THREADS // PAPER_GPUS)
    # the job's log: Snakemake's command line inside the job (printshellcmds), gpu_slots around torchrun
    [log] = (root / ".snakemake/slurm_logs/rule_train").glob(f"*/{job}.log")
    assert (f"python -m spgnet.workflow.gpu_slots --gpus {PAPER_GPUS} -- torchrun --standalone "
            f"--nproc_per_node {PAPER_GPUS} -m spgnet train {RUN}") in log.read_text()
    train_log = (root / f"results/paper/logs/train_{RUN}_seed0.log").read_text()
    assert f"InPlaceABNSync over {PAPER_GPUS} processes" in train_log, train_log[-2000:]


def test_the_paper_training_is_one_finished_mlflow_run(paper):
    """Multi-process trainings log live (no spool): one run, FINISHED, rank 0's, world size 2."""
    runs = [r for r in _mlflow_runs(paper["root"] / "mlflow.db") if r["tags"].get("spgnet.kind") == "train"]
    assert len(runs) == 1 and runs[0]["status"] == "FINISHED"
    assert runs[0]["tags"]["spgnet.experiment"] == RUN and runs[0]["tags"]["spgnet.world_size"] == str(PAPER_GPUS)
    assert max(runs[0]["loss_steps"]) == 2
