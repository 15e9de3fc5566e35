"""Typed configuration: the only code that reads ``params/``.

The registry ``params/experiments.yaml`` holds one named experiment per row of the paper's tables
(with the paper's numbers for that row); ``params/profiles/<name>.yaml`` holds what differs between
running on the embedded synthetic data on a laptop (``mini``, ``smoke``) and at paper scale on GPUs
(``paper``): data roots, schedule, hardware. :func:`resolve` merges an experiment with a profile
into one :class:`RunConfig`; nothing else in the package looks at the YAML files. Every value is
checked against its declared type as the file is read (:mod:`spgnet.config_schema`, pydantic), so
a bad one fails with one line naming the file, key and value before any work starts.

An experiment may name a ``base`` experiment and override parts of it (a deep merge). Rows whose
model and training settings are identical share one training run (:func:`training_groups`): Table
12's GAP/TILED/AP rows, for instance, evaluate one trained network three ways.

It is one module on purpose: the typed sections, the registry, the profiles and :func:`resolve`
are the single place where ``params/`` becomes a run's settings (the types themselves live in
:mod:`spgnet.config_schema`); splitting them would spread that one job over several files.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from spgnet.config_schema import (
    FORBID_EXTRA, Amp, Architecture, Backbones, ConfigError, DatasetName, DatasetOverrides, Decoder, ImageSide,
    Device, Float, Fraction, Link, NonNegativeFloat, NonNegativeInt, NormName, OhemRule, OhemScope, PositiveFloat,
    PositiveInt, Probability, ResourceSpec, RuleKind, Scales, Seeds, Split, Strategy, SyntheticSpec, validate,
    validate_partial,
)
from spgnet.config_schema import DATASET_SPLITS

#: Project root (the folder holding ``params/``); ``SPGNET_ROOT`` overrides it.
PROJECT_ROOT = Path(os.environ.get("SPGNET_ROOT", Path(__file__).resolve().parent.parent))
PARAMS_DIR = PROJECT_ROOT / "params"
EXPERIMENTS_FILE = PARAMS_DIR / "experiments.yaml"
PROFILES_DIR = PARAMS_DIR / "profiles"


# --------------------------------------------------------------------------------------------
# Typed sections
# --------------------------------------------------------------------------------------------


#: ``field(metadata=NOT_HASHED)``: a setting that does not change the trained network (or the
#: evaluation), left out of :func:`config_hash`.
NOT_HASHED = {"hash": None}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one network (Sections 3.1-3.4, Tables 3-7, 9, 11, 12)."""

    __pydantic_config__ = FORBID_EXTRA
    arch: Architecture = "spgnet"  # "spgnet", or a Table 1 peer registered in spgnet.models
    backbones: Backbones = ("resnet18",)  # one per stage (Table 6 mixes them)
    channels: PositiveInt = 128  # decoder channels D (Table 9)
    link: Link = "spg_sigmoid"  # stage-to-stage link (Tables 3, 4)
    identity: bool = True  # SPG identity path (Table 3 "Id.")
    supervise: bool = True  # loss on earlier stages' per-class logits (Table 3 "Sup.")
    csfa: bool = True  # Cross Stage Feature Aggregation (Sec. 3.1)
    gap: bool = True  # global average pooling branch (Table 12)
    decoder: Decoder = "upsample"  # "upsample" (ours, Sec. 3.3) or "fpn" (Table 11)
    num_classes: PositiveInt = 19
    norm: NormName = "inplace_abn_sync"  # see spgnet.models.norm.NORM_LAYERS
    # weights_root: the folder of torchvision's ImageNet files (spgnet.models.weights), None for
    # random initialisation; config_hash sees only which of the two, not where the files lie
    pretrained: str | None = field(default=None, metadata={"hash": lambda root: None if root is None else "imagenet"})

    @property
    def num_stages(self) -> int:
        return len(self.backbones)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and augmentation (Sec. 4.2 and 4.6)."""

    __pydantic_config__ = FORBID_EXTRA
    dataset: DatasetName = "cityscapes"
    split: Split = "train"  # "train" for ablations, "trainval" for the test-set model (Sec. 4.2)
    crop: ImageSide = 769
    batch_size: PositiveInt = 8
    iterations: PositiveInt = 80000
    lr: PositiveFloat = 0.01
    momentum: Fraction = 0.9
    weight_decay: NonNegativeFloat = 1e-4
    # the optimiser's parameter groups (spgnet.engine.train.schedule, docs/recipe.md): the decay of every
    # normalisation layer's weight and bias, and of the other layers' biases (None: weight_decay) ...
    weight_decay_norm: NonNegativeFloat | None = None
    weight_decay_bias: NonNegativeFloat | None = None
    # ... and the learning rate of the layers outside the ImageNet encoders, times lr (poly keeps it)
    lr_mult_new_layers: PositiveFloat = 1.0
    poly_power: NonNegativeFloat = 0.9
    scale_min: PositiveFloat = 0.5
    scale_max: PositiveFloat = 2.0
    scale_step: PositiveFloat = 0.25
    ohem: bool = False  # Table 8
    # which pixels OHEM keeps (spgnet.engine.train.losses): "threshold": those whose true-class probability
    # is at most ohem_threshold, never fewer than ohem_min_kept; "top_k": the ohem_top_k fraction of
    # the pixels with the largest loss ...
    ohem_rule: OhemRule = "threshold"
    ohem_threshold: Probability = 0.7
    ohem_min_kept: NonNegativeInt = 100000
    ohem_top_k: Probability = 0.2
    # ... counted over each process's crops ("process": what the code bases OHEM cites do, one GPU at
    # a time; docs/recipe.md) or over the global batch ("batch": the same whatever the split of crops)
    ohem_scope: OhemScope = "process"
    aux_weight: NonNegativeFloat = 1.0  # weight of each earlier stage's loss
    # How the machine runs the training, not what it trains: outside the configuration hash
    # (config_hash), so a job requeued on another node (fewer cores, another GPU index, other
    # intervals) resumes its checkpoint; the device's type stays in it (it decides the precision).
    checkpoint_every: PositiveInt = field(default=5000, metadata=NOT_HASHED)
    log_every: PositiveInt = field(default=50, metadata=NOT_HASHED)
    workers: NonNegativeInt = field(default=4, metadata=NOT_HASHED)
    device: Device = field(default="cuda", metadata={"hash": lambda device: str(device).split(":")[0]})  # "cpu", "cuda" or "cuda:N"
    amp: Amp = "auto"  # "auto" (mixed precision where the device runs it natively), true or false
    # evaluate on the val split every N iterations and keep best.pt (0: never); changes no weight
    val_every: NonNegativeInt = field(default=0, metadata=NOT_HASHED)


@dataclass(frozen=True)
class EvalConfig:
    """Inference settings (Sec. 4.3, Table 12)."""

    __pydantic_config__ = FORBID_EXTRA
    split: Split = "val"
    strategy: Strategy = "AP"  # "GAP", "AP" or "TILED" (Table 12); models without GAP ignore it
    scales: Scales = (1.0,)
    flip: bool = False
    tile_overlap: Fraction = 1.0 / 3.0
    # pad every image at its bottom and right with the mean colour to at least pad_to x pad_to before
    # the test-time passes, and crop the prediction back (TF DeepLab's 513 x 513 eval canvas on
    # PASCAL); None: the image as it is
    pad_to: ImageSide | None = None
    submission: bool = False  # write labelIds PNGs for the Cityscapes test server
    # a profile's cost cap: the experiments' multi-scale sets drop their scales above it (None: every
    # scale; the mini profile keeps 0.75-1.25 of Sec. 4.4's 0.75-2.0, a quarter of the pixels);
    # `--set eval.scales=[...]` is used as given (resolve). Not hashed: the scales it leaves are, so
    # changing it reruns only the evaluations whose scales change.
    max_scale: PositiveFloat | None = field(default=None, metadata=NOT_HASHED)


@dataclass(frozen=True)
class PaperNumbers:
    """What the paper reports for one row, transcribed once, here."""

    __pydantic_config__ = FORBID_EXTRA
    miou: NonNegativeFloat | None = None
    params_m: NonNegativeFloat | None = None
    flops_g: NonNegativeFloat | None = None
    flops_note: str | None = None  # e.g. "8 (tiles) x 30.6B" (Table 12)
    per_class: dict[str, Float] | None = None  # Table 2: {class name: IoU}


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

    @property
    def reproducible(self) -> bool:
        return self.model is not None


# --------------------------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({first})") from None


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` updated by ``override``, recursing into nested mappings; neither is modified."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def _raw_registry(path: Path = EXPERIMENTS_FILE) -> tuple[dict, dict[str, dict]]:
    data = _load_yaml(path)
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


def _experiment(name: str, entry: dict, defaults: dict, path: Path) -> Experiment:
    where = f"{path}: experiment '{name}'"
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (valid keys: {', '.join(sorted(_ENTRY_KEYS))})")
    for required in ("table", "row"):
        if required not in entry:
            raise ConfigError(f"{where}: missing key '{required}'")
    paper = validate(PaperNumbers, entry.get("paper") or {}, where, "paper")
    if entry.get("cited"):
        model = train = evaluation = None
    else:
        sections = {}
        for key, cls in (("model", ModelConfig), ("train", TrainConfig), ("eval", EvalConfig)):
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
    )


_REGISTRY_CACHE: dict[Path, dict[str, Experiment]] = {}


def load_registry(path: Path = EXPERIMENTS_FILE) -> dict[str, Experiment]:
    """All experiments of the registry, in file order, keyed by name."""
    path = Path(path)
    if path not in _REGISTRY_CACHE:
        defaults, raw = _raw_registry(path)
        for key, cls in (("model", ModelConfig), ("train", TrainConfig), ("eval", EvalConfig)):
            validate_partial(cls, defaults.get(key), f"{path}: defaults", key)
        _REGISTRY_CACHE[path] = {
            name: _experiment(name, _expand(name, raw, path), defaults, path) for name in raw
        }
    return _REGISTRY_CACHE[path]


def get_experiment(name: str, path: Path = EXPERIMENTS_FILE) -> Experiment:
    registry = load_registry(path)
    if name not in registry:
        raise ConfigError(f"unknown experiment '{name}' (valid names: {', '.join(registry)})")
    return registry[name]


def table_order(table: str) -> tuple:
    """Sort key for table labels: "1" < "2" < ... < "12" < "4.6"."""
    try:
        return (0, float(table))
    except ValueError:
        return (1, table)


# --------------------------------------------------------------------------------------------
# Profiles and resolution
# --------------------------------------------------------------------------------------------


def project_path(text: str) -> Path:
    """A path from ``params/`` or the command line: ``~`` and ``$VARS`` expanded, relative paths
    taken from the project root."""
    path = Path(os.path.expandvars(os.path.expanduser(text)))
    return path if path.is_absolute() else PROJECT_ROOT / path


@dataclass(frozen=True)
class DatasetSource:
    """Where one dataset lives under a profile, and how to generate it if it is synthetic."""

    __pydantic_config__ = FORBID_EXTRA
    root: str
    synthetic: SyntheticSpec | None = None  # arguments of `spgnet make-synthetic`; None for real data

    def path(self) -> Path:
        return project_path(self.root)


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the embedded default and paper scale.

    ``model``, ``train``, ``eval`` and ``dataset_overrides`` hold partial sections whose values
    :func:`load_profile` has converted to the types :class:`ModelConfig` etc. declare."""

    __pydantic_config__ = FORBID_EXTRA
    name: str
    description: str
    datasets: dict[DatasetName, DatasetSource]
    seeds: Seeds = (0,)
    table_seeds: dict = field(default_factory=dict)  # {table: seeds} for that table's runs (spgnet.workflow.plan)
    experiments: tuple[str, ...] | None = None  # None: every reproducible experiment
    model: dict = field(default_factory=dict)  # overrides of every experiment's model section
    train: dict = field(default_factory=dict)  # ... of the train section
    eval: dict = field(default_factory=dict)  # ... of the eval section
    dataset_overrides: dict[DatasetName, DatasetOverrides] = field(default_factory=dict)  # {dataset: {train: {...}}}
    resources: dict[RuleKind, ResourceSpec] = field(default_factory=dict)  # Snakemake threads / mem_mb / gpus / processes
    report_dir: str = "reports"  # where tables.md and figures/ are written
    tracking: dict = field(default_factory=dict)  # MLflow options, e.g. {log_model: true} (spgnet.serving.mlflow_model)
    weights_root: str | None = None  # folder of torchvision's ImageNet files; None: random init
    # each training job also evaluates its run's own row from the checkpoint it wrote (CPU profiles:
    # one process start fewer per run; the row's eval settings then rerun its training; spgnet.workflow.plan)
    evaluate_in_train_job: bool = False


