"""Run the checkout you stand in: the shared environment's ``spgnet`` follows the current folder.

``scripts/ensure-env.sh`` builds one Python environment for every clone of the project (it takes
about ten minutes) and installs the project into it as an editable package, which points at one
clone: the one that ran the script last. Without more, ``spgnet ...`` typed in another clone would
run that other clone's code, read its ``params/`` and write its ``mlflow.db`` (issue 22, case 3).
So ``ensure-env.sh`` also copies this module into the environment's ``site-packages`` with a
``spgnet_checkout.pth`` line that imports it, and every Python of the environment (``spgnet``,
``python -m spgnet``, ``snakemake``, ``dvc``) starts with :func:`activate`: when the current
folder lies in a checkout of the project (a folder holding ``spgnet/__init__.py``,
``params/experiments.yaml`` and ``Snakefile``), that checkout goes first on ``sys.path``, so its
code runs and its ``params/`` and store are used. An explicit ``PYTHONPATH`` that holds a checkout
wins (the Makefile's commands set one), and outside any checkout nothing changes: the editable
install's clone runs. ``spgnet`` itself warns in one line when the code it runs is not the
checkout of the current folder (:func:`spgnet.runtime.checkout.warn_if_other_checkout`).

Standard library only; it runs at every interpreter start of the environment, so it must be fast
and must never fail.
"""

from __future__ import annotations

import os
import sys

MARKERS = ("spgnet/__init__.py", "params/experiments.yaml", "Snakefile")


def is_checkout(folder: str) -> bool:
    """Whether ``folder`` holds a checkout of the project (every one of :data:`MARKERS`)."""
    return all(os.path.isfile(os.path.join(folder, marker)) for marker in MARKERS)


def checkout_of(folder: str) -> str | None:
    """The checkout of the project that ``folder`` lies in (``folder`` or an ancestor), or None."""
    folder = os.path.abspath(folder)
    while True:
        if is_checkout(folder):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def activate() -> str | None:
    """Put the checkout of the current folder first on ``sys.path`` (unless ``PYTHONPATH`` names a
    checkout); returns the checkout used, or None."""
    try:
        for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
            if entry and is_checkout(entry):
                return None
        checkout = checkout_of(os.getcwd())
        if checkout is not None and checkout not in sys.path:
            sys.path.insert(0, checkout)
        return checkout
    except Exception:  # noqa: BLE001 - a start-up hook must never stop Python (a deleted cwd, ...)
        return None


if os.environ.get("SPGNET_CHECKOUT_HOOK", "1") != "0":
    activate()
