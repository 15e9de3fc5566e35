"""A real one-node SLURM cluster (scripts/slurm-local.sh, issue 25): submission, fake GPUs (GRES),
cancellation and time limits with the real sbatch / squeue / scancel.

Marked ``slurm`` (``make slurm-test``). The module fixture brings the cluster up (installing
slurm-wlm and munge when CI is "true") and, when it was not up before, down again at the end.
Without slurmctld outside CI the tests are skipped, and under pytest-xdist too (each worker would
bring the cluster up and down on its own). Job states come from ``squeue`` (no accounting
database): the cluster keeps finished jobs there for MinJobAge=600 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm-local.sh"
CONF = Path(os.environ.get("SLURM_LOCAL_DIR", "/var/lib/spgnet-slurm")) / "etc" / "slurm.conf"
GPUS = int(os.environ.get("SLURM_LOCAL_GPUS", "2"))


def _env() -> dict:
    """This cluster's configuration, none of an enclosing job's SLURM_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_CONF"] = str(CONF)
    env["PATH"] = f"/usr/sbin:/usr/bin:{env.get('PATH', '')}"
    return env


def _run(*args: str, timeout: float = 60, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    run = subprocess.run(list(args), env=_env(), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check:
        assert run.returncode == 0, f"{' '.join(args)} -> {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run


def _state(job: str) -> str:
    """The job's state from squeue. ``-t all``: SLURM 22.05's ``squeue -j ID`` alone lists only
    pending / running / completing jobs, so a finished job (kept for MinJobAge) shows only with it."""
    return _run("squeue", "-j", job, "-t", "all", "-h", "-o", "%T", check=False).stdout.strip()


def _wait_state(job: str, wanted: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    state = _state(job)
    while state not in wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        state = _state(job)
    return state


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("slurmctld", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", "")) is None \
            and os.environ.get("CI") != "true":
        pytest.skip("slurmctld is not installed (apt-get install slurm-wlm munge, or scripts/slurm-local.sh up)")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("the SLURM cluster tests run alone, not under pytest-xdist (make slurm-test)")
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, f"slurm-local.sh up failed:\n{up.stderr[-4000:]}"
    yield up.stdout.strip()
    if not was_up:
        down = subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]


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


@pytest.mark.slow
def test_time_limit_ends_job_timeout(cluster, tmp_path):
    """--time=1 with sleep 120: SLURM stops the job at its limit (checked every 30 s, then KillWait)
    as TIMEOUT, before the sleep would have ended."""
    job = _run("sbatch", "--parsable", "--time=1", "-o", "/dev/null", "--wrap", "sleep 120",
               cwd=tmp_path).stdout.strip()
    assert _wait_state(job, {"RUNNING"}, 60) == "RUNNING"
    start = time.monotonic()
    state = _wait_state(job, {"TIMEOUT", "COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL"}, 180)
    elapsed = time.monotonic() - start
    assert state == "TIMEOUT", state
    assert 55 < elapsed < 115, f"the job ended {elapsed:.0f} s after it started"
