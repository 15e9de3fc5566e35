"""Profiles: ``params/profiles/<name>.yaml``, what differs between running on the embedded
synthetic data on a laptop (``mini``, ``smoke``), a CPU rehearsal of the paper path
(``rehearsal``) and paper scale on GPUs (``paper``): data roots, schedule, hardware.

A profile file may name a ``base`` profile whose settings it overrides (a deep merge,
:func:`raw_profile`). :func:`load_profile` validates the merged mapping once as a :class:`Profile`:
every value, including the partial ``model`` / ``train`` / ``eval`` sections (checked against
:class:`~spgnet.config.sections.ModelConfig` etc.), the data sets' overrides, the resources and
the seeds, is converted to its declared type there or fails with one line naming the file, the key
and the value (:mod:`spgnet.config.types`). What it does afterwards needs its arguments or other
files: the ``${data_root}`` of the dataset roots, the weights folder taken from the project root,
the named experiments looked up in the registry, a CPU job's ``processes`` checked against its
kind and GPUs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import spgnet.config.paths as paths
from spgnet.config.mappings import deep_merge, load_yaml
from spgnet.config.registry import load_registry
from spgnet.config.sections import DatasetSource, EvalOverrides, ModelOverrides, TrainOverrides
from spgnet.config.types import (
    DATASET_KINDS, DATASETS, FORBID_EXTRA, ConfigError, DatasetName, NonNegativeInt, PositiveInt, RuleKind, Seeds, TableLabel, partial_of,
    validate,
)


@dataclass(frozen=True)
class ResourceSpec:
    """A profile's ``resources.<rule kind>``: what Snakemake reserves for each job
    (:func:`spgnet.workflow.support.resources_for`)."""

    __pydantic_config__ = FORBID_EXTRA
    threads: PositiveInt = 1
    mem_mb: PositiveInt = 2000
    gpus: NonNegativeInt = 0
    # processes of a CPU job (gpus: 0; train only): torchrun --nproc_per_node N on the CPU, each
    # process with threads / N OpenMP threads (None: 1; with GPUs, one process per GPU)
    processes: PositiveInt | None = None


@dataclass(frozen=True)
class DatasetOverrides:
    """A profile's ``dataset_overrides.<dataset>``: partial train / eval sections (what a data
    set changes, e.g. the crop), laid over the profile's own."""

    __pydantic_config__ = FORBID_EXTRA
    train: TrainOverrides = field(default_factory=dict)
    eval: EvalOverrides = field(default_factory=dict)


@dataclass(frozen=True)
class TrackingOptions:
    """A profile's ``tracking``: MLflow options (:mod:`spgnet.serving.mlflow_model`)."""

    __pydantic_config__ = FORBID_EXTRA
    log_model: bool = False  # log + register the trained network in MLflow


