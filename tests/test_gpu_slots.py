"""spgnet.workflow.gpu_slots: concurrent jobs get disjoint GPUs, a killed holder frees its slots, SLURM's
GPUs pass through. The GPUs are faked with CUDA_VISIBLE_DEVICES (the wrapper shares out its ids)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spgnet.workflow.gpu_slots import launcher, machine_gpus, parse_visible_devices

# The command each wrapped job runs: write the GPUs it was given, then hold them until `go` exists.
HOLD = ("import os, sys, time, pathlib\n"
        "pathlib.Path(sys.argv[1]).write_text(os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>'))\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "while not go.exists(): time.sleep(0.05)\n")


def _env(tmp_path: Path, gpus: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(CUDA_VISIBLE_DEVICES=gpus, SPGNET_GPU_LOCK_DIR=str(tmp_path / "locks"), **extra)
    return env


def _wrapped(count: int, env: dict, *command: str, timeout: float | None = None) -> list[str]:
    limit = [] if timeout is None else ["--timeout", str(timeout)]
    return [sys.executable, "-m", "spgnet.workflow.gpu_slots", "--gpus", str(count), *limit, "--", *command]


def _start_holders(tmp_path: Path, env: dict, counts: list[int]) -> tuple[list[subprocess.Popen], list[Path], Path]:
    go = tmp_path / "go"
    seen = [tmp_path / f"seen{i}" for i in range(len(counts))]
    procs = [subprocess.Popen(_wrapped(n, env, sys.executable, "-c", HOLD, str(out), str(go)), env=env,
                              stderr=subprocess.PIPE, text=True) for n, out in zip(counts, seen)]
    return procs, seen, go


def _wait_for(paths: list[Path], procs: list[subprocess.Popen], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not all(p.exists() and p.read_text() for p in paths):
        for proc in procs:
            assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the wrapped commands did not start"
        time.sleep(0.05)


@pytest.mark.parametrize("counts", [[1, 1, 1, 1], [2, 2], [1, 3]])
def test_concurrent_jobs_get_disjoint_gpus(tmp_path, counts):
    env = _env(tmp_path, "0,1,2,3")
    procs, seen, go = _start_holders(tmp_path, env, counts)
    try:
        _wait_for(seen, procs)  # every job holds its slots at the same time
        given = [p.read_text().split(",") for p in seen]
        assert [len(g) for g in given] == counts
        flat = [gpu for g in given for gpu in g]
        assert sorted(flat) == ["0", "1", "2", "3"]  # disjoint, and all of them
        # a fifth job finds no free slot: it waits, then gives up with one line naming the holders
        late = subprocess.run(_wrapped(1, env, "true", timeout=0.5), env=env, capture_output=True, text=True)
        assert late.returncode == 2
        lines = late.stderr.strip().splitlines()
        assert lines[-1].startswith("spgnet gpu_slots: no 1 free GPU slots after 0.5 s (busy: GPU 0 held by pid ")
        assert {str(p.pid) for p in procs} <= set(lines[-1].replace(";", " ").replace(",", " ").split())
    finally:
        go.touch()
        for proc in procs:
            proc.wait(timeout=60)
    assert [proc.returncode for proc in procs] == [0] * len(counts)
    # all released: one job takes every GPU
    again = subprocess.run(_wrapped(4, env, sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"),
                           env=env, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.strip() == "0,1,2,3", again.stderr


def test_a_killed_holder_releases_its_slots_to_a_waiting_job(tmp_path):
    env = _env(tmp_path, "3,5")
    procs, seen, go = _start_holders(tmp_path, env, [2])
    holder = procs[0]
    try:
        _wait_for(seen, procs)
        assert seen[0].read_text() == "3,5"
        waiting = subprocess.Popen(_wrapped(1, env, sys.executable, "-c",
                                            "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"),
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert waiting.poll() is None  # no free slot: still waiting
        holder.send_signal(signal.SIGKILL)  # a crash: no clean-up code runs
        holder.wait(timeout=30)
        out, err = waiting.communicate(timeout=60)
    finally:
        go.touch()
        if holder.poll() is None:
            holder.kill()
    assert waiting.returncode == 0, err
    assert out.strip() == "3"
    assert "waiting for 1 free GPU slots (busy: GPU 3 held by pid" in err and f"pid {holder.pid}" in err


def test_exit_status_and_output_are_the_commands_own(tmp_path):
    env = _env(tmp_path, "0")
    result = subprocess.run(_wrapped(1, env, sys.executable, "-c", "import sys; print('out'); sys.exit(7)"),
                            env=env, capture_output=True, text=True)
    assert result.returncode == 7 and result.stdout == "out\n"
    assert result.stderr == "spgnet gpu_slots: CUDA_VISIBLE_DEVICES=0\n"


@pytest.mark.parametrize("count, gpus, message", [
    (3, "0,1", "spgnet gpu_slots: this job needs 3 GPUs; CUDA_VISIBLE_DEVICES gives 2 (0, 1): lower --resources gpu=K"),
    (1, "", "spgnet gpu_slots: this job needs 1 GPUs; CUDA_VISIBLE_DEVICES gives 0: lower --resources gpu=K"),
    (0, "0", "spgnet gpu_slots: --gpus must be at least 1, got 0"),
])
def test_impossible_requests_fail_at_once_with_one_line(tmp_path, count, gpus, message):
    env = _env(tmp_path, gpus)
    result = subprocess.run(_wrapped(count, env, "true"), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), result.stderr


def test_a_missing_command_is_one_line(tmp_path):
    env = _env(tmp_path, "0")
    result = subprocess.run(_wrapped(1, env, "no-such-command-spgnet"), env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "spgnet gpu_slots: cannot run 'no-such-command-spgnet': No such file or directory"


def test_under_slurm_the_jobs_own_gpus_pass_through_without_locks(tmp_path):
    env = _env(tmp_path, "6,7", SLURM_JOB_ID="4242")
    show = [sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"]
    result = subprocess.run(_wrapped(2, env, *show), env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "6,7" and result.stderr == ""
    assert not (tmp_path / "locks").exists()
    short = subprocess.run(_wrapped(4, env, *show), env=env, capture_output=True, text=True)
    assert short.returncode == 2
    assert short.stderr == "spgnet gpu_slots: this job needs 4 GPUs; SLURM job 4242 has CUDA_VISIBLE_DEVICES='6,7'\n"


def test_machine_gpus_sources(tmp_path, monkeypatch):
    assert parse_visible_devices("0, 2,GPU-ab12") == ["0", "2", "GPU-ab12"]
    assert parse_visible_devices("1,-1,2") == ["1"] and parse_visible_devices("") == []
    assert machine_gpus({"CUDA_VISIBLE_DEVICES": "4,5"}) == (["4", "5"], "CUDA_VISIBLE_DEVICES")
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 1\n"
                    "echo 'GPU 0: NVIDIA H200 (UUID: GPU-1111)'\n"
                    "echo '  MIG 1g.18gb     Device  0: (UUID: MIG-2222)'\n"
                    "echo 'GPU 1: NVIDIA H200 (UUID: GPU-3333)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert machine_gpus({}) == (["0", "1"], "nvidia-smi -L")


def test_launcher_words():
    assert launcher(0) == "spgnet"
    assert launcher(1) == "python -m spgnet.workflow.gpu_slots --gpus {resources.gpu} -- spgnet"
    assert launcher(8, gpus_field="8") == (
        "python -m spgnet.workflow.gpu_slots --gpus 8 -- torchrun --standalone --nproc_per_node 8 -m spgnet")
