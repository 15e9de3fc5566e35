"""Issue 11, point 4: a training job killed under Snakemake resumes when the workflow is started
again, and ends with the weights of an uninterrupted run.

In a scratch copy of the project, a copy of the smoke profile with one training run long enough to
kill (20 iterations, a checkpoint every 5). Snakemake runs that training; once its latest.pt holds
iteration >= 5, the whole process group gets SIGKILL (a pre-empted node, a power loss: nothing
cleans up). Then, as the README says: `snakemake --unlock` (the dead process's lock is left behind)
and the same command with `--rerun-incomplete` (train_log.csv, written along the way, is left
marked incomplete). The job must resume from the iteration latest.pt held, and its checkpoint.pt
must equal that of a plain `spgnet train` run to 1e-6 (CPU training is deterministic here)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from spgnet.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

RUN = "t3-1stage"
TARGET = f"results/resume/runs/{RUN}/seed0/checkpoint.pt"
SNAKEMAKE = ["snakemake", "--cores", "1", TARGET, "--config", "profile=resume"]


def _iteration(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["iteration"])


@pytest.fixture()
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    for item in ("Snakefile", "workflow", "params"):
        (shutil.copytree if (PROJECT_ROOT / item).is_dir() else shutil.copy)(PROJECT_ROOT / item, root / item)
    profile = yaml.safe_load((root / "params/profiles/smoke.yaml").read_text())
    profile.update(description="smoke, one run long enough to kill", experiments=[RUN])
    profile["train"].update(iterations=20, checkpoint_every=5, crop=65)
    (root / "params/profiles/resume.yaml").write_text(yaml.safe_dump(profile))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "SPGNET_ROOT": str(root), "SPGNET_TRACKING": "0", "OMP_NUM_THREADS": "1"}
    return root, env


def test_a_killed_training_resumes_when_the_workflow_is_started_again(project):
    root, env = project
    run_dir = root / TARGET.rsplit("/", 1)[0]
    latest = run_dir / "latest.pt"

    with open(root / "first.out", "w") as out:
        first = subprocess.Popen(SNAKEMAKE, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    try:
        deadline, seen = time.monotonic() + 600, None
        while True:
            assert first.poll() is None, (root / "first.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "no latest.pt at iteration >= 5"
            stamp = latest.stat().st_mtime_ns if latest.exists() else None
            if stamp is not None and stamp != seen:
                seen = stamp
                if _iteration(latest) >= 5:
                    break
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # snakemake, the job's shell and spgnet train
        first.wait(timeout=60)
    killed_at = _iteration(latest)
    assert 5 <= killed_at < 20 and not (run_dir / "checkpoint.pt").exists()

    unlock = subprocess.run([*SNAKEMAKE, "--unlock"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    again = subprocess.run([*SNAKEMAKE, "--rerun-incomplete"], cwd=root, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    log = (root / f"results/resume/logs/train_{RUN}_seed0.log").read_text()
    resumed_line = f"spgnet train: resuming from iteration {killed_at} (results/resume/runs/{RUN}/seed0/latest.pt)"
    assert resumed_line in log.splitlines(), log[:500]
    assert not latest.exists() and _iteration(run_dir / "checkpoint.pt") == 20

    reference = subprocess.run(["spgnet", "train", RUN, "--profile", "resume", "--seed", "0", "--out", str(root / "reference")],
                               cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    resumed = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    plain = torch.load(root / "reference/checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert resumed.keys() == plain.keys()
    for name, tensor in plain.items():
        if tensor.is_floating_point():
            assert torch.allclose(resumed[name], tensor, rtol=0, atol=1e-6), name
        else:
            assert torch.equal(resumed[name], tensor), name
