"""Declared types of every setting under ``params/`` and of the workflow's ``--config``, and the
one validation that turns a mapping read from a file into them (pydantic, lax mode).

A value is accepted when pydantic's lax mode turns it into the declared type: numbers written as
``1e-2`` (which PyYAML reads as the *string* ``'1e-2'``) become floats, ``8e4`` or ``80000.0``
an int, ``true`` / ``no`` / ``1`` booleans; anything else (``'abc'`` for a float, a negative
iteration count, an unknown norm layer, a batch of 0, a boolean where a number belongs) is a
:class:`ConfigError` whose one line names the file, the key and the value (:func:`describe`)::

    params/profiles/mini.yaml: key 'train.lr': input should be a valid number, unable to parse
    string as a number, got 'abc'

Every schema of the package is a frozen stdlib dataclass with ``__pydantic_config__ =
FORBID_EXTRA`` (a key it does not declare is an error), checked by :func:`validate`. A *partial*
section (a profile's ``train:`` overrides, a ``--set``: some keys of a section) is a mapping whose
keys are checked against the section's dataclass on top of its defaults (:func:`validate_partial`;
inside a larger schema, the annotated type :func:`partial_of` gives, so that one validation of a
profile checks its partial sections too and names their keys the same way).

The known names (norm layers, architectures, links, ...) are listed here so that loading a
configuration does not import torch; ``tests/test_config_schema.py`` checks that they agree with
the registries of :mod:`spgnet.models`, :mod:`spgnet.engine.evaluation.inference` and :mod:`spgnet.data`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, WrapValidator
from pydantic_core import PydanticCustomError

from spgnet.errors import SpgnetError


class ConfigError(SpgnetError):
    """A bad registry entry, profile or override; the message is one line naming the key."""


# --------------------------------------------------------------------------------------------
# Known names (each checked against the registry it mirrors by tests/test_config_schema.py)
# --------------------------------------------------------------------------------------------

NORM_LAYERS = ("inplace_abn_sync", "inplace_abn", "abn", "batchnorm")  # spgnet.models.norm
ARCHITECTURES = ("spgnet", "pspnet", "danet", "denseaspp", "duc_hdc", "bisenet", "dfn")  # spgnet.models
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "densenet161")
LINKS = ("none", "spg_sum", "spg_softmax", "spg_sigmoid", "se", "ge")  # spgnet.models.guidance
DECODERS = ("upsample", "fpn")  # spgnet.models.spgnet
STRATEGIES = ("GAP", "AP", "TILED")  # spgnet.engine.evaluation.inference (Table 12)
DATASETS = ("cityscapes", "voc", "person_part")  # spgnet.data.labels
#: The readers a profile's data set may use (``datasets.<name>.kind``): the three built-in ones and
#: ``folder``, a tree described by its ``dataset.yaml`` (:mod:`spgnet.config.description`).
DATASET_KINDS = DATASETS + ("folder",)
SPLITS = ("train", "val", "test", "trainval", "trainaug")  # spgnet.data.labels
#: The splits each data set has (spgnet.data.labels.DATASET_SPLITS): trainaug is VOC's alone.
DATASET_SPLITS = {"cityscapes": SPLITS[:4], "voc": SPLITS, "person_part": SPLITS[:4], "folder": SPLITS[:4]}
RULE_KINDS = ("train", "evaluate", "light")  # spgnet.workflow.support.resources_for
OHEM_RULES = ("threshold", "top_k")  # spgnet.engine.train.losses
OHEM_SCOPES = ("batch", "process")  # spgnet.engine.train.losses

#: Given to each typed section: a key the section does not declare is an error.
FORBID_EXTRA = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------


def _number(value: Any) -> Any:
    """Before int/float validation: no booleans; ``'8e4'`` as the number it spells (pydantic's
    int parser takes only digits, and PyYAML leaves ``8e4`` a string)."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "input should be a number, not a boolean")
    if isinstance(value, str):
        for parse in (int, float):
            try:
                number = parse(value)
            except ValueError:
                continue
            return number if math.isfinite(number) else value
    return value  # pydantic words any error


def _message(text: str) -> WrapValidator:
    """Replace the errors of a union (one per member) by one message."""

    def wrap(value, handler):
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("value_error", text) from None

    return WrapValidator(wrap)