#: A profile's ``tracking``: the keys given, typed as :class:`TrackingOptions` declares them.
TrackingOverrides = partial_of(TrackingOptions)


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the embedded default and paper scale.

    ``model``, ``train``, ``eval``, ``dataset_overrides.<dataset>.train|eval`` and ``tracking`` hold
    partial sections: the keys the file gives, each converted to the type its section declares."""

    __pydantic_config__ = FORBID_EXTRA
    name: str
    description: str
    datasets: dict[DatasetName, DatasetSource]
    seeds: Seeds = (0,)
    # {table: seeds} for that table's runs (spgnet.workflow.plan; each table checked there)
    table_seeds: dict[TableLabel, Seeds] = field(default_factory=dict)
    experiments: tuple[str, ...] | None = None  # None: every reproducible experiment
    model: ModelOverrides = field(default_factory=dict)  # overrides of every experiment's model section
    train: TrainOverrides = field(default_factory=dict)  # ... of the train section
    eval: EvalOverrides = field(default_factory=dict)  # ... of the eval section
    dataset_overrides: dict[DatasetName, DatasetOverrides] = field(default_factory=dict)  # {dataset: {train: {...}}}
    resources: dict[RuleKind, ResourceSpec] = field(default_factory=dict)  # Snakemake threads / mem_mb / gpus / processes
    report_dir: str = "reports"  # where tables.md and figures/ are written
    tracking: TrackingOverrides = field(default_factory=dict)  # MLflow options, e.g. {log_model: true}
    weights_root: str | None = None  # folder of torchvision's ImageNet files; None: random init
    # each training job also evaluates its run's own row from the checkpoint it wrote (CPU profiles:
    # one process start fewer per run; the row's eval settings then rerun its training; spgnet.workflow.plan)
    evaluate_in_train_job: bool = False
    # not keys of the file: where a profile outside params/profiles/ was read from (None for those
    # inside), and the experiments file of your own rows it was loaded with (--experiments)
    file: str | None = None
    experiments_file: str | None = None

    @property
    def arg(self) -> str:
        """What ``--profile`` takes to load this profile again: its name, or its file."""
        return self.file or self.name


_PROFILE_KEYS = {f.name for f in fields(Profile)} - {"name", "file", "experiments_file"}
#: The endings of a profile given as a file (``--profile my-profile.yaml``) rather than by name.
PROFILE_FILE_SUFFIXES = (".yaml", ".yml")
#: A profile file's key naming the profile it overrides (not a :class:`Profile` field).
PROFILE_BASE_KEY = "base"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in paths.PROFILES_DIR.glob("*.yaml"))


def is_profile_file(name: str) -> bool:
    """True when ``--profile`` names a file (``my-profile.yaml``, ``dir/p.yml``), not a profile of
    ``params/profiles/``."""
    return name.endswith(PROFILE_FILE_SUFFIXES) or "/" in name


def profile_file(text: str) -> tuple[str, Path]:
    """(name, path) of a profile given as a file: its name is the file's stem (results go to
    ``results/<name>/``), which must not be one of ``params/profiles/``' names."""
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"{text}: profile file not found")
    name = path.stem
    if name in available_profiles():
        raise ConfigError(f"{text}: a profile file may not share the name '{name}' of params/profiles/{name}.yaml "
                          f"(its results would go to results/{name}/); rename the file")
    return name, path


def raw_profile(name: str, seen: tuple[str, ...] = ()) -> tuple[dict, Path]:
    """The settings of ``params/profiles/<name>.yaml`` (or of the file ``name`` names, see
    :func:`is_profile_file`) as a mapping, with its ``base`` profile's merged under them
    (:func:`deep_merge`: the file's keys replace the base's, mapping by mapping; the base's own
    ``base`` first, if it names one), and the file's path."""
    profiles_dir = paths.PROFILES_DIR
    if is_profile_file(name) and not seen:
        name, path = profile_file(name)
    else:
        path = profiles_dir / f"{name}.yaml"
    if not path.exists():
        if seen:
            raise ConfigError(f"{profiles_dir / (seen[-1] + '.yaml')}: key '{PROFILE_BASE_KEY}': unknown profile "
                              f"'{name}' (valid profiles: {', '.join(available_profiles())})")
        raise ConfigError(f"unknown profile '{name}' (valid profiles: {', '.join(available_profiles())})")
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    unknown = sorted(set(raw) - _PROFILE_KEYS - {PROFILE_BASE_KEY})
    if unknown:
        valid = sorted(_PROFILE_KEYS | {PROFILE_BASE_KEY})
        raise ConfigError(f"{path}: unknown key '{unknown[0]}' (valid keys: {', '.join(valid)})")
    if PROFILE_BASE_KEY not in raw:
        return raw, path
    base = raw.pop(PROFILE_BASE_KEY)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: key '{PROFILE_BASE_KEY}': expected the name of a profile, got {ascii(base)}")
    if base == name or base in seen:
        raise ConfigError(f"{path}: key '{PROFILE_BASE_KEY}': profile '{name}' has a cyclic '{PROFILE_BASE_KEY}' chain")
    base_raw, _ = raw_profile(base, seen + (name,))
    return deep_merge(base_raw, raw), path


