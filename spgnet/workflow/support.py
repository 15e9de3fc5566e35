"""Helpers the Snakemake files call: config validation with one-line errors, rule resources.

Snakemake hands ``--config KEY=VALUE`` over as it parsed it (``dvc_lock=false`` as the string
``'false'``, ``seeds=[0,1]`` as ``['0', '1']``, ``seeds=0,1`` as ``'0,1'``); :func:`check_config`
converts what people type to the declared types (:class:`spgnet.config_schema.WorkflowConfig`,
pydantic) and words the first error on one line naming the key and the value.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from spgnet.config import ConfigError, available_profiles
from spgnet.config_schema import WorkflowConfig, validate


def check_config(config: dict, schema_path: str | Path | None = None) -> None:
    """Convert the Snakemake ``config`` in place to its declared types (booleans from
    true/false/yes/no/1/0, ``seeds`` as a list of ints or None), or raise :class:`ConfigError`
    naming the first bad key and its value. ``schema_path`` (``workflow/schemas/config.schema.yaml``,
    the JSON schema of :class:`WorkflowConfig`) is checked against the converted config too."""
    checked = validate(WorkflowConfig, config, "config").model_dump()
    if checked["seeds"] is not None:
        checked["seeds"] = list(checked["seeds"])
    config.update(checked)
    if schema_path is not None:
        schema = yaml.safe_load(Path(str(schema_path)).read_text(encoding="utf-8"))
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
        if error is not None:  # the schema file disagrees with WorkflowConfig: a bug here, not in the config
            raise ConfigError(f"config: {schema_path} rejects {dict(config)}: {error.message} (regenerate it: "
                              "python -m spgnet.config_schema)")
    if config["profile"] not in available_profiles():
        raise ConfigError(
            f"config: key 'profile': unknown profile '{config['profile']}' (valid: {', '.join(available_profiles())})"
        )


def resources_for(profile_resources: dict, kind: str) -> dict:
    """threads / mem_mb / gpu / processes of a rule kind ('train', 'evaluate', 'light') under a
    profile. ``processes``: how many processes a job of that kind runs on the CPU (``gpus: 0``;
    the profile's ``processes``, default 1); with GPUs it is the GPU count (one process per GPU)."""
    spec = dict(profile_resources.get(kind) or {})
    gpu = int(spec.get("gpus", 0))
    processes = gpu if gpu > 0 else int(spec.get("processes", 1))
    return {"threads": int(spec.get("threads", 1)), "mem_mb": int(spec.get("mem_mb", 2000)), "gpu": gpu,
            "processes": processes}


def check_data_roots(plan) -> None:
    """Real (non-synthetic) data sets must exist before anything runs."""
    for dataset, source in plan.datasets().items():
        if source.synthetic is None and not source.path().is_dir():
            raise ConfigError(
                f"config: key 'data_root': {source.path()} (datasets.{dataset}.root of profile "
                f"'{plan.profile.name}') is not a folder"
            )
