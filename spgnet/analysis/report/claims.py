"""The "Claims" section: every quantitative claim of the paper's text, checked three ways.

The claims and their checks come from ``params/claims.yaml`` (:mod:`spgnet.claims_config`); every
number comes from elsewhere, so the arithmetic is recomputed on each render:

* *the paper's own tables*: the registry's numbers (``params/experiments.yaml``): does the claim
  follow from the paper's tables?
* *this implementation*: the checks on counts and measurements of the networks (``profile.json``:
  #Params / #FLOPs at paper scale; ``references/memory.json``: peak memory of one training step,
  with its device), whatever the training;
* *this run*: the checks on accuracy, with the profile's trained results (mean over the seeds,
  rows replaced as the claim's ``run_as`` says), each difference's sign against the paper's and its
  p-value against seed noise (:mod:`.statistics`), a warning when a row is not above its reference
  scores (:mod:`.references`), and "needs paper scale" when the profile trains a shorter schedule.

A check reads "✓" (holds), "✗" (does not) or says why it cannot be checked; a claim holds when all
its checks hold. ``ClaimChecker`` is independent of the page, so tests can point it at a changed copy
of the registry.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from spgnet.analysis.report.markdown import _section, to_markdown
from spgnet.analysis.report.statistics import compare_seeds
from spgnet.claims_config import Check, Claim, Operand

TITLE = "Claims of the paper's text, checked"
YES, NO = "✓", "✗"
MIB = 2**20


@dataclass
class Value:
    """One operand's numbers (one per seed for a trained row) or why there are none."""

    values: list = field(default_factory=list)
    reason: str | None = None
    run: str | None = None  # the training run the values come from (seed tests of one run are void)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)


def _tiles(note: str | None) -> int:
    match = re.match(r"\s*(\d+)\s*\(tiles\)", note or "")
    return int(match.group(1)) if match else 1


class PaperValues:
    """The registry's numbers."""

    name = "the paper's tables"

    def __init__(self, registry: dict):
        self.registry = registry

    def get(self, op: Operand) -> Value:
        paper = self.registry[op.experiment].paper
        if op.metric == "memory":
            return Value(reason="no table gives memory (text only)")
        if op.metric.startswith("class:"):
            value = (paper.per_class or {}).get(op.metric[6:])
        elif op.metric == "flops_total":
            value = None if paper.flops_g is None else paper.flops_g * _tiles(paper.flops_note)
        else:
            value = getattr(paper, op.metric)
        return Value(reason=f"no {op.metric} for `{op.experiment}` in the paper") if value is None else Value([value])


class CountValues:
    """This implementation's counts (``profile.json``) and memory measurement (``memory.json``)."""

    name = "this implementation"

    def __init__(self, report):
        self.report = report

    def memory(self) -> tuple[dict, str | None]:
        data, problem = self.report.files.read(self.report.files.path(self.report.plan.memory_json))
        if problem:
            return {}, problem
        return {row.get("name"): row for row in data if isinstance(row, dict)}, None

    def get(self, op: Operand) -> Value:
        if not op.is_count:
            return Value(reason="an accuracy")
        if op.metric == "memory":
            if self.report.plan.memory_settings() is None:
                return Value(reason=f"not measured in profile {self.report.profile.name}")
            rows, problem = self.memory()
            row = rows.get(op.experiment)
            if problem or row is None:
                return Value(reason=problem or f"{self.report.plan.memory_json} has no row '{op.experiment}'")
            return Value([row["peak_bytes"] / MIB])
        rows, _data, problem = self.report.profile_rows()
        row = rows.get(op.experiment)
        if problem or row is None:
            return Value(reason=problem or f"profile.json has no row '{op.experiment}'")
        key = "flops_g_total" if op.metric == "flops_total" else op.metric
        return Value([float(row.get(key, row["flops_g"]))])

    def memory_context(self) -> str:
        if self.report.plan.memory_settings() is None:  # the profile does not measure it
            return ""
        rows, problem = self.memory()
        row = next(iter(rows.values()), None)
        if problem or row is None:
            return ""
        return (f" (one training step at batch {row.get('batch_size')} x {row.get('crop')}x{row.get('crop')} on "
                f"{row.get('device')}, {row.get('method')})")


