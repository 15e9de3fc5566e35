"""The workflow's settings: :class:`WorkflowConfig`, Snakemake's ``config``
(``workflow/config/config.yaml``, then ``--config KEY=VALUE``), and the JSON schema Snakemake
checks it against, ``workflow/schemas/config.schema.yaml``, generated from it.

:func:`spgnet.workflow.support.check_config` validates the config with it (one-line errors,
:mod:`spgnet.config.types`). ``python -m spgnet.config`` (:func:`main`) rewrites the schema file;
``tests/test_config_schema.py`` checks that the file is what :func:`render_workflow_schema` gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import ConfigDict, Field, TypeAdapter

import spgnet.config.paths as paths
from spgnet.atomic import atomic_path
from spgnet.config.types import Seeds


@dataclass(frozen=True)
class WorkflowConfig:
    """Snakemake's config: workflow/config/config.yaml, then --config KEY=VALUE on the command line."""

    __pydantic_config__ = ConfigDict(extra="forbid", title="Snakemake configuration of spgnet-repro")
    profile: Annotated[str, Field(description="name of a file params/profiles/<profile>.yaml, or a profile file "
                                              "of your own (my-profile.yaml)")]
    experiments: Annotated[str | None, Field(
        description="an experiments file of your own rows, run and reported beside the paper's "
                    "(docs/own-data.md)")] = None
    data_root: Annotated[str | None, Field(
        description="root folder of the real data sets (needed by the paper profile)")] = None
    seeds: Annotated[Seeds | None, Field(
        description="seeds to train each experiment under: 0,1,2 or [0,1,2] (null: the profile's)")] = None
    weights_root: Annotated[str | None, Field(
        description="folder of torchvision's ImageNet files under their own names (null: the profile's weights_root)")] = None
    set: Annotated[dict[str, str | list[str]] | None, Field(
        description="settings to override without editing params/, per training run (its name, as under "
                    "results/<profile>/runs/) or 'all': SECTION.KEY=VALUE items as `spgnet train --set` takes "
                    "them, e.g. --config 'set={t3-1stage: [train.lr=0.02]}'")] = None
    dvc_lock: Annotated[bool, Field(
        description="record the outputs in dvc.lock at the end (only for the profile dvc.yaml describes); "
                    "true/false, yes/no, 1/0")] = True


def workflow_json_schema() -> dict:
    """JSON schema of :class:`WorkflowConfig` (what ``workflow/schemas/config.schema.yaml`` holds)."""
    schema = TypeAdapter(WorkflowConfig).json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


#: Where :func:`main` writes :func:`workflow_json_schema` (relative to the project root).
WORKFLOW_SCHEMA_FILE = "workflow/schemas/config.schema.yaml"


def render_workflow_schema() -> str:
    """The text of ``workflow/schemas/config.schema.yaml``."""
    header = ("# Generated from spgnet.config.workflow_config.WorkflowConfig by `python -m spgnet.config`; "
              "do not edit.\n")
    return header + yaml.safe_dump(workflow_json_schema(), sort_keys=False, width=100, allow_unicode=True)


def main() -> int:
    """Write ``workflow/schemas/config.schema.yaml`` from :class:`WorkflowConfig`."""
    with atomic_path(paths.PROJECT_ROOT / WORKFLOW_SCHEMA_FILE) as tmp:
        Path(tmp).write_text(render_workflow_schema(), encoding="utf-8")
    return 0
