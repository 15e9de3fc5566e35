"""The one-node SLURM cluster of the ``slurm``-marked tests (scripts/slurm-local.sh; issue 25).

``cluster`` (a session fixture; import it into a test module) brings the cluster up and, when it
was not up before, down again at the end. What may be missing on a developer's machine skips the
tests with one line naming it; with ``CI=true`` it fails them instead (``up`` installs slurm-wlm
and munge with apt-get, and a daemon that does not start fails ``up``). Under pytest-xdist they are
skipped: each worker would bring the cluster up and down on its own (``make slurm-test`` and
``.ci/run`` run them alone).

Job states come from ``squeue -t all`` (no accounting database: the cluster keeps finished jobs
for MinJobAge=600 s), exactly as the executor plugin reads them (``--slurm-status-command squeue``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers_workflow import copy_project

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slurm-local.sh"
CONF = Path(os.environ.get("SLURM_LOCAL_DIR", "/var/lib/spgnet-slurm")) / "etc" / "slurm.conf"
GPUS = int(os.environ.get("SLURM_LOCAL_GPUS", "2"))
BIN = Path(sys.executable).parent
SBIN_PATH = "/usr/sbin:/usr/bin"
IN_CI = os.environ.get("CI") == "true"

#: What a user adds to the project's SLURM profile for a cluster without accounting, and what the
#: tests add so that the plugin notices a finished job within seconds (its default waits 40 s
#: before the first status check; the interval then grows by 10 s per check that finds no job
#: finished, up to 180 s: not configurable in plugin 2.6.1).
LOCAL_FLAGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
               "--seconds-between-status-checks", "1")


def slurm_env(**extra) -> dict:
    """This cluster's configuration, none of an enclosing job's SLURM_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SNAKEMAKE_SLURM"))}
    env["SLURM_CONF"] = str(CONF)
    env["PATH"] = f"{BIN}{os.pathsep}{SBIN_PATH}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(*args: str, timeout: float = 60, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), env=slurm_env(), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check:
        assert done.returncode == 0, f"{' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def state(job: str) -> str:
    """The job's state from squeue. ``-t all``: SLURM 22.05's ``squeue -j ID`` alone lists only
    pending / running / completing jobs, so a finished job (kept for MinJobAge) shows only with it."""
    return run("squeue", "-j", job, "-t", "all", "-h", "-o", "%T", check=False).stdout.strip()


def wait_state(job: str, wanted: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = state(job)
    while seen not in wanted and time.monotonic() < deadline:
        time.sleep(0.5)
        seen = state(job)
    return seen


def jobs() -> dict[str, dict]:
    """Every job squeue lists (finished ones for MinJobAge): id -> state, name, comment, reason."""
    out = run("squeue", "-t", "all", "-h", "-o", "%i|%T|%j|%k|%r").stdout
    listed = {}
    for line in out.splitlines():
        job, st, name, comment, reason = line.split("|", 4)
        listed[job] = {"id": job, "state": st, "name": name, "comment": comment, "reason": reason}
    return listed


def show_job(job: str) -> dict[str, str]:
    """``scontrol show job -d -o ID`` as a mapping (the keys this project's tests read; ``-d``
    adds the allocation's details: CPU_IDs, JOB_GRES)."""
    out = run("scontrol", "show", "job", "-d", "-o", job).stdout
    return dict(re.findall(r"(?:^|\s)([A-Za-z_/:]+)=(\S*)", out))


def _missing() -> str | None:
    """What this machine lacks for the cluster tests (None: nothing)."""
    search = f"{SBIN_PATH}{os.pathsep}{os.environ.get('PATH', '')}"
    absent = [tool for tool in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(tool, path=search) is None]
    if absent:
        return (f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge, "
                "or scripts/slurm-local.sh up as root)")
    if os.geteuid() != 0 and subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode != 0:
        return "not root and no cluster up: scripts/slurm-local.sh up runs the SLURM daemons as root"
    return None


@pytest.fixture(scope="session")
def cluster():
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("the SLURM cluster tests run alone, not under pytest-xdist (make slurm-test)")
    missing = _missing()
    if missing and not IN_CI:
        pytest.skip(missing)
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True).returncode == 0
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, f"slurm-local.sh up failed:\n{up.stderr[-4000:]}"
    yield up.stdout.strip()
    if not was_up:
        down = subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]


def require_plugin() -> None:
    """The executor plugin, or a skip naming it (a failure under CI=true)."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        message = "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def slurm_project(root: Path, set_resources: dict | None = None, set_threads: dict | None = None) -> Path:
    """A scratch copy of the project whose SLURM profile is filled in as the README says for this
    cluster: no account (none exists without accounting), every partition the node's ``debug``;
    ``set_resources`` / ``set_threads`` are added to the profile's ``set-resources`` /
    ``set-threads`` (on the command line they would replace its whole ``set-resources``)."""
    import yaml

    copy_project(root)
    path = root / "workflow/profiles/slurm/config.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["default-resources"].update(slurm_account="", slurm_partition="debug")
    for rule, extra in profile["set-resources"].items():
        extra["slurm_partition"] = "debug"
        extra.update((set_resources or {}).get(rule, {}))
    if set_threads:
        profile["set-threads"] = dict(set_threads)
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return root
