"""Helpers the Snakemake files call: config validation with one-line errors, rule resources.

Snakemake hands ``--config KEY=VALUE`` over as it parsed it (``dvc_lock=false`` as the string
``'false'``, ``seeds=[0,1]`` as ``['0', '1']``, ``seeds=0,1`` as ``'0,1'``); :func:`check_config`
converts what people type to the declared types (:class:`spgnet.config.workflow_config.WorkflowConfig`,
pydantic) and words the first error on one line naming the key and the value.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jsonschema
import yaml

from spgnet.config import ConfigError, ResourceSpec, WorkflowConfig, available_profiles, is_profile_file, validate


def check_config(config: dict, schema_path: str | Path | None = None) -> None:
    """Convert the Snakemake ``config`` in place to its declared types (booleans from
    true/false/yes/no/1/0, ``seeds`` as a list of ints or None), or raise :class:`ConfigError`
    naming the first bad key and its value. ``schema_path`` (``workflow/schemas/config.schema.yaml``,
    the JSON schema of :class:`WorkflowConfig`) is checked against the converted config too."""
    checked = dataclasses.asdict(validate(WorkflowConfig, config, "config"))
    if checked["seeds"] is not None:
        checked["seeds"] = list(checked["seeds"])
    config.update(checked)
    if schema_path is not None:
        schema = yaml.safe_load(Path(str(schema_path)).read_text(encoding="utf-8"))
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
        if error is not None:  # the schema file disagrees with WorkflowConfig: a bug here, not in the config
            raise ConfigError(f"config: {schema_path} rejects {dict(config)}: {error.message} (regenerate it: "
                              "python -m spgnet.config)")
    if not is_profile_file(config["profile"]) and config["profile"] not in available_profiles():
        raise ConfigError(
            f"config: key 'profile': unknown profile '{config['profile']}' (valid: {', '.join(available_profiles())})"
        )


def resources_for(profile_resources: dict[str, ResourceSpec], kind: str) -> dict:
    """threads / mem_mb / gpu / processes of a rule kind ('train', 'evaluate', 'light') under a
    profile (its :class:`~spgnet.config.ResourceSpec`, whose defaults hold for a kind it does not
    list). ``processes``: how many processes a job of that kind runs on the CPU (``gpus: 0``; the
    profile's ``processes``, default 1); with GPUs it is the GPU count (one process per GPU)."""
    spec = profile_resources.get(kind) or ResourceSpec()
    processes = spec.gpus if spec.gpus > 0 else (spec.processes or 1)
    return {"threads": spec.threads, "mem_mb": spec.mem_mb, "gpu": spec.gpus, "processes": processes}


def check_data_roots(plan) -> None:
    """Real (non-synthetic) data sets must exist before anything runs."""
    for dataset, source in plan.datasets().items():
        if source.synthetic is None and not source.path().is_dir():
            raise ConfigError(
                f"config: key 'data_root': {source.path()} (datasets.{dataset}.root of profile "
                f"'{plan.profile.name}') is not a folder"
            )
