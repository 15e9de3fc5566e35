"""What an mIoU cell is read against: the reference scores of :mod:`spgnet.engine.evaluation.reference`.

For each data set, ``references/majority/<dataset>.json`` (always the most frequent train class)
and, for each training run and seed, ``runs/<run>/seed<k>/untrained.json`` (the network before its
first step, written by the training job), both on the ``val`` split; a row is read against the mean
of its run's untrained networks over the seeds it trains under. Every mIoU cell of the tables gets a
companion cell "+M / +U": how many points the row's mean mIoU is above the majority reference and
above its own untrained network; the section "Reference scores" lists the references themselves.
"""

from __future__ import annotations

from spgnet.analysis.report.files import _show
from spgnet.analysis.report.markdown import _section, to_markdown

ABOVE_HEAD = "above majority / untrained (points)"
TITLE = "Reference scores: the most frequent class and the untrained networks"


class References:
    """Reads the reference JSONs of one report (through its :class:`ResultFiles`)."""

    def __init__(self, report):
        self.report = report
        self.plan = report.plan

    def _miou(self, plan_path: str) -> tuple[float | None, dict | None, str | None]:
        data, problem = self.report.files.read(self.report.files.path(plan_path))
        if problem:
            return None, None, problem
        if data.get("miou") is None:
            return None, data, self.report.problems.add(f"unreadable: {plan_path} has no mIoU")
        return float(data["miou"]), data, None

    def untrained(self, run: str) -> tuple[float | None, dict | None, str | None]:
        """(mean untrained mIoU over ``run``'s seeds, the first seed's JSON, first problem)."""
        values, first = [], None
        for seed in self.plan.seeds_of_run(run):
            miou, data, problem = self._miou(self.plan.untrained_json(run, seed))
            if problem:
                return None, None, problem
            values.append(miou)
            first = first or data
        return sum(values) / len(values), first, None

    def of(self, experiment: str) -> tuple[float | None, float | None, str | None]:
        """(majority mIoU, untrained mIoU, first problem) of ``experiment``'s data set and network."""
        run = self.plan.evaluations[experiment].run
        majority, _, problem_m = self._miou(self.plan.majority_json(self.plan.runs[run].train.dataset))
        untrained, _, problem_u = self.untrained(run)
        return majority, untrained, problem_m or problem_u

    def floor(self, experiment: str) -> float | None:
        """The higher of the two references (None when either is missing)."""
        majority, untrained, problem = self.of(experiment)
        return None if problem else max(majority, untrained)

    def above_cell(self, exp, measured) -> str:
        """"+M / +U" for a row measured with status ok, "-" for a row without a number."""
        if measured.status != "ok":
            return "-"
        majority, untrained, problem = self.of(exp.name)
        if problem:
            return problem
        mean = sum(measured.miou) / len(measured.miou)
        return f"{mean - majority:+.2f} / {mean - untrained:+.2f}"

    # ---- the section ---------------------------------------------------------------------
    def section(self) -> dict:
        import pandas as pd

        datasets, networks = [], []
        groups = self.plan.untrained_runs()
        for dataset in self.plan.datasets():
            miou, data, problem = self._miou(self.plan.majority_json(dataset))
            owners = [r for r in groups if self.plan.runs[r].train.dataset == dataset]
            values = [v for v in (self.untrained(r)[0] for r in owners) if v is not None]
            datasets.append({
                "Data set": dataset,
                "Most frequent train class": problem or f"{data['class']} ({data['train_share']:.1f}% of train pixels)",
                "mIoU (%) always that class": "-" if problem else f"{miou:.2f}",
                "mIoU (%) untrained networks": (f"{min(values):.2f} to {max(values):.2f} ({len(values)} of "
                                                f"{len(owners)} networks)" if values else "missing"),
            })
        for owner, members in groups.items():
            miou, data, problem = self.untrained(owner)
            seeds = len(self.plan.seeds_of_run(owner))
            networks.append({
                "Network (run)": f"`{owner}`",
                "Also the network of": ", ".join(f"`{m}`" for m in members[1:]) or "-",
                "Data set": self.plan.runs[owner].train.dataset,
                "mIoU (%) untrained": problem or (f"{miou:.2f}" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")),
                "Test strategy": problem and "-" or f"{data.get('strategy')}, 1 scale",
            })
        notes = [
            "Two scores every trained mIoU is read against, computed by the pipeline on the same `val` split "
            f"as the rows: always predicting the most frequent class of the `train` split (`spgnet baseline "
            f"majority`, `{_show(self.report.results)}/references/majority/`; its IoU is its share of the `val` "
            "pixels, every other class present scores 0), and the row's own network before training (the "
            "weights each seed starts from, scored by the training job before its first step: "
            "`runs/<run>/seed<k>/untrained.json`; the mean over the row's seeds), evaluated with one scale "
            "and the row's test strategy. The tables' column "
            f"*{ABOVE_HEAD}* gives each row's mean mIoU minus these two; a row not above them has learned "
            "nothing the score can show.",
        ]
        frame = pd.DataFrame.from_records(datasets)
        section = _section("references", TITLE, notes, frame, ["l", "l", "r", "r"], short="Reference scores")
        section["extra"] = to_markdown(pd.DataFrame.from_records(networks), ["l", "l", "l", "r", "l"])
        return section
