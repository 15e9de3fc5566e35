"""The registry ``params/experiments.yaml``: one named :class:`Experiment` per row of the paper's
tables, with the paper's numbers for that row.

Shape of the file: ``defaults:`` (partial ``model`` / ``train`` / ``eval`` sections every row starts
from) and ``experiments: {name: entry}``; an entry has ``table``, ``row``, ``description``,
``columns``, ``paper`` and its ``model`` / ``train`` / ``eval`` sections, or ``cited: true`` for a
row the paper cites from another work (nothing to run). An entry may name a ``base`` experiment and
override parts of it (a deep merge; it inherits how the base is built and run, never its table,
row label or numbers). Every value is typed as the file is read (:mod:`spgnet.config.types`): a bad
one is a one-line :class:`~spgnet.config.types.ConfigError` naming the file, the experiment, the key
and the value.

Rows whose model and training settings are identical share one training run
(:func:`training_groups`): Table 12's GAP/TILED/AP rows, for instance, evaluate one trained network
three ways.

Your own rows live in a file of their own outside ``params/`` (``--experiments my.yaml``; the
workflow's ``--config experiments=my.yaml``; ``docs/own-data.md``), read by
:mod:`spgnet.config.own_experiments`: its ``experiments:`` entries are added to the paper's (a
``base`` may name a paper row, ``table`` and ``row`` are optional), every function here takes it as
``extra``; :func:`own_experiments` gives the file's title, seeds and comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import spgnet.config.paths as paths
from spgnet.config.mappings import deep_merge, load_yaml
from spgnet.config.own_experiments import OwnExperiments, check_own_experiments, own_entries
from spgnet.config.sections import EvalConfig, ModelConfig, PaperNumbers, TrainConfig, config_hash
from spgnet.config.types import ConfigError, validate, validate_partial

#: The sections of a registry row, each with its type.
_SECTIONS = (("model", ModelConfig), ("train", TrainConfig), ("eval", EvalConfig))


@dataclass(frozen=True)
class Experiment:
    """One row of one of the paper's tables."""

    name: str
    table: str
    row: str
    description: str
    columns: dict  # the row's descriptive cells as the paper prints them ("#Stage": 2, ...)
    paper: PaperNumbers
    model: ModelConfig | None  # None for rows the paper cites from other works
    train: TrainConfig | None
    eval: EvalConfig | None
    source: str | None = None  # the experiments file of a row of your own; None: the paper's registry

    @property
    def reproducible(self) -> bool:
        return self.model is not None

    @property
    def own(self) -> bool:
        """True for a row of your own experiments file (not a row of the paper)."""
        return self.source is not None


def _raw_registry(path: Path) -> tuple[dict, dict[str, dict]]:
    data = load_yaml(path)
    if not isinstance(data, dict) or "experiments" not in data:
        raise ConfigError(f"{path}: expected a mapping with an 'experiments' key")
    defaults = data.get("defaults") or {}
    raw = data["experiments"]
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: 'experiments' must map names to entries")
    return defaults, raw


def _expand(name: str, raw: dict[str, dict], path: Path, seen: tuple[str, ...] = ()) -> dict:
    """The entry ``name`` with its chain of ``base`` experiments merged in."""
    if name in seen:
        raise ConfigError(f"{path}: experiment '{name}' has a cyclic 'base' chain")
    entry = raw[name]
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: experiment '{name}' must be a mapping")
    base_name = entry.get("base")
    if base_name is None:
        return {k: v for k, v in entry.items() if k != "base"}
    if base_name not in raw:
        raise ConfigError(f"{path}: experiment '{name}' has unknown base '{base_name}'")
    base = _expand(base_name, raw, path, seen + (name,))
    # A row inherits how its base is built and run, never its table, row label or numbers.
    base = {k: v for k, v in base.items() if k in ("model", "train", "eval", "description")}
    return deep_merge(base, {k: v for k, v in entry.items() if k != "base"})


_ENTRY_KEYS = {"table", "row", "description", "columns", "paper", "model", "train", "eval", "cited"}


#: The table label of your own rows (an experiments file's entries without a ``table``).
OWN_TABLE = "own"