class RunValues:
    """The profile's trained results (eval JSONs over the seeds), counts as :class:`CountValues`."""

    name = "this run"

    def __init__(self, report, run_as: dict):
        self.report, self.run_as = report, run_as
        self.counts = CountValues(report)

    def get(self, op: Operand) -> Value:
        if op.is_count:
            return self.counts.get(op)
        exp = self.report.registry[self.run_as.get(op.experiment, op.experiment)]
        measured = self.report.measured(exp)
        if measured.status != "ok":
            return Value(reason=f"`{exp.name}`: {measured.text}")
        values = measured.miou if op.metric == "miou" else measured.per_class.get(op.metric[6:])
        if not values:
            return Value(reason=f"`{exp.name}` has no {op.metric}")
        return Value(list(values), run=self.report.plan.evaluations[exp.name].run)


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _tolerance(check: Check) -> float:
    """The check's tolerance, or half a unit of the stated number's last digit (rounding)."""
    if check.tolerance is not None:
        return check.tolerance
    digits = repr(float(check.stated)).split(".")[1].rstrip("0")
    return 0.5 * 10 ** -len(digits)


@dataclass
class Outcome:
    holds: bool | None  # None: cannot be checked
    text: str
    tests: list = field(default_factory=list)  # (label, paper delta, Comparison) of seed tests


class ClaimChecker:
    """Evaluates one claim's checks with one source of numbers."""

    def __init__(self, source, registry: dict, paper: PaperValues | None = None):
        """``paper``: the paper's numbers, given when ``source`` is a trained run (differences are
        then judged by their sign, and tested against seed noise)."""
        self.source, self.registry, self.paper = source, registry, paper

    def outcome(self, check: Check) -> Outcome:
        if check.kind == "text_only":
            return Outcome(None, f"cannot be checked: {check.reason}")
        values = {op: self.source.get(op) for op in check.operands()}
        missing = [v.reason for v in values.values() if v.reason]
        if missing:
            return Outcome(None, missing[0])
        return getattr(self, f"_{check.kind}")(check, values)

    def _seed_test(self, a: Operand, b: Operand, values: dict, paper_sign: float) -> list:
        if self.paper is None or a.is_count or b.is_count:
            return []
        va, vb = values[a], values[b]
        comparison = compare_seeds(va.values, vb.values, same_run=va.run is not None and va.run == vb.run)
        return [(f"{a} − {b}", paper_sign, comparison)]

    def _value(self, check: Check, v: dict) -> Outcome:
        x = v[check.a].mean
        if self.paper is not None:  # a trained run: the number beside the paper's, no verdict
            return Outcome(None, f"`{check.a}` = {_fmt(x)} (the paper states {check.stated:g}; {x - check.stated:+.2f})")
        ok = abs(x - check.stated) <= _tolerance(check) + 1e-9
        return Outcome(ok, f"`{check.a}` = {_fmt(x)} (stated {check.stated:g})")

    def _difference(self, check: Check, v: dict) -> Outcome:
        a, b = v[check.a].mean, v[check.b].mean
        d = a - b
        text = f"`{check.a}` − `{check.b}` = {_fmt(a)} − {_fmt(b)} = {d:+.2f}"
        if check.stated is not None and (self.paper is None or check.stated == 0):
            ok = abs(d - check.stated) <= _tolerance(check) + 1e-9
            text += f" (stated {check.stated:+g}, within {_tolerance(check):g})"
        elif check.stated is not None:  # a trained run: the sign of the paper's difference
            ok = d * check.stated > 0
            text += f" (paper {check.stated:+g}: {'same' if ok else 'opposite'} sign)"
        else:
            ok = d > 0 if check.expect == "greater" else d < 0
            text += f" ({'> 0' if check.expect == 'greater' else '< 0'} expected)"
        sign = check.stated if check.stated else (1.0 if check.expect == "greater" else -1.0)
        return Outcome(ok, text, self._seed_test(check.a, check.b, v, sign))

    def _ratio(self, check: Check, v: dict, increase: bool = False) -> Outcome:
        a, b = v[check.a].mean, v[check.b].mean
        r = 100.0 * (a / b - 1.0) if increase else 100.0 * a / b
        ok = abs(r - check.stated) <= _tolerance(check) + 1e-9
        what = "+" if increase else ""
        return Outcome(ok, f"`{check.a}` / `{check.b}` = {_fmt(a)} / {_fmt(b)}: {what}{r:.2f}% "
                           f"(stated {what}{check.stated:g}%, within {_tolerance(check):g})")

    def _increase(self, check: Check, v: dict) -> Outcome:
        return self._ratio(check, v, increase=True)

    def _similar(self, check: Check, v: dict) -> Outcome:
        a, b = v[check.a].mean, v[check.b].mean
        apart = 100.0 * abs(a / b - 1.0)
        ok = apart <= check.tolerance + 1e-9
        return Outcome(ok, f"`{check.a}` {_fmt(a)} vs `{check.b}` {_fmt(b)}: {apart:.1f}% apart "
                           f"({'≤' if ok else '>'} {check.tolerance:g}%)")

    def _greater(self, check: Check, v: dict) -> Outcome:
        fails, tests = [], []
        for a, b in check.pairs:
            if not v[a].mean > v[b].mean:
                fails.append(f"`{a}` {_fmt(v[a].mean)} ≤ `{b}` {_fmt(v[b].mean)}")
            tests += self._seed_test(a, b, v, 1.0)
        held = len(check.pairs) - len(fails)
        text = f"{held} of {len(check.pairs)} pairs hold" + (f"; fails: {'; '.join(fails)}" if fails else "")
        return Outcome(not fails, text, tests)

    def _best(self, check: Check, v: dict) -> Outcome:
        others = [op for op in check.among if op != check.a]
        top = max(others, key=lambda op: v[op].mean)
        ok = v[check.a].mean >= v[top].mean
        relation = "next best" if ok else "beaten by"
        return Outcome(ok, f"`{check.a}` {_fmt(v[check.a].mean)}, {relation} `{top}` {_fmt(v[top].mean)}",
                       self._seed_test(check.a, top, v, 1.0))

    def _count_better(self, check: Check, v: dict) -> Outcome:
        classes = list(self.registry[check.a.experiment].paper.per_class or {})
        if not classes:
            return Outcome(None, f"`{check.a.experiment}` has no per-class numbers in the registry")
        per = {op: {c: self.source.get(Operand(op.experiment, f"class:{c}")) for c in classes}
               for op in (check.a, *check.than)}
        lost = [(o, c) for o in per for c in classes if per[o][c].reason]
        if lost:
            return Outcome(None, f"no per-class IoU: {per[lost[0][0]][lost[0][1]].reason}")
        worse = [c for c in classes if not all(per[check.a][c].mean > per[o][c].mean for o in check.than)]
        count = len(classes) - len(worse)
        ok = count == int(check.stated)
        return Outcome(ok, f"{count} of {len(classes)} classes (stated {check.stated:g}); not better in: "
                           f"{', '.join(worse) or 'none'}")

    def claim(self, checks: list[Check]) -> Outcome:
        """All of ``checks``: False when one fails, else None when one cannot be checked."""
        outcomes = [self.outcome(check) for check in checks]
        states = [o.holds for o in outcomes]
        holds = False if False in states else None if None in states else True
        parts = list(dict.fromkeys(f"{YES if o.holds else NO if o.holds is False else '?'} {o.text}" for o in outcomes))
        return Outcome(holds, "; ".join(parts), [t for o in outcomes for t in o.tests])


