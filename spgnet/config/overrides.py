"""Overrides as people write them: the ``SECTION.KEY=VALUE`` items of ``--set`` (also the
workflow's ``--config set=...`` and DVC's ``-S``) and the ``FILE:KEY`` of ``--settings`` (the
sections a DVC stage reads from ``params.yaml``).

Both give ``{"model"|"train"|"eval": {key: value}}``: partial sections, typed later against
:data:`SECTION_TYPES` (:func:`spgnet.config.build.build_config`). A malformed item, an unknown
section, a value that is not YAML, a missing file or key is a one-line
:class:`~spgnet.config.types.ConfigError` naming the item; an unknown key or a wrong type is named
when the sections are typed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from spgnet.config.sections import EvalConfig, ModelConfig, TrainConfig
from spgnet.config.types import ConfigError

#: The sections ``--set`` may change (those of :class:`spgnet.config.sections.RunConfig` that are settings).
SECTION_TYPES = {"model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}
OVERRIDE_SECTIONS = tuple(SECTION_TYPES)


def parse_overrides(items: list[str] | tuple[str, ...] | None) -> dict[str, dict]:
    """``["train.lr=0.02", "eval.flip=true"]`` -> ``{"train": {"lr": 0.02}, "eval": {"flip": True}}``.

    A missing ``=``, an unknown section or a value that is not YAML is a one-line
    :class:`ConfigError` naming the item; unknown keys and wrong types are caught when the sections
    are typed.
    """
    overrides: dict[str, dict] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE (e.g. train.lr=0.02)")
        if section not in OVERRIDE_SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown section '{section}' (valid: {', '.join(OVERRIDE_SECTIONS)})")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        overrides.setdefault(section, {})[name] = value
    return overrides


def read_settings(spec: str) -> dict[str, dict]:
    """``FILE:KEY`` (``--settings params.yaml:runs.t3-1stage``) -> the ``model``/``train``/``eval``
    mapping at the dotted ``KEY`` of the YAML file ``FILE`` (what the DVC stages run with, see
    :mod:`spgnet.workflow.dvc`). A missing file or key, or another section, is a one-line ConfigError."""
    file, sep, key = spec.rpartition(":")
    if not sep or not file or not key:
        raise ConfigError(f"--settings {spec!r}: expected FILE:KEY (e.g. params.yaml:runs.t3-1stage)")
    try:
        value = yaml.safe_load(Path(file).read_text(encoding="utf-8-sig"))
    except OSError:
        raise ConfigError(f"--settings {spec!r}: cannot read {file}") from None
    except yaml.YAMLError:
        raise ConfigError(f"--settings {spec!r}: {file} is not valid YAML") from None
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ConfigError(f"--settings {spec!r}: {file} has no key '{key}'")
        value = value[part]
    if not isinstance(value, dict) or set(value) - set(OVERRIDE_SECTIONS):
        raise ConfigError(f"--settings {spec!r}: expected a mapping of {', '.join(OVERRIDE_SECTIONS)} sections")
    return {section: dict(value[section] or {}) for section in value}
