"""Every command runs the checkout it stands in (issue 22, case 3): the shared environment's start-up
hook (scripts/spgnet_checkout.py, installed by scripts/ensure-env.sh) puts the checkout of the
current folder first, and spgnet warns in one line when the code it runs is another checkout's
(spgnet.runtime.checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spgnet.config import PROJECT_ROOT

HOOK = PROJECT_ROOT / "scripts" / "spgnet_checkout.py"


def _fake_checkout(folder: Path, name: str) -> Path:
    """A folder that looks like a checkout and whose ``spgnet`` package says ``name``."""
    (folder / "spgnet").mkdir(parents=True)
    (folder / "spgnet" / "__init__.py").write_text(f"WHO = {name!r}\n")
    (folder / "params").mkdir()
    (folder / "params" / "experiments.yaml").write_text("experiments: {}\n")
    (folder / "Snakefile").write_text("")
    (folder / "deeper" / "still").mkdir(parents=True)
    return folder


def _who(cwd: Path, pythonpath: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPGNET_ROOT")}
    env["PYTHONPATH"] = os.pathsep.join([str(HOOK.parent), *([pythonpath] if pythonpath else [])])
    run = subprocess.run([sys.executable, "-c", "import spgnet_checkout, spgnet; print(getattr(spgnet, 'WHO', spgnet.__file__))"],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_the_hook_runs_the_checkout_of_the_current_folder(tmp_path):
    a = _fake_checkout(tmp_path / "clone a", "A")
    b = _fake_checkout(tmp_path / "clone-b", "B")
    assert _who(a) == "A" and _who(a / "deeper" / "still") == "A"
    assert _who(b / "deeper") == "B"
    assert _who(tmp_path) not in ("A", "B")  # outside any checkout: the environment's own install
    assert _who(b / "deeper", pythonpath=str(a)) == "A"  # an explicit PYTHONPATH naming a checkout wins


def test_the_hook_never_stops_python(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    code = ("import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); import spgnet_checkout; "
            "print(spgnet_checkout.activate())")
    run = subprocess.run([sys.executable, "-c", code, str(gone)], env=dict(os.environ, PYTHONPATH=str(HOOK.parent)),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "None", run.stderr


def test_spgnet_warns_in_one_line_when_it_runs_another_checkouts_code(tmp_path):
    other = _fake_checkout(tmp_path / "other clone", "other")
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), SPGNET_CHECKOUT_HOOK="0")
    command = [sys.executable, "-c", "import sys; from spgnet.cli import main; sys.exit(main())", "dvc-plan",
               "--profile", "no-such-profile", "--check"]  # as the `spgnet` command runs (python -m would import the cwd's)
    run = subprocess.run(command, cwd=other / "deeper", env=env, capture_output=True, text=True, timeout=120)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 2, run.stderr
    assert lines[0].startswith(f"spgnet: warning: running the code, params/ and tracking store of {PROJECT_ROOT}, "
                               f"not of the checkout of the current folder {other} ")
    same = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "warning" not in same.stderr and len(same.stderr.strip().splitlines()) == 1


def test_the_environment_has_the_hook_installed():
    """What scripts/ensure-env.sh leaves in the environment these tests run in (CI builds it)."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    if not (site / "spgnet_checkout.pth").exists() and os.environ.get("CI") != "true":
        pytest.skip("this environment was not made by scripts/ensure-env.sh (CI=true requires it)")
    assert (site / "spgnet_checkout.pth").read_text().strip() == "import spgnet_checkout"
    assert (site / "spgnet_checkout.py").read_text() == HOOK.read_text()


def test_a_clone_runs_its_own_code_through_the_environment(tmp_path):
    """The README's by-hand use in a second clone: `python -c 'import spgnet'` with no PYTHONPATH."""
    import sysconfig

    if not (Path(sysconfig.get_paths()["purelib"]) / "spgnet_checkout.pth").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("the environment has no scripts/spgnet_checkout.py hook")
        pytest.skip("this environment was not made by scripts/ensure-env.sh")
    clone = _fake_checkout(tmp_path / "second clone", "second")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPGNET_ROOT", "SPGNET_CHECKOUT_HOOK")}
    run = subprocess.run([sys.executable, "-c", "import spgnet; print(spgnet.WHO)"], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "second", run.stderr
