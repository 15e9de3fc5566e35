"""Which checkout of the project this process runs, and a one-line warning when it is not the one
the current folder lies in (issue 22, case 3).

The shared environment of ``scripts/ensure-env.sh`` runs the checkout of the current folder
(``scripts/spgnet_checkout.py``, a start-up hook the script installs); an explicit ``PYTHONPATH``
or an environment without the hook can still run another clone's code, read its ``params/`` and
write its ``mlflow.db``. :func:`warn_if_other_checkout` says so, once, on stderr: ``spgnet`` calls
it before every verb and the workflow when it starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: What makes a folder a checkout of the project (as ``scripts/spgnet_checkout.py`` reads it).
MARKERS = ("spgnet/__init__.py", "params/experiments.yaml", "Snakefile")
_WARNED = []


def checkout_of(folder: str | Path) -> Path | None:
    """The checkout of the project that ``folder`` lies in (``folder`` or an ancestor), or None."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        if all((candidate / marker).is_file() for marker in MARKERS):
            return candidate
    return None


def running_checkout() -> Path:
    """The folder holding the ``spgnet`` package this process imported."""
    return Path(__file__).resolve().parent.parent.parent


def other_checkout(cwd: str | Path | None = None) -> tuple[Path, Path] | None:
    """``(the checkout whose code runs, the checkout of the current folder)`` when they differ;
    None when they are the same or the current folder is in no checkout."""
    here = checkout_of(cwd if cwd is not None else os.getcwd())
    running = running_checkout()
    if here is None or here == running:
        return None
    return running, here


def warn_if_other_checkout(stream=None) -> bool:
    """Print, once per process, a one-line warning when :func:`other_checkout` finds one; returns
    whether it did."""
    found = other_checkout()
    if found is None or _WARNED:
        return False
    _WARNED.append(found)
    running, here = found
    print(f"spgnet: warning: running the code, params/ and tracking store of {running}, not of the checkout "
          f"of the current folder {here} (PYTHONPATH, or an environment without scripts/spgnet_checkout.py: "
          "run `bash scripts/ensure-env.sh` in this checkout)", file=stream or sys.stderr)
    return True