def _experiment(name: str, entry: dict, defaults: dict, path: Path, own: bool = False) -> Experiment:
    where = f"{path}: experiment '{name}'"
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (valid keys: {', '.join(sorted(_ENTRY_KEYS))})")
    if own:
        entry = {"table": OWN_TABLE, "row": name, **entry}
    for required in ("table", "row"):
        if required not in entry:
            raise ConfigError(f"{where}: missing key '{required}'")
    paper = validate(PaperNumbers, entry.get("paper") or {}, where, "paper")
    if entry.get("cited"):
        model = train = evaluation = None
    else:
        sections = {}
        for key, cls in _SECTIONS:
            values = entry.get(key) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{where}: key '{key}': expected a mapping, got {ascii(values)}")
            sections[key] = validate(cls, deep_merge(defaults.get(key) or {}, values), where, key)
        model, train, evaluation = sections["model"], sections["train"], sections["eval"]
    return Experiment(
        name=name,
        table=str(entry["table"]),
        row=str(entry["row"]),
        description=str(entry.get("description", "")),
        columns=dict(entry.get("columns") or {}),
        paper=paper,
        model=model,
        train=train,
        eval=evaluation,
        source=str(path) if own else None,
    )


_REGISTRY_CACHE: dict[tuple, dict[str, Experiment]] = {}


def load_registry(path: Path | None = None, extra: str | Path | None = None) -> dict[str, Experiment]:
    """All experiments of the registry (default ``params/experiments.yaml``), in file order, keyed
    by name, then those of ``extra`` (an experiments file of your own rows, see the module's
    docstring). Read once per pair of files (and again when ``extra`` changes)."""
    path = Path(path) if path is not None else paths.EXPERIMENTS_FILE
    key = (path, None if extra is None else _file_key(Path(extra)))
    if key not in _REGISTRY_CACHE:
        defaults, raw = _raw_registry(path)
        for section, cls in _SECTIONS:
            validate_partial(cls, defaults.get(section), f"{path}: defaults", section)
        registry = {name: _experiment(name, _expand(name, raw, path), defaults, path) for name in raw}
        if extra is not None:
            extra_path, own = own_entries(Path(extra), registry)
            merged = {**raw, **own}
            for name in own:
                registry[name] = _experiment(name, _expand(name, merged, extra_path), defaults, extra_path, own=True)
            check_own_experiments(extra_path, registry)  # its comparisons, whichever verb reads it
        _REGISTRY_CACHE[key] = registry
    return _REGISTRY_CACHE[key]


def _file_key(path: Path) -> tuple:
    try:
        stat = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def own_experiments(extra: str | Path) -> OwnExperiments:
    """The title, rows, seeds and comparisons of the experiments file ``extra``, checked."""
    return check_own_experiments(extra, load_registry(extra=extra))


def get_experiment(name: str, path: Path | None = None, extra: str | Path | None = None) -> Experiment:
    """Experiment ``name`` (of the paper's registry, or of ``extra``); :class:`ConfigError` listing
    the valid names if there is none."""
    registry = load_registry(path, extra)
    if name not in registry:
        raise ConfigError(f"unknown experiment '{name}' (valid names: {', '.join(registry)})")
    return registry[name]


def table_order(table: str) -> tuple:
    """Sort key for table labels: "1" < "2" < ... < "12" < "4.6"."""
    try:
        return (0, float(table))
    except ValueError:
        return (1, table)


def training_groups(registry: dict[str, Experiment] | None = None) -> dict[str, list[str]]:
    """Map each training run's canonical name to the experiments that evaluate it.

    Rows with identical model and train sections are one training run, named after the first of
    them in registry order; each row then only differs in how it is evaluated.
    """
    registry = registry if registry is not None else load_registry()
    by_hash: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for exp in registry.values():
        if not exp.reproducible:
            continue
        key = config_hash(exp.model, exp.train)
        canonical = by_hash.setdefault(key, exp.name)
        groups.setdefault(canonical, []).append(exp.name)
    return groups


def training_run_of(name: str) -> str:
    """Canonical training-run name of experiment ``name`` (see :func:`training_groups`)."""
    for canonical, members in training_groups().items():
        if name in members:
            return canonical
    get_experiment(name)  # raises for unknown names
    raise ConfigError(f"experiment '{name}' is a cited row; it has no training run")