def _seed_list(value: Any) -> Any:
    """``--config seeds=0,1,2`` (a string), ``seeds=[0,1,2]`` (Snakemake: a list of strings) or
    ``seeds=1`` (an int): as a list."""
    if isinstance(value, str):
        return [part for part in re.split(r"[\s,\[\]]+", value) if part]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return value


PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_number)]
NonNegativeInt = Annotated[int, Field(ge=0), BeforeValidator(_number)]
Float = Annotated[float, Field(allow_inf_nan=False), BeforeValidator(_number)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False), BeforeValidator(_number)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False), BeforeValidator(_number)]
Fraction = Annotated[float, Field(ge=0, lt=1), BeforeValidator(_number)]  # [0, 1)
#: The largest image side a setting may ask for (a crop, a padding canvas): 4 x Cityscapes' 2048.
#: Beyond it one crop's float32 logits alone outgrow a machine (``--set train.crop=1e9`` once ran
#: into NumPy's "array is too big"); no data set here comes near it.
MAX_SIDE = 8192
#: The largest test scale: twice the paper's largest (2.0, Sec. 4.3); a 1024 x 2048 image at 4 is
#: already 4096 x 8192.
MAX_SCALE = 4.0
ImageSide = Annotated[int, Field(ge=1, le=MAX_SIDE), BeforeValidator(_number)]
Probability = Annotated[float, Field(gt=0, le=1), BeforeValidator(_number)]  # (0, 1]

NormName = Literal[NORM_LAYERS]
Architecture = Literal[ARCHITECTURES]
Backbones = Annotated[tuple[Literal[BACKBONES], ...], Field(min_length=1)]  # one per stage
Link = Literal[LINKS]
Decoder = Literal[DECODERS]
Strategy = Literal[STRATEGIES]
OhemRule = Literal[OHEM_RULES]
OhemScope = Literal[OHEM_SCOPES]
#: A data set's name in a profile (``datasets.<name>``) and a row's ``train.dataset``: one of
#: :data:`DATASETS` (read by its own reader) or a name of your own (a profile gives its ``kind``).
DatasetName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$"),
                        _message("expected a data set name (letters, digits, '_' and '-', a letter first)")]
DatasetKind = Literal[DATASET_KINDS]
#: A network built by your own function (``model.builder``): ``package.module:function``.
BuilderPath = Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"),
                        _message("expected an import path 'package.module:function'")]
Split = Literal[SPLITS]
Scale = Annotated[float, Field(gt=0, le=MAX_SCALE, allow_inf_nan=False), BeforeValidator(_number)]
Scales = Annotated[tuple[Scale, ...], Field(min_length=1)]
Device = Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?)$"), _message("expected 'cpu', 'cuda' or 'cuda:N'")]
#: ``train.amp``: "auto" (mixed precision only where the device runs it natively), true or false.
Amp = Annotated[Literal["auto"] | bool, _message("expected 'auto', true or false")]
RuleKind = Literal[RULE_KINDS]
#: A table's label as the registry writes it (``"3"``, ``"4.6"``); a YAML key ``3`` reads as ``"3"``.
TableLabel = Annotated[str, BeforeValidator(lambda value: str(value) if isinstance(value, (int, float)) else value)]
#: Seeds: a non-empty list of integers >= 0 (``0,1,2``, ``[0, 1, 2]`` and ``3`` accepted). The one
#: definition of what seeds are: a profile's ``seeds`` and ``table_seeds``, the workflow's
#: ``--config seeds``, and (through :func:`check_seeds`) the seeds a caller hands to the plan.
Seeds = Annotated[tuple[NonNegativeInt, ...], Field(min_length=1), BeforeValidator(_seed_list)]


# --------------------------------------------------------------------------------------------
# Validation with one-line errors
# --------------------------------------------------------------------------------------------


@functools.cache
def _adapter(cls) -> TypeAdapter:
    return TypeAdapter(cls)


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


class _PartialSectionError(ValueError):
    """Raised inside a larger validation by a :func:`partial_of` type: the section's class and its
    own :class:`ValidationError`, which :func:`describe` words as :func:`validate_partial` would."""

    def __init__(self, cls, error: ValidationError):
        super().__init__(f"not a valid partial {cls.__name__}")
        self.cls, self.error = cls, error


