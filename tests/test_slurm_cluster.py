"""A real one-node SLURM cluster (scripts/slurm-local.sh, issue 25): submission, fake GPUs (GRES)
and cancellation with the real sbatch / squeue / scancel. A time limit (TIMEOUT) is shown by the
workflow test that a limit stops (tests/test_slurm_workflow.py).

Marked ``slurm`` (``make slurm-test``; ``.ci/run`` runs them alone, after ``make test``). The
session fixture ``cluster`` (tests/helpers_slurm.py) brings the cluster up and, when it was not up
before, down again; without slurmctld or root outside CI the tests are skipped with one line
naming what is missing, and under pytest-xdist too.
"""

from __future__ import annotations

import pytest

from tests.helpers_slurm import GPUS, cluster, run as _run, state as _state, wait_state as _wait_state  # noqa: F401

pytestmark = pytest.mark.slurm


def test_batch_job_runs(cluster, tmp_path):
    """sbatch --wait: the job runs to completion and its output file holds its id."""
    run = _run("sbatch", "--parsable", "--wait", "-o", str(tmp_path / "job-%j.out"),
               "--wrap", "echo $SLURM_JOB_ID; nproc", timeout=120, cwd=tmp_path)
    job = run.stdout.strip().split(";")[0]
    lines = (tmp_path / f"job-{job}.out").read_text().split()
    assert lines[0] == job
    assert int(lines[1]) >= 1
    assert _state(job) == "COMPLETED"


def test_gres_gpu_job_sees_its_gpu(cluster, tmp_path):
    """--gres=gpu:1 on the fake GPUs: SLURM 22.05 sets CUDA_VISIBLE_DEVICES and SLURM_JOB_GPUS."""
    out = tmp_path / "gpu.out"
    _run("sbatch", "--wait", "--gres=gpu:1", "-o", str(out), "--wrap",
         'echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"; echo "SLURM_JOB_GPUS=${SLURM_JOB_GPUS-unset}"',
         timeout=120, cwd=tmp_path)
    seen = dict(line.split("=", 1) for line in out.read_text().split())
    assert seen["CUDA_VISIBLE_DEVICES"] != "unset" or seen["SLURM_JOB_GPUS"] != "unset", seen
    assert seen["CUDA_VISIBLE_DEVICES"] in {str(i) for i in range(GPUS)}, seen


def test_gres_more_gpus_than_exist_refused(cluster, tmp_path):
    """--gres=gpu:N+1 is refused at submission, with SLURM's message."""
    run = _run("sbatch", f"--gres=gpu:{GPUS + 1}", "--wrap", "true", check=False, cwd=tmp_path)
    assert run.returncode != 0
    assert "Requested node configuration is not available" in run.stderr, run.stderr


def test_scancel_ends_running_job(cluster, tmp_path):
    """scancel of a running job: squeue shows it CANCELLED (MinJobAge keeps it listed)."""
    job = _run("sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300", cwd=tmp_path).stdout.strip()
    assert _wait_state(job, {"RUNNING"}, 60) == "RUNNING"
    _run("scancel", job)
    assert _wait_state(job, {"CANCELLED"}, 60) == "CANCELLED"
