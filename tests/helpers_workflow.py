"""Scratch copies of the workflow for the end-to-end tests (the smoke run, the workflow's faults)."""

from __future__ import annotations

import shutil
from pathlib import Path

from spgnet.config import PROJECT_ROOT

#: What a scratch project needs to run the workflow (the package itself comes from PYTHONPATH).
WORKFLOW_FILES = ("Snakefile", "workflow", "params", "reports/templates")


def copy_project(root: Path, items=WORKFLOW_FILES) -> Path:
    """Copy ``items`` of this checkout into ``root``; returns ``root``."""
    for item in items:
        source, target = PROJECT_ROOT / item, Path(root) / item
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    return Path(root)
