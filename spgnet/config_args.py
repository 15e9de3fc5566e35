"""One way in for settings: the run config of a verb's command line (train, evaluate, attention).

Every verb that runs an experiment calls :func:`config_from_args` and nothing else reads the
profile or applies overrides (detectron2's ``setup(args)``, mmsegmentation's ``tools/train.py``).
The order, last wins:

1. the experiment's registry entry (``params/experiments.yaml``), over the registry's defaults;
2. the profile (``params/profiles/<profile>.yaml``: its ``model``/``train``/``eval`` sections, then
   its ``dataset_overrides`` for the experiment's data set);
3. ``--settings FILE:KEY`` (sections read from a YAML file: what the DVC stages pass, see
   :mod:`spgnet.workflow.dvc`), then ``--set SECTION.KEY=VALUE`` (repeatable; the value is read as YAML, so ``--set
   eval.scales=[1.0,1.5]`` is a list and ``--set train.lr=2e-2`` a number), then the verb's own
   flags (``--iterations``, ``--strategy``, ``--weights-root``).

The result is validated like the files (:func:`spgnet.config.resolve`); an override changes the
run's config hash, so ``spgnet train --resume`` refuses a checkpoint trained otherwise (only a
larger ``train.iterations`` extends a run, see :mod:`spgnet.engine.train.loop`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from spgnet.config import ConfigError, EvalConfig, ModelConfig, RunConfig, TrainConfig, load_profile, resolve
from spgnet.config_schema import validate_partial

#: The sections ``--set`` may change (those of :class:`spgnet.config.RunConfig` that are settings).
SECTION_TYPES = {"model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}
OVERRIDE_SECTIONS = tuple(SECTION_TYPES)


def parse_overrides(items: list[str] | None) -> dict[str, dict]:
    """``["train.lr=0.02", "eval.flip=true"]`` -> ``{"train": {"lr": 0.02}, "eval": {"flip": True}}``.

    A missing ``=``, an unknown section or a value that is not YAML is a one-line
    :class:`ConfigError` naming the item; unknown keys and wrong types are caught by ``resolve``.
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


def config_from_args(args) -> RunConfig:
    """The :class:`RunConfig` of a parsed ``spgnet train|evaluate|attention`` command line.

    Reads ``args.experiment``, ``args.profile``, ``args.data_root`` and, where the verb has them,
    ``args.settings`` (``--settings``), ``args.set`` (``--set``), ``args.iterations``, ``args.strategy`` and ``args.weights_root``.
    Errors: :class:`ConfigError` (one line naming the key or value).
    """
    profile = load_profile(args.profile, data_root=getattr(args, "data_root", None))
    overrides = read_settings(args.settings) if getattr(args, "settings", None) else {}
    for section, values in parse_overrides(getattr(args, "set", None)).items():
        # checked here, so that a bad value is named as the --set it came from
        overrides.setdefault(section, {}).update(validate_partial(SECTION_TYPES[section], values, "--set", section))
    iterations = getattr(args, "iterations", None)
    if iterations is not None:
        if iterations < 1:
            raise ConfigError(f"--iterations must be positive, got {iterations}")
        overrides.setdefault("train", {})["iterations"] = iterations
    if getattr(args, "strategy", None):
        overrides.setdefault("eval", {})["strategy"] = args.strategy
    if getattr(args, "weights_root", None):  # replaces the profile's weights_root
        overrides.setdefault("model", {})["pretrained"] = str(Path(args.weights_root).expanduser().resolve())
    return resolve(args.experiment, profile, **overrides)
