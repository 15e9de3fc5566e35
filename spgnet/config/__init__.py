"""Typed configuration: the only code that reads ``params/``.

The registry ``params/experiments.yaml`` holds one named experiment per row of the paper's tables
(with the paper's numbers for that row); ``params/profiles/<name>.yaml`` holds what differs between
running on the embedded synthetic data on a laptop (``mini``, ``smoke``) and at paper scale on GPUs
(``paper``): data roots, schedule, hardware. :func:`build_config` merges an experiment with a
profile and the overrides of a command line into one :class:`RunConfig`; nothing else in the
package looks at the YAML files. Every value is checked against its declared type as the file is
read (pydantic), so a bad one fails with one line naming the file, key and value before any work
starts.

The modules, one job each (each imports its siblings, never this package's names):

* :mod:`.paths` -- ``PROJECT_ROOT`` (``SPGNET_ROOT``), the ``params/`` files, :func:`project_path`;
* :mod:`.types` -- :class:`ConfigError`, the known names, the value types, :func:`validate` /
  :func:`validate_partial` and their one-line errors, :func:`check_seeds`;
* :mod:`.mappings` -- reading a YAML file, :func:`deep_merge`;
* :mod:`.sections` -- :class:`ModelConfig`, :class:`TrainConfig`, :class:`EvalConfig`,
  :class:`PaperNumbers`, :class:`DatasetSource`, :class:`RunConfig`; :func:`config_hash`;
* :mod:`.registry` -- :class:`Experiment`, :func:`load_registry`, :func:`training_groups`;
* :mod:`.profiles` -- :class:`Profile`, :func:`load_profile` (a ``base`` profile merged under);
* :mod:`.overrides` -- :func:`parse_overrides` (``--set``), :func:`read_settings` (``--settings``);
* :mod:`.build` -- :func:`build_config` (and :func:`config_from_args`, its adapter for a parsed
  command line), :func:`resolve`, its merge step;
* :mod:`.description` -- a folder data set's ``dataset.yaml``: :func:`load_description`;
* :mod:`.own_experiments` -- an experiments file of your own rows (``--experiments``);
* :mod:`.workflow_config` -- :class:`WorkflowConfig` (Snakemake's ``--config``) and its JSON schema,
  written by ``python -m spgnet.config``.

``PROJECT_ROOT``, ``PARAMS_DIR``, ``EXPERIMENTS_FILE`` and ``PROFILES_DIR`` read here are the current
values of :mod:`.paths` (where a test points them elsewhere).
"""

from __future__ import annotations

import spgnet.config.paths as paths
from spgnet.config.build import build_config, config_from_args, resolve
from spgnet.config.description import DESCRIPTION_FILE, DatasetDescription, load_description
from spgnet.config.mappings import deep_merge
from spgnet.config.own_experiments import Comparison, OwnExperiments
from spgnet.config.mappings import load_yaml as _load_yaml  # spgnet.claims_config reads its file with it
from spgnet.config.overrides import OVERRIDE_SECTIONS, SECTION_TYPES, parse_overrides, read_settings
from spgnet.config.paths import project_path
from spgnet.config.profiles import (
    PROFILE_BASE_KEY, DatasetOverrides, Profile, ResourceSpec, TrackingOptions, available_profiles, is_profile_file,
    load_profile, raw_profile,
)
from spgnet.config.registry import (
    OWN_TABLE, Experiment, get_experiment, load_registry, own_experiments, table_order, training_groups,
    training_run_of,
)
from spgnet.config.sections import (
    NOT_HASHED, DatasetSource, EvalConfig, ModelConfig, PaperNumbers, RunConfig, SyntheticSpec, TrainConfig,
    config_hash,
)
from spgnet.config.types import (
    ARCHITECTURES, BACKBONES, DATASET_KINDS, DATASET_SPLITS, DATASETS, DECODERS, LINKS, NORM_LAYERS, OHEM_RULES, OHEM_SCOPES,
    RULE_KINDS, SPLITS, STRATEGIES, ConfigError, check_seeds, describe, validate, validate_partial,
)
from spgnet.config.workflow_config import (
    WORKFLOW_SCHEMA_FILE, WorkflowConfig, render_workflow_schema, workflow_json_schema,
)

_PATHS = ("PROJECT_ROOT", "PARAMS_DIR", "EXPERIMENTS_FILE", "PROFILES_DIR")


def __getattr__(name: str):
    if name in _PATHS:
        return getattr(paths, name)
    raise AttributeError(f"module 'spgnet.config' has no attribute '{name}'")


__all__ = [
    "ARCHITECTURES", "BACKBONES", "DATASETS", "DATASET_KINDS", "DESCRIPTION_FILE", "OWN_TABLE", "Comparison",
    "DatasetDescription", "OwnExperiments", "is_profile_file", "load_description", "own_experiments", "DATASET_SPLITS", "DECODERS", "EXPERIMENTS_FILE", "LINKS", "NORM_LAYERS",
    "NOT_HASHED", "OHEM_RULES", "OHEM_SCOPES", "OVERRIDE_SECTIONS", "PARAMS_DIR", "PROFILES_DIR", "PROFILE_BASE_KEY",
    "PROJECT_ROOT", "RULE_KINDS", "SECTION_TYPES", "SPLITS", "STRATEGIES", "WORKFLOW_SCHEMA_FILE", "ConfigError",
    "DatasetOverrides", "DatasetSource", "EvalConfig", "Experiment", "ModelConfig", "PaperNumbers", "Profile",
    "ResourceSpec", "RunConfig", "SyntheticSpec", "TrackingOptions", "TrainConfig", "WorkflowConfig",
    "available_profiles", "build_config", "check_seeds", "config_from_args", "config_hash", "deep_merge", "describe",
    "get_experiment", "load_profile", "load_registry", "parse_overrides", "project_path", "raw_profile",
    "read_settings", "render_workflow_schema", "resolve", "table_order", "training_groups", "training_run_of",
    "validate", "validate_partial", "workflow_json_schema",
]
