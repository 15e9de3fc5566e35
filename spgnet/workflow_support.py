"""Helpers the Snakemake files call: config validation with one-line errors, rule resources.

Snakemake's own ``validate`` reports a schema violation over many lines; the pipeline's promise
is one line naming the key, so the check runs jsonschema itself and words the first error.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from spgnet.config import ConfigError, available_profiles


def _as_int(value):
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def normalise_config(config: dict) -> dict:
    """``--config seeds=[0,1]`` arrives as strings and ``seeds=1`` as a scalar: make a list of ints."""
    seeds = config.get("seeds")
    if seeds is not None:
        config["seeds"] = [_as_int(s) for s in seeds] if isinstance(seeds, list) else [_as_int(seeds)]
    return config


def check_config(config: dict, schema_path: str | Path) -> None:
    """Raise :class:`ConfigError` naming the first bad key of the Snakemake ``config``."""
    normalise_config(config)
    schema = yaml.safe_load(Path(str(schema_path)).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        error = errors[0]
        if error.validator == "additionalProperties":
            unknown = sorted(set(config) - set(schema["properties"]))
            raise ConfigError(
                f"config: unknown key '{unknown[0]}' (valid keys: {', '.join(sorted(schema['properties']))})"
            )
        key = ".".join(str(p) for p in error.path) or error.validator_value
        raise ConfigError(f"config: key '{key}': {error.message}")
    if config["profile"] not in available_profiles():
        raise ConfigError(
            f"config: key 'profile': unknown profile '{config['profile']}' (valid: {', '.join(available_profiles())})"
        )


def resources_for(profile_resources: dict, kind: str) -> dict:
    """threads / mem_mb / gpu of a rule kind ('train', 'evaluate', 'light') under a profile."""
    spec = dict(profile_resources.get(kind) or {})
    return {"threads": int(spec.get("threads", 1)), "mem_mb": int(spec.get("mem_mb", 2000)), "gpu": int(spec.get("gpus", 0))}


def check_data_roots(plan) -> None:
    """Real (non-synthetic) data sets must exist before anything runs."""
    for dataset, source in plan.datasets().items():
        if source.synthetic is None and not source.path().is_dir():
            raise ConfigError(
                f"config: key 'data_root': {source.path()} (datasets.{dataset}.root of profile "
                f"'{plan.profile.name}') is not a folder"
            )
