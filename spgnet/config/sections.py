"""The typed sections of one run: :class:`ModelConfig`, :class:`TrainConfig`, :class:`EvalConfig`
(what a registry row and a profile set), :class:`PaperNumbers` (what the paper reports for a row),
:class:`DatasetSource` (where a profile keeps a data set), and :class:`RunConfig`, the five together
as :func:`spgnet.config.build.build_config` returns them for one experiment under one profile.

Each section is a frozen dataclass whose field types (:mod:`spgnet.config.types`) pydantic checks
as the files are read; ``ModelOverrides`` / ``TrainOverrides`` / ``EvalOverrides`` are the partial
sections a profile, a data set's overrides or ``--set`` give (some keys, each of its declared type).

:func:`config_hash` names what a trained network depends on: a checkpoint's identity (what
``--resume`` accepts), which registry rows share a training run, Snakemake's rerun trigger. Fields
marked :data:`NOT_HASHED` (or with their own ``metadata={"hash": f}``) say what it leaves out;
``tests/test_config_hash_pins.py`` pins every hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from spgnet.config.paths import project_path
from spgnet.config.types import (
    DATASETS, FORBID_EXTRA, Amp, Architecture, Backbones, BuilderPath, DatasetKind, DatasetName, Decoder, Device, Float, Fraction, ImageSide, Link,
    NonNegativeFloat, NonNegativeInt, NormName, OhemRule, OhemScope, PositiveFloat, PositiveInt, Probability,
    Scales, Split, Strategy, partial_of,
)

#: ``field(metadata=NOT_HASHED)``: a setting that does not change the trained network (or the
#: evaluation), left out of :func:`config_hash`.
NOT_HASHED = {"hash": None}
#: What a field's hash function returns to leave the field out of :func:`config_hash` for this value
#: (a setting added later, at its default: every hash written before it stays valid).
LEFT_OUT = object()


def _unless_none(value):
    return LEFT_OUT if value is None else value


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
    # a network of your own (docs/own-data.md): ``module:function`` called with this section (its
    # num_classes the data set's) and returning an nn.Module; arch is then unused
    builder: BuilderPath | None = field(default=None, metadata={"hash": _unless_none})

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
    # `--set eval.scales=[...]` is used as given (spgnet.config.build.resolve). Not hashed: the scales
    # it leaves are, so changing it reruns only the evaluations whose scales change.
    max_scale: PositiveFloat | None = field(default=None, metadata=NOT_HASHED)


#: Partial sections (some keys of a section, each converted to its declared type): a profile's
#: ``model:`` / ``train:`` / ``eval:`` overrides, a data set's ``dataset_overrides``.
ModelOverrides = partial_of(ModelConfig)
TrainOverrides = partial_of(TrainConfig)
EvalOverrides = partial_of(EvalConfig)


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
class SyntheticSpec:
    """A profile's ``datasets.<name>.synthetic``: the arguments of ``spgnet make-synthetic``
    (None: not given, the command's default)."""

    __pydantic_config__ = FORBID_EXTRA
    kind: DatasetKind | None = None
    seed: NonNegativeInt | None = None
    num_train: PositiveInt | None = None
    num_val: PositiveInt | None = None
    num_test: NonNegativeInt | None = None
    num_aug: NonNegativeInt | None = None  # kind voc: extra "SBD" images of the trainaug split (labels in SegmentationClassAug only)
    height: PositiveInt | None = None
    width: PositiveInt | None = None

    def options(self) -> dict:
        """The arguments given, in declaration order (``{"kind": "voc", "seed": 0, ...}``)."""
        return _given(dataclasses.asdict(self))


def _given(values: dict | None) -> dict | None:
    """``values`` without its None entries (None stays None)."""
    return None if values is None else {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class DatasetSource:
    """Where one dataset lives under a profile, and how to generate it if it is synthetic."""

    __pydantic_config__ = FORBID_EXTRA
    root: str
    # arguments of `spgnet make-synthetic`; None for real data. Hashed as the arguments given.
    synthetic: SyntheticSpec | None = field(default=None, metadata={"hash": _given})
    # the reader: a built-in data set's own (the default for its name), or "folder" (the root's
    # dataset.yaml, spgnet.config.description); hashed only when it is not a built-in one
    kind: DatasetKind | None = field(default=None, metadata={"hash": lambda kind: LEFT_OUT if kind in (None, *DATASETS) else kind})

    def path(self) -> Path:
        return project_path(self.root)


@dataclass(frozen=True)
class RunConfig:
    """One experiment under one profile: everything a train or evaluate run needs."""

    experiment: str
    profile: str  # the profile's name, or its file (Profile.arg: what --profile takes to load it again)
    table: str
    row: str
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    data: DatasetSource
    paper: PaperNumbers
    experiments_file: str | None = None  # the file of your own rows the experiment came from (None: the paper's)

    @property
    def dataset_kind(self) -> str:
        """The reader of the run's data set: ``data.kind`` (a profile's), else the data set's name
        (one of the built-in :data:`~spgnet.config.types.DATASETS`)."""
        return self.data.kind or self.train.dataset

    def to_dict(self) -> dict:
        """The config as plain data (what checkpoints and run records hold); ``data.synthetic``
        holds the arguments given."""
        values = dataclasses.asdict(self)
        values["data"]["synthetic"] = _given(values["data"]["synthetic"])
        return values


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
        hashed = LEFT_OUT if f.metadata["hash"] is None else f.metadata["hash"](values[f.name])
        if hashed is LEFT_OUT:  # NOT_HASHED, or a later setting at its default: adding one changes no hash
            del values[f.name]
        else:
            values[f.name] = hashed
    return values