def verdict(outcome: Outcome) -> str:
    head = {True: f"**{YES} holds**", False: f"**{NO} does not hold**", None: "**cannot say**"}[outcome.holds]
    return f"{head}: {outcome.text}"


class ClaimsSection:
    """Builds the section for one report (page) from the claims file."""

    def __init__(self, report, claims: list[Claim]):
        self.report, self.claims = report, claims
        self.paper = PaperValues(report.registry)
        self.counts = CountValues(report)

    def paper_cell(self, claim: Claim) -> str:
        return verdict(ClaimChecker(self.paper, self.report.registry).claim(list(claim.checks)))

    def implementation_cell(self, claim: Claim) -> str:
        checks = [c for c in claim.checks if c.operands() and all(op.is_count for op in c.operands())]
        if not checks:
            return "- (no count or measurement involved)"
        text = verdict(ClaimChecker(self.counts, self.report.registry).claim(checks))
        if any(op.metric == "memory" for c in checks for op in c.operands()):
            text += self.counts.memory_context()
        return text

    def run_cell(self, claim: Claim) -> tuple[str, list]:
        checks = [c for c in claim.checks if any(not op.is_count for op in c.operands())]
        if any(c.kind != "value" for c in checks):  # the values are the paper's transcription
            checks = [c for c in checks if c.kind != "value"]
        checks = checks or [c for c in claim.checks if c.kind == "text_only"]
        if not checks:
            return "- (counts only: see *this implementation*)", []
        source = RunValues(self.report, claim.run_as)
        outcome = ClaimChecker(source, self.report.registry, self.paper).claim(checks)
        text = verdict(outcome)
        names = {claim.run_as.get(op.experiment, op.experiment) for c in checks for op in c.operands()
                 if not op.is_count}
        seeds = sorted({len(self.report.measured(self.report.registry[n]).miou) for n in names
                        if self.report.measured(self.report.registry[n]).status == "ok"})
        if seeds:
            text += f" (seeds per row: {', '.join(map(str, seeds))})"
        if claim.run_as:
            text += " (rows trained here, on `val`: " + ", ".join(
                f"`{new}` for `{old}`" for old, new in claim.run_as.items()) + ")"
        if outcome.holds is not None:
            text += self.scale_note(names)
        return text, outcome.tests

    def scale_note(self, names: set) -> str:
        """Warnings that the run cannot confirm the paper: rows not above their references, a
        schedule shorter than the paper's."""
        notes = []
        low = sorted(n for n in names if n in self.report.plan.evaluations
                     and self._at_chance(n))
        if low:
            notes.append(f"not above its reference scores: {', '.join(f'`{n}`' for n in low)}")
        short = {}
        for name in names:
            if name in self.report.plan.evaluations:
                paper_iters = self.report.registry[name].train.iterations
                iters = self.report.settings(self.report.registry[name])[0].iterations
                if iters < paper_iters:
                    short[name] = (iters, paper_iters)
        if short:
            iters, paper_iters = next(iter(short.values()))
            notes.append(f"profile {self.report.profile.name} trains {iters} of the paper's {paper_iters} "
                         "iterations: needs paper scale")
        return "".join(f" **Note:** {note}." for note in notes)

    def _at_chance(self, name: str) -> bool:
        measured = self.report.measured(self.report.registry[name])
        floor = self.report.references.floor(name)
        return measured.status == "ok" and floor is not None and sum(measured.miou) / len(measured.miou) <= floor

    def section(self) -> dict:
        import pandas as pd

        records, tests = [], []
        for claim in self.claims:
            run, claim_tests = self.run_cell(claim)
            records.append({"Claim": f"**{claim.name}** ({claim.section}): {claim.text}",
                            "The paper's own tables": self.paper_cell(claim),
                            "This implementation": self.implementation_cell(claim),
                            f"This run (profile {self.report.profile.name})": run})
            tests += [(claim.name, *t) for t in claim_tests]
        holds = sum(1 for c in self.claims if ClaimChecker(self.paper, self.report.registry).claim(list(c.checks)).holds)
        notes = [
            f"{len(self.claims)} quantitative claims of the paper's text (`params/claims.yaml`: where each stands, "
            "its wording summarised, and which rows it compares). Every number is recomputed from the registry "
            "(`params/experiments.yaml`), `profile.json`, `references/memory.json` and the eval JSONs whenever "
            f"the report is rendered. By the paper's own tables, {holds} of {len(self.claims)} hold.",
            "*This run* checks each difference by its sign against the paper's (a shorter schedule cannot be "
            "expected to reproduce magnitudes) and gives the mean over the seeds; the table after this one tests "
            "each difference against seed noise.",
        ]
        frame = pd.DataFrame.from_records(records)
        section = _section("claims", TITLE, notes, frame, ["l", "l", "l", "l"], short="Claims")
        section["extra"] = self.tests_markdown(tests)
        return section

    def tests_markdown(self, tests: list) -> str:
        import pandas as pd

        records = []
        for claim, label, paper_sign, comparison in tests:
            same = "-" if math.isnan(paper_sign) or paper_sign == 0 else (
                YES if comparison.delta * paper_sign > 0 else NO)
            records.append({"Claim": claim, "Difference": label, "Paper's sign": "+" if paper_sign > 0 else "−",
                            "This run (mean difference)": f"{comparison.delta:+.2f}",
                            "Same sign": same, "Against seed noise": comparison.describe()})
        if not records:
            return "No accuracy difference of the claims has results in this run."
        lead = ("**Accuracy differences of the claims against seed noise** (mean over the seeds; two-sided "
                "test of the difference of the means, distinguishable when p < 0.05):\n\n")
        return lead + to_markdown(pd.DataFrame.from_records(records), ["l", "l", "c", "r", "c", "l"])
