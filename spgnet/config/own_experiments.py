"""An experiments file of your own (``--experiments my.yaml``, the workflow's ``--config
experiments=my.yaml``): rows that are trained, evaluated, counted and reported beside the paper's,
without an edit of ``params/`` or of the package (issue 24, ``docs/own-data.md``)::

    title: My head against SPG on my roads      # the report's section (default: the file's name)
    seeds: [0, 1]                               # the seeds of these rows (default: the profile's)
    experiments:
      spg-roads:                                # t3-spg-sigmoid's network and recipe on my data
        base: t3-spg-sigmoid
        description: SPG(sigmoid), 2 x ResNet-18, on my roads
        train: {dataset: my_roads}              # a data set of the profile (its classes: dataset.yaml)
      my-head:
        base: spg-roads
        description: my head
        model: {builder: examples.my_head:build}  # a function of your own returning an nn.Module
    comparisons:                                # Welch's test over the seeds, a against b
      - {a: my-head, b: spg-roads, text: my head vs SPG(sigmoid)}

An entry is a registry entry (:mod:`spgnet.config.registry`): ``base`` names a paper row or one of
this file's, ``table`` and ``row`` are optional (the row's name, in the report's own section).
Names must differ from the paper's. A comparison's two rows must be trained on the same data set.
Each problem is one :class:`~spgnet.config.types.ConfigError` line naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field

from spgnet.config.mappings import load_yaml
from spgnet.config.types import FORBID_EXTRA, ConfigError, Seeds, validate

#: The keys of an experiments file of your own.
OWN_FILE_KEYS = ("title", "seeds", "experiments", "comparisons")


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` (row names of the same data set), under the heading ``text``."""

    __pydantic_config__ = FORBID_EXTRA
    a: Annotated[str, Field(min_length=1)]
    b: Annotated[str, Field(min_length=1)]
    text: str = ""

    @property
    def title(self) -> str:
        return self.text or f"{self.a} vs {self.b}"


@dataclass(frozen=True)
class _OwnFile:
    __pydantic_config__ = FORBID_EXTRA
    experiments: dict[str, dict]
    title: str | None = None
    seeds: Seeds | None = None
    comparisons: tuple[Comparison, ...] = ()


@dataclass(frozen=True)
class OwnExperiments:
    """What an experiments file of your own says beside its rows."""

    file: str
    title: str
    names: tuple[str, ...]  # its rows, in file order
    seeds: tuple[int, ...] | None = None
    comparisons: tuple[Comparison, ...] = field(default=())


def _read(path: Path) -> _OwnFile:
    if not path.is_file():
        raise ConfigError(f"{path}: experiments file not found")
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with an 'experiments' key")
    if "defaults" in raw:
        raise ConfigError(f"{path}: unknown key 'defaults' (the paper registry's defaults apply; give each row's "
                          f"settings, or a 'base' row)")
    values = {key: value for key, value in raw.items() if value not in (None, [], {}) or key == "experiments"}
    return validate(_OwnFile, values, str(path))


def own_entries(path: Path, paper: dict) -> tuple[Path, dict[str, dict]]:
    """(path, raw entries) of the file's ``experiments:``; a name of the paper's registry
    (``paper``) is an error."""
    own = _read(path)
    if not own.experiments:
        raise ConfigError(f"{path}: key 'experiments': no rows")
    for name in own.experiments:
        if name in paper:
            raise ConfigError(f"{path}: experiment '{name}': the name of a paper row (choose another name)")
    return path, own.experiments


def check_own_experiments(path: str | Path, registry: dict) -> OwnExperiments:
    """The file's title, rows, seeds and comparisons, checked against ``registry`` (the paper's
    rows and the file's: :func:`spgnet.config.registry.own_experiments` passes it)."""
    path = Path(path)
    own = _read(path)
    for index, comparison in enumerate(own.comparisons):
        where = f"{path}: key 'comparisons' (item {index})"
        for key in ("a", "b"):
            name = getattr(comparison, key)
            if name not in registry:
                raise ConfigError(f"{where}: key '{key}': unknown experiment '{name}'")
            if not registry[name].reproducible:
                raise ConfigError(f"{where}: key '{key}': '{name}' is a row the paper cites; it has no runs")
        a, b = registry[comparison.a], registry[comparison.b]
        if a.train.dataset != b.train.dataset:
            raise ConfigError(f"{where}: '{a.name}' is trained on '{a.train.dataset}' and '{b.name}' on "
                              f"'{b.train.dataset}'; a comparison needs the same data")
    return OwnExperiments(file=str(path), title=own.title or path.stem, names=tuple(own.experiments),
                          seeds=own.seeds, comparisons=own.comparisons)


__all__ = ["OWN_FILE_KEYS", "Comparison", "OwnExperiments", "check_own_experiments", "own_entries"]
