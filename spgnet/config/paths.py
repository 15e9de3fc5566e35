"""Where the settings live: the project root and its ``params/`` files, and how a path written in
them (or on a command line) is read.

``PROJECT_ROOT`` is the folder holding ``params/`` (the repository; the environment variable
``SPGNET_ROOT`` points it at a copy, as ``tests/test_config_schema.py`` does). The other modules of
:mod:`spgnet.config` read these names through this module (``paths.PROFILES_DIR``) when they are
called, so a test that points one of them elsewhere (``monkeypatch.setattr(paths, "PROFILES_DIR",
...)``) moves every reader at once. Nothing here imports another spgnet module.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Project root (the folder holding ``params/``); ``SPGNET_ROOT`` overrides it.
PROJECT_ROOT = Path(os.environ.get("SPGNET_ROOT", Path(__file__).resolve().parent.parent.parent))
PARAMS_DIR = PROJECT_ROOT / "params"
#: The registry of the paper's rows (:mod:`spgnet.config.registry`).
EXPERIMENTS_FILE = PARAMS_DIR / "experiments.yaml"
#: ``<name>.yaml``: one profile each (:mod:`spgnet.config.profiles`).
PROFILES_DIR = PARAMS_DIR / "profiles"


def project_path(text: str) -> Path:
    """A path from ``params/`` or the command line: ``~`` and ``$VARS`` expanded, relative paths
    taken from the project root."""
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    return path if path.is_absolute() else PROJECT_ROOT / path
