"""Typed claims: the only code that reads ``params/claims.yaml`` (the paper's quantitative claims).

Each claim names where it stands in the paper, summarises its wording and lists the checks that
decide it (the file's header documents operands and check kinds); the numbers it is checked against
come from the experiment registry (:func:`spgnet.config.load_registry`), never from the claims file.
A bad entry is a one-line :class:`~spgnet.config.ConfigError` naming the file, claim and key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spgnet.config import EXPERIMENTS_FILE, PARAMS_DIR, ConfigError, _load_yaml, load_registry

CLAIMS_FILE = PARAMS_DIR / "claims.yaml"

#: Metrics an operand may name ("class:NAME" besides): registry / profile.json / memory.json keys.
METRICS = ("miou", "params_m", "flops_g", "flops_total", "memory")
#: Check kind -> its required keys (``a`` is an operand, ``b`` one, ``pairs`` a list of [a, b], ...).
KINDS = {
    "value": ("a", "stated"),
    "difference": ("a", "b"),
    "ratio": ("a", "b", "stated"),
    "increase": ("a", "b", "stated"),
    "similar": ("a", "b", "tolerance"),
    "greater": ("pairs",),
    "best": ("a", "among"),
    "count_better": ("a", "than", "stated"),
    "text_only": ("reason",),
}
_CHECK_KEYS = {"kind", "a", "b", "pairs", "among", "than", "stated", "tolerance", "expect", "reason"}
_CLAIM_KEYS = {"section", "text", "checks", "run_as"}


@dataclass(frozen=True)
class Operand:
    """One number of a check: ``experiment``'s ``metric`` (``class:NAME`` for a per-class IoU)."""

    experiment: str
    metric: str = "miou"

    def __str__(self) -> str:
        return self.experiment if self.metric == "miou" else f"{self.experiment}.{self.metric}"

    @property
    def is_count(self) -> bool:
        """A count or measurement of the network (not a trained accuracy)."""
        return self.metric in ("params_m", "flops_g", "flops_total", "memory")


@dataclass(frozen=True)
class Check:
    kind: str
    a: Operand | None = None
    b: Operand | None = None
    pairs: tuple[tuple[Operand, Operand], ...] = ()
    among: tuple[Operand, ...] = ()
    than: tuple[Operand, ...] = ()
    stated: float | None = None
    tolerance: float | None = None
    expect: str | None = None  # "greater" / "less" (difference without a stated number)
    reason: str | None = None

    def operands(self) -> list[Operand]:
        found = [self.a, self.b, *(x for pair in self.pairs for x in pair), *self.among, *self.than]
        return [op for op in found if op is not None]


@dataclass(frozen=True)
class Claim:
    name: str
    section: str
    text: str
    checks: tuple[Check, ...]
    run_as: dict = field(default_factory=dict)  # experiment -> the experiment the run column reads instead


def _operand(value, where: str, registry: dict) -> Operand:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: operand {value!r} must be 'EXPERIMENT' or 'EXPERIMENT.METRIC'")
    experiment, _, metric = value.partition(".")
    metric = metric or "miou"
    if experiment not in registry:
        raise ConfigError(f"{where}: unknown experiment '{experiment}' in operand '{value}'")
    if metric not in METRICS and not (metric.startswith("class:") and len(metric) > 6):
        raise ConfigError(f"{where}: unknown metric '{metric}' in operand '{value}' "
                          f"(valid: {', '.join(METRICS)}, class:NAME)")
    return Operand(experiment, metric)


def _number(value, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
    return float(value)


def _check(raw, where: str, registry: dict) -> Check:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a check must be a mapping")
    unknown = sorted(set(raw) - _CHECK_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (valid keys: {', '.join(sorted(_CHECK_KEYS))})")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown kind {kind!r} (valid: {', '.join(KINDS)})")
    for key in KINDS[kind]:
        if key not in raw:
            raise ConfigError(f"{where}: kind '{kind}' needs key '{key}'")
    if kind == "difference" and "stated" not in raw and raw.get("expect") not in ("greater", "less"):
        raise ConfigError(f"{where}: a difference needs 'stated' or 'expect: greater|less'")
    lists = {}
    for key in ("among", "than"):
        if key in raw:
            if not isinstance(raw[key], list) or not raw[key]:
                raise ConfigError(f"{where}: '{key}' must be a non-empty list of operands")
            lists[key] = tuple(_operand(v, f"{where}.{key}", registry) for v in raw[key])
    pairs = ()
    if "pairs" in raw:
        if not isinstance(raw["pairs"], list) or not raw["pairs"] or any(
                not isinstance(p, list) or len(p) != 2 for p in raw["pairs"]):
            raise ConfigError(f"{where}: 'pairs' must be a non-empty list of [a, b] operand pairs")
        pairs = tuple((_operand(a, f"{where}.pairs", registry), _operand(b, f"{where}.pairs", registry))
                      for a, b in raw["pairs"])
    return Check(
        kind=kind,
        a=_operand(raw["a"], f"{where}.a", registry) if "a" in raw else None,
        b=_operand(raw["b"], f"{where}.b", registry) if "b" in raw else None,
        pairs=pairs,
        among=lists.get("among", ()),
        than=lists.get("than", ()),
        stated=_number(raw["stated"], where, "stated") if "stated" in raw else None,
        tolerance=_number(raw["tolerance"], where, "tolerance") if "tolerance" in raw else None,
        expect=raw.get("expect"),
        reason=str(raw["reason"]) if "reason" in raw else None,
    )


def load_claims(path: Path = CLAIMS_FILE, registry_path: Path = EXPERIMENTS_FILE) -> list[Claim]:
    """Every claim of ``path``, in file order, its operands checked against the registry."""
    path = Path(path)
    registry = load_registry(registry_path)
    data = _load_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("claims"), dict):
        raise ConfigError(f"{path}: expected a mapping with a 'claims' mapping")
    claims = []
    for name, raw in data["claims"].items():
        where = f"{path}: claim '{name}'"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a mapping")
        unknown = sorted(set(raw) - _CLAIM_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}' (valid keys: {', '.join(sorted(_CLAIM_KEYS))})")
        for key in ("section", "text", "checks"):
            if key not in raw:
                raise ConfigError(f"{where}: missing key '{key}'")
        if not isinstance(raw["checks"], list) or not raw["checks"]:
            raise ConfigError(f"{where}: 'checks' must be a non-empty list")
        run_as = dict(raw.get("run_as") or {})
        for old, new in run_as.items():
            for experiment in (old, new):
                if experiment not in registry:
                    raise ConfigError(f"{where}.run_as: unknown experiment '{experiment}'")
        checks = tuple(_check(c, f"{where}.checks[{i}]", registry) for i, c in enumerate(raw["checks"]))
        claims.append(Claim(str(name), str(raw["section"]), str(raw["text"]), checks, run_as))
    return claims
