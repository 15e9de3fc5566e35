"""Reading a settings file and merging mappings: the two steps every ``params/`` file goes
through before its values are typed (:mod:`spgnet.config.types`).

:func:`load_yaml` reads one YAML file (a missing file or bad YAML is a one-line
:class:`~spgnet.config.types.ConfigError` naming the file); :func:`deep_merge` lays one mapping over
another (a registry row over its ``base`` row and the registry's defaults, a profile over its
``base`` profile, overrides over a section).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from spgnet.config.types import ConfigError


def load_yaml(path: Path) -> Any:
    """The content of the YAML file ``path``; :class:`ConfigError` naming it if it is missing or
    not valid YAML."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({first})") from None


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` updated by ``override``, recursing into nested mappings; neither is modified."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