_PROFILE_KEYS = {f.name for f in fields(Profile)} - {"name"}
#: A profile file's key naming the profile it overrides (not a :class:`Profile` field).
PROFILE_BASE_KEY = "base"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def raw_profile(name: str, seen: tuple[str, ...] = ()) -> tuple[dict, Path]:
    """The settings of ``params/profiles/<name>.yaml`` as a mapping, with its ``base`` profile's
    merged under them (:func:`deep_merge`: the file's keys replace the base's, mapping by mapping;
    the base's own ``base`` first, if it names one), and the file's path."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.exists():
        if seen:
            raise ConfigError(f"{PROFILES_DIR / (seen[-1] + '.yaml')}: key '{PROFILE_BASE_KEY}': unknown profile "
                              f"'{name}' (valid profiles: {', '.join(available_profiles())})")
        raise ConfigError(f"unknown profile '{name}' (valid profiles: {', '.join(available_profiles())})")
    raw = _load_yaml(path) or {}
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


def load_profile(name: str, data_root: str | None = None) -> Profile:
    """Read ``params/profiles/<name>.yaml`` (on top of the profile its ``base`` key names, if any:
    :func:`raw_profile`); ``data_root`` replaces every dataset root's ``${data_root}`` placeholder
    (the paper profile's roots are relative to it)."""
    raw, path = raw_profile(name)
    # an empty key (``seeds:``, ``experiments: []``) means its default
    values = {"description": "", **{k: v for k, v in raw.items() if v not in (None, [], {})}, "name": name}
    profile = validate(Profile, values, str(path))
    _check_processes(profile.resources, path)
    datasets = {}
    for dataset, source in profile.datasets.items():
        if "${data_root}" in source.root:
            if not data_root:
                raise ConfigError(f"{path}: datasets.{dataset}.root needs data_root (pass --config data_root=DIR)")
            source = dataclasses.replace(source, root=source.root.replace("${data_root}", str(data_root)))
        datasets[dataset] = source
    sections = {"model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}
    overrides = {
        dataset: {key: validate_partial(sections[key], value, str(path), f"dataset_overrides.{dataset}.{key}")
                  for key, value in per_dataset.items()}
        for dataset, per_dataset in profile.dataset_overrides.items()
    }
    profile = dataclasses.replace(
        profile,
        datasets=datasets,
        dataset_overrides=overrides,
        weights_root=_weights_root(profile.weights_root, path),
        table_seeds={str(k): tuple(v) if isinstance(v, list) else v for k, v in profile.table_seeds.items()},
        **{key: validate_partial(cls, getattr(profile, key), str(path), key) for key, cls in sections.items()},
    )
    if profile.experiments:
        for exp in profile.experiments:
            get_experiment(exp)  # fails with the list of valid names
    return profile


def _check_processes(resources: dict, path: Path) -> None:
    """``resources.<kind>.processes`` is the process count of a CPU training job (``gpus: 0``;
    ``torchrun`` on the CPU, :func:`spgnet.workflow.gpu_slots.launcher`): with GPUs a job runs one process
    per GPU, and only training runs several."""
    for kind, spec in resources.items():
        processes = spec.get("processes")
        if processes is None:
            continue
        if kind != "train" and processes != 1:
            raise ConfigError(f"{path}: key 'resources.{kind}.processes': only train jobs run several processes, "
                              f"got {processes}")
        gpus = spec.get("gpus", 0)
        if gpus > 0 and processes != gpus:
            raise ConfigError(f"{path}: key 'resources.{kind}.processes': a GPU job runs one process per GPU "
                              f"(gpus: {gpus}); processes is for CPU jobs (gpus: 0), got {processes}")


def _weights_root(value, path: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: weights_root must be a folder name, got {value!r}")
    return str(project_path(value))


@dataclass(frozen=True)
class RunConfig:
    """One experiment under one profile: everything a train or evaluate run needs."""

    experiment: str
    profile: str
    table: str
    row: str
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    data: DatasetSource
    paper: PaperNumbers

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _override(section, overrides: dict, where: str, key: str):
    values = deep_merge(dataclasses.asdict(section), overrides)
    return validate(type(section), values, where, key)


def _cap_scales(ev: EvalConfig) -> EvalConfig:
    """``ev`` without the scales above ``ev.max_scale`` (the smallest scale is always kept)."""
    if ev.max_scale is None:
        return ev
    return dataclasses.replace(ev, scales=tuple(s for s in ev.scales if s <= ev.max_scale) or (min(ev.scales),))


def resolve(experiment: str | Experiment, profile: str | Profile, **overrides: dict) -> RunConfig:
    """Merge an experiment with a profile (and optional ``model=``/``train=``/``eval=`` dicts)."""
    exp = experiment if isinstance(experiment, Experiment) else get_experiment(experiment)
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    if not exp.reproducible:
        raise ConfigError(f"experiment '{exp.name}' is a row the paper cites from another work; nothing to run")
    unknown = sorted(set(overrides) - {"model", "train", "eval"})
    if unknown:
        raise ConfigError(f"unknown override section '{unknown[0]}' (valid: eval, model, train)")
    dataset = exp.train.dataset
    if dataset not in prof.datasets:
        raise ConfigError(
            f"profile '{prof.name}' has no datasets.{dataset} (experiment '{exp.name}' needs it)"
        )
    per_dataset = prof.dataset_overrides.get(dataset, {})
    where = f"profile '{prof.name}'"
    weights = {"pretrained": prof.weights_root} if prof.weights_root else {}
    model = _override(exp.model, deep_merge(deep_merge(weights, prof.model), overrides.get("model", {})), where, "model")
    train = _override(
        exp.train,
        deep_merge(deep_merge(prof.train, per_dataset.get("train", {})), overrides.get("train", {})),
        where,
        "train",
    )
    evaluation = _override(
        exp.eval,
        deep_merge(deep_merge(prof.eval, per_dataset.get("eval", {})), overrides.get("eval", {})),
        where,
        "eval",
    )
    if "scales" not in overrides.get("eval", {}):  # scales given on the command line are used as given
        evaluation = _cap_scales(evaluation)
    for key, split in (("train.split", train.split), ("eval.split", evaluation.split)):
        if split not in DATASET_SPLITS[dataset]:  # trainaug is VOC's alone
            raise ConfigError(f"experiment '{exp.name}', profile '{prof.name}': key '{key}': dataset '{dataset}' "
                              f"has no split '{split}' (valid: {', '.join(DATASET_SPLITS[dataset])})")
    return RunConfig(
        experiment=exp.name,
        profile=prof.name,
        table=exp.table,
        row=exp.row,
        model=model,
        train=train,
        eval=evaluation,
        data=prof.datasets[dataset],
        paper=exp.paper,
    )


def config_hash(*sections) -> str:
    """Short stable hash of dataclass sections: what a checkpoint must share with a run that
    resumes it, which rows share a training run, and (with the data source) Snakemake's rerun
    trigger. It holds the settings that change the trained network. A field with
    ``metadata={"hash": f}`` contributes ``f(value)``: ``ModelConfig.pretrained`` whether the
    encoders start from ImageNet weights, not where the files lie; ``TrainConfig.device`` its type;
    :data:`NOT_HASHED` fields (workers, logging, checkpoint and validation intervals, a profile's
    scale cap) nothing (``tests/test_config_hash.py`` lists every field as in or out)."""
    payload = json.dumps([_hashed_fields(s) for s in sections], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _hashed_fields(section) -> dict:
    values = dataclasses.asdict(section)
    for f in fields(section):
        if "hash" not in f.metadata:
            continue
        if f.metadata["hash"] is None:  # NOT_HASHED: left out, so adding one changes no hash
            del values[f.name]
        else:
            values[f.name] = f.metadata["hash"](values[f.name])
    return values


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