def describe(err: ValidationError, where: str, cls=None, prefix: str = "") -> str:
    """The first error of ``err`` as one line: ``"<where>: key '<prefix.key>': <why>, got <value>"``.
    An unknown key is named before any other error: a misspelt required key (``class:`` for
    ``classes:``) is that typo, not the key it leaves missing."""
    errors = err.errors()
    unknown = [e for e in errors if e["type"] in ("unexpected_keyword_argument", "extra_forbidden")]
    first = min(unknown, key=lambda e: len(e["loc"])) if unknown else errors[0]
    names = [str(p) for p in first["loc"] if not isinstance(p, int) and p != "[key]"]  # "[key]": a bad dict key
    items = [p for p in first["loc"] if isinstance(p, int)]
    key = ".".join(([prefix] if prefix else []) + names)
    partial = (first.get("ctx") or {}).get("error")
    if isinstance(partial, _PartialSectionError):  # a partial section inside a larger schema
        return describe(partial.error, where, partial.cls, key)
    if first["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        valid = _field_names(cls) if cls is not None and len(names) == 1 else []
        listed = f" (valid keys: {', '.join(sorted(valid))})" if valid else ""
        return f"{where}: unknown key '{key}'{listed}"
    if first["type"] in ("missing", "missing_argument"):
        return f"{where}: missing key '{key}'"
    item = f" (item {items[0]})" if items else ""
    message = first["msg"][:1].lower() + first["msg"][1:]
    message = message.removeprefix("value error, ")
    return f"{where}: key '{key}'{item}: {message}, got {ascii(first['input'])}"


def validate(cls, values: Any, where: str, prefix: str = ""):
    """``values`` (a mapping) as an instance of ``cls`` with every field converted to its declared
    type; :class:`ConfigError` naming ``where``, the key (``prefix.key``) and the value if not."""
    try:
        return _adapter(cls).validate_python(values)
    except ValidationError as err:
        raise ConfigError(describe(err, where, cls, prefix)) from None


def _partial(cls, values: dict) -> dict:
    """The keys of ``values`` converted to the types ``cls`` declares, checked on top of ``cls``'s
    defaults; :class:`ValidationError` (of ``cls``) if not."""
    full = _adapter(cls).validate_python({**dataclasses.asdict(cls()), **values})
    return {key: getattr(full, key) for key in values}


def validate_partial(cls, values: dict | None, where: str, prefix: str = "") -> dict:
    """The keys of ``values`` (a partial section, e.g. the registry's ``defaults.train`` or the
    items of ``--set``) converted to the types ``cls`` declares for them, checked as they would be
    on top of ``cls``'s defaults; :class:`ConfigError` as :func:`validate` words it if not."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{where}: key '{prefix}': expected a mapping, got {ascii(values)}")
    try:
        return _partial(cls, dict(values or {}))
    except ValidationError as err:
        raise ConfigError(describe(err, where, cls, prefix)) from None


@functools.cache
def partial_of(cls):
    """The type of a partial ``cls`` section inside a larger schema (a profile's ``train:``): a
    mapping of some of ``cls``'s keys, each converted to its declared type when the schema is
    validated (:func:`validate_partial`'s check; :func:`describe` names a bad key as it does)."""

    def check(values: dict) -> dict:
        try:
            return _partial(cls, values)
        except ValidationError as err:
            raise _PartialSectionError(cls, err) from None

    return Annotated[dict, AfterValidator(check)]


def check_seeds(values: Any, where: str) -> tuple[int, ...]:
    """``values`` (seeds a caller hands over, e.g. ``make_plan(seeds=...)`` or a profile's
    ``table_seeds`` entry) as :data:`Seeds`, or one-line :class:`ConfigError`
    ``"<where>: <values> must be a non-empty list of non-negative integers"``."""
    try:
        return _adapter(Seeds).validate_python(values)
    except ValidationError:
        shown = list(values) if isinstance(values, (list, tuple)) else values
        raise ConfigError(f"{where}: {shown!r} must be a non-empty list of non-negative integers") from None