def load_profile(name: str, data_root: str | None = None, experiments: str | None = None) -> Profile:
    """Read ``params/profiles/<name>.yaml`` or the profile file ``name`` names (on top of the profile
    its ``base`` key names, if any: :func:`raw_profile`) and validate it once as a :class:`Profile`;
    ``data_root`` replaces every dataset root's ``${data_root}`` placeholder (the paper profile's
    roots are relative to it); ``experiments``: a file of your own rows
    (:mod:`spgnet.config.registry`) whose names the profile's ``experiments`` may list."""
    raw, path = raw_profile(name)
    file = name if is_profile_file(name) else None
    # an empty key (``seeds:``, ``experiments: []``) means its default
    values = {"description": "", **{k: v for k, v in raw.items() if v not in (None, [], {})},
              "name": Path(name).stem if file else name}
    profile = validate(Profile, values, str(path))
    _check_processes(profile.resources, path)
    datasets = {}
    for dataset, source in profile.datasets.items():
        if "${data_root}" in source.root:
            if not data_root:
                raise ConfigError(f"{path}: datasets.{dataset}.root needs data_root (pass --config data_root=DIR)")
            source = dataclasses.replace(source, root=source.root.replace("${data_root}", str(data_root)))
        datasets[dataset] = dataclasses.replace(source, kind=_kind(dataset, source, path))
    named = profile.train.get("dataset")
    if named is not None and named not in datasets:
        raise ConfigError(f"{path}: key 'train.dataset': the profile has no datasets.{named} "
                          f"(valid: {', '.join(datasets)})")
    for dataset in profile.dataset_overrides:
        if dataset not in datasets:
            raise ConfigError(f"{path}: key 'dataset_overrides.{dataset}': the profile has no datasets.{dataset}")
    profile = dataclasses.replace(profile, datasets=datasets, weights_root=_weights_root(profile.weights_root, path),
                                  file=file, experiments_file=str(experiments) if experiments else None)
    if profile.experiments:
        registry = load_registry(extra=profile.experiments_file)
        for exp in profile.experiments:
            if exp not in registry:
                hint = (f"not a row of {profile.experiments_file}" if profile.experiments_file else
                        "rows of your own need their file: --experiments FILE, --config experiments=FILE")
                raise ConfigError(f"{path}: key 'experiments': unknown experiment '{exp}' ({hint}; "
                                  f"`spgnet experiments` lists the paper's)")
    return profile


def _kind(name: str, source: DatasetSource, path: Path) -> str:
    """The reader of data set ``name``: its ``kind``, else the built-in data set of that name."""
    if source.kind is not None:
        if source.kind != "folder" and name in DATASETS and source.kind != name:
            raise ConfigError(f"{path}: key 'datasets.{name}.kind': the data set '{name}' is read as '{name}', "
                              f"got {source.kind!r}")
        return source.kind
    if name not in DATASETS:
        raise ConfigError(f"{path}: key 'datasets.{name}.kind': missing (one of {', '.join(DATASET_KINDS)}; "
                          f"'folder' for a tree described by its dataset.yaml)")
    return name


def _check_processes(resources: dict[str, ResourceSpec], path: Path) -> None:
    """``resources.<kind>.processes`` is the process count of a CPU training job (``gpus: 0``;
    ``torchrun`` on the CPU, :func:`spgnet.workflow.gpu_slots.launcher`): with GPUs a job runs one process
    per GPU, and only training runs several."""
    for kind, spec in resources.items():
        processes = spec.processes
        if processes is None:
            continue
        if kind != "train" and processes != 1:
            raise ConfigError(f"{path}: key 'resources.{kind}.processes': only train jobs run several processes, "
                              f"got {processes}")
        if spec.gpus > 0 and processes != spec.gpus:
            raise ConfigError(f"{path}: key 'resources.{kind}.processes': a GPU job runs one process per GPU "
                              f"(gpus: {spec.gpus}); processes is for CPU jobs (gpus: 0), got {processes}")


def _weights_root(value, path: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: weights_root must be a folder name, got {value!r}")
    return str(paths.project_path(value))
