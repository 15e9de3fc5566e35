"""The paper's Tables 1-12 beside this run: one section per table, rows from the registry."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from spgnet.analysis.report.cells import (
    Measured,
    _decimals,
    _mean_std,
    _paper_flops,
    _seeds_cell,
    _timing_context,
)
from spgnet.analysis.report.files import Problems, ResultFiles, _show
from spgnet.analysis.report.markdown import _section
from spgnet.analysis.report.provenance import MARK, marked, run_deviations
from spgnet.analysis.report.references import ABOVE_HEAD, References
from spgnet.analysis.report.rows import _descriptive, _differences, _label_cells
from spgnet.config import Experiment, load_registry, resolve, table_order

#: Section headings (the paper's captions, shortened). Rows come from the registry, never from here.
TITLES = {
    "1": "Table 1. Comparison to state-of-the-art on the Cityscapes test set",
    "2": "Table 2. Per-class results on the Cityscapes test set",
    "3": "Table 3. Ablation of the SPG module (Cityscapes val, ResNet-18)",
    "4": "Table 4. Supervise-and-excite vs squeeze/gather-and-excite (Cityscapes val, ResNet-18)",
    "5": "Table 5. Number of stages (Cityscapes val, ResNet-18)",
    "6": "Table 6. Encoder combination (Cityscapes val)",
    "7": "Table 7. Encoder depth (Cityscapes val)",
    "8": "Table 8. Online hard example mining (Cityscapes val)",
    "9": "Table 9. Decoder channels (Cityscapes val, 2 stages, OHEM; last row: Sec. 4.4)",
    "10": "Table 10. PASCAL Person-Part val",
    "4.6": "PASCAL VOC 2012 (Sec. 4.6)",
    "11": "Table 11. Upsample module (Cityscapes val, ResNet-18, no GAP)",
    "12": "Table 12. Global average pooling and test strategy (Cityscapes val, ResNet-18)",
}
#: Sections printed right after another one instead of in numeric order.
PLACED_AFTER = {"4.6": "10"}
#: Tables followed by a section of their rows that this pipeline trains (rows from the registry).
TRAINED = {"1": "Table 1 methods trained by this pipeline on the same data and schedule"}
#: Digits of the inference-time cells (seconds per image).
SECONDS_DECIMALS = 3

#: (key in PaperNumbers / profile.json, column heading)
METRICS = (("miou", "mIoU (%)"), ("params_m", "#Params (M)"), ("flops_g", "#FLOPs (B)"))
PAPER, THIS_RUN = "paper", "this run"
SEED_MARK = 987654321  # placeholder seed that turns a plan path into a glob pattern


class TableReport:
    """Builds the template context for one plan and one results folder."""

    def __init__(self, plan, results: Path, problems: Problems, figures_dir: Path, out: Path,
                 registry: dict | None = None):
        self.plan = plan
        self.profile = plan.profile
        self.files = ResultFiles(plan, results, problems)
        self.problems = problems
        self.results = Path(results)
        self.figures_dir = Path(figures_dir)
        self.out = Path(out)
        self.registry = registry if registry is not None else load_registry(extra=plan.profile.experiments_file)
        self._profile_rows = None
        self._measured: dict[str, Measured] = {}
        self._deviations: dict[str, list[str] | None] = {}
        self.references = References(self)

    # ---- profile.json ------------------------------------------------------------------
    def profile_rows(self) -> tuple[dict, dict | None, str | None]:
        if self._profile_rows is None:
            path = self.files.path(self.plan.profile_json)
            data, problem = self.files.read(path)
            rows = {r["name"]: r for r in (data or {}).get("experiments", []) if "name" in r}
            self._profile_rows = (rows, data, problem, path)
        rows, data, problem, _ = self._profile_rows
        return rows, data, problem

    def counted_cell(self, exp: Experiment, key: str, diff: bool = True) -> str:
        """#Params or #FLOPs of ``profile.json`` (``key``: params_m / flops_g), followed by the
        relative difference to the paper when ``diff``."""
        if not exp.reproducible:
            return "cited, not reproduced"
        rows, _data, problem = self.profile_rows()
        if problem:
            return problem
        row = rows.get(exp.name)
        if row is None:
            return self.problems.add(f"missing: {_show(self._profile_rows[3])} has no row '{exp.name}'")
        rel = row.get("params_rel_diff" if key == "params_m" else "flops_rel_diff") if diff else None
        diff = "" if rel is None else f" ({rel:+.2%})"
        if key == "params_m":
            return f"{row['params_m']:.2f}{diff}"
        if row.get("tiles"):
            return f"{row['tiles']} x {row['flops_g']:.2f}{diff}"
        return f"{row['flops_g']:.2f}{diff}"

    # ---- eval JSONs --------------------------------------------------------------------
    def measured(self, exp: Experiment) -> Measured:
        if exp.name in self._measured:
            return self._measured[exp.name]
        if not exp.reproducible:
            result = Measured("cited", "cited, not reproduced", short="cited")
        elif exp.name not in self.plan.evaluations:
            text = f"not run in profile {self.profile.name}"
            result = Measured("not-run", text, short=text)
        else:
            result = self._read_evaluations(exp)
        self._measured[exp.name] = result
        return result

    def _read_evaluations(self, exp: Experiment) -> Measured:
        cfg = resolve(exp, self.profile)
        result = Measured("ok")
        notes = []
        for seed in self.seeds_of(lambda k: self.plan.eval_json(exp.name, k), self.plan.seeds_of(exp.name)):
            data, problem = self.files.read(self.files.path(self.plan.eval_json(exp.name, seed)))
            if problem:
                result.missing.append(problem)
                continue
            if data.get("seconds_per_image") is not None:
                result.seconds.append(float(data["seconds_per_image"]))
                result.timing.append(_timing_context(data))
            if data.get("miou") is None:
                notes.append(data.get("note") or f"split '{data.get('split', cfg.eval.split)}' has no labels")
                continue
            result.miou.append(float(data["miou"]))
            for name, value in (data.get("per_class") or {}).items():
                if value is not None:
                    result.per_class.setdefault(name, []).append(float(value))
        if result.miou:
            return result
        if notes:
            if cfg.eval.split == "test":
                written = "; labelIds PNGs written for submission" if cfg.eval.submission else ""
                result.status, result.short = "no-labels", "needs test server"
                result.text = f"needs the test server (no test labels{written})"
            else:
                result.status, result.short = "no-labels", "n/a"
                result.text = f"n/a: {notes[0]}"
            if result.missing:
                result.text += f" ({result.missing[0]})"
            return result
        result.status, result.text, result.short = "missing", result.missing[0], "missing"
        return result

    def seeds_of(self, plan_path, planned=None) -> list[int]:
        """The plan's seeds (``planned``: a run's own, default the profile's), plus any other seed
        whose file (``plan_path(seed)``) exists: a run made with more seeds than planned still counts."""
        seeds = set(self.plan.seeds if planned is None else planned)
        pattern = Path(plan_path(SEED_MARK)).relative_to(self.plan.results).as_posix()
        for found in self.results.glob(pattern.replace(f"seed{SEED_MARK}", "seed*")):
            match = re.search(r"/seed(\d+)/", "/" + found.relative_to(self.results).as_posix())
            if match:
                seeds.add(int(match.group(1)))
        return sorted(seeds)

    def miou_cell(self, exp: Experiment, decimals: int) -> str:
        m = self.measured(exp)
        if m.status != "ok":
            return m.text
        return marked(_seeds_cell(m.miou, m.missing, decimals), self.exp_deviations(exp))

    def above_cell(self, exp: Experiment) -> str:
        """How far the row's mean mIoU is above its references (:mod:`.references`)."""
        if not exp.reproducible or exp.name not in self.plan.evaluations:
            return "-"
        return self.references.above_cell(exp, self.measured(exp))

    def time_cell(self, exp: Experiment) -> str:
        """Seconds per image over the seeds (also for a split without labels: the model still ran)."""
        m = self.measured(exp)
        if m.seconds:
            return _seeds_cell(m.seconds, m.missing, SECONDS_DECIMALS)
        if m.status in ("ok", "no-labels") and not m.missing:
            return "n/a: the eval JSON has no seconds_per_image"
        return m.missing[0] if m.missing else m.text

    def class_cell(self, exp: Experiment, name: str, decimals: int) -> str:
        m = self.measured(exp)
        if m.status != "ok":
            return m.short
        values = m.per_class.get(name)
        if not values:
            return "n/a"
        return f"{_mean_std(values, decimals)} {MARK}" if self.exp_deviations(exp) else _mean_std(values, decimals)

    # ---- does each result come from the run the profile describes? ---------------------
    def run_deviations(self, run: str) -> list[str] | None:
        """How the seeds' recorded runs of ``run`` (``train_metrics.json``) differ from this
        profile's settings for it (:func:`.provenance.run_deviations`; the seeds' differences
        together); None when no seed has a record."""
        if run not in self._deviations:
            cfg = self.plan.runs[run]
            source = self.profile.datasets.get(cfg.train.dataset)
            synthetic = source is not None and source.synthetic is not None
            found, recorded = [], False
            for seed in self.plan.seeds_of_run(run):
                path = self.files.path(f"{self.plan.run_dir(run, seed)}/train_metrics.json")
                if not path.is_file():
                    continue
                data, problem = self.files.read(path)
                if data is not None:
                    recorded = True
                    found += [d for d in run_deviations(data, cfg, synthetic) if d not in found]
            self._deviations[run] = found if recorded else None
        return self._deviations[run]

    def exp_deviations(self, exp: Experiment) -> list[str]:
        """:meth:`run_deviations` of the run a row is evaluated from (none when unknown)."""
        evaluation = self.plan.evaluations.get(exp.name)
        return (self.run_deviations(evaluation.run) or []) if evaluation is not None else []

    # ---- tables ------------------------------------------------------------------------
    def sections(self) -> list[dict]:
        by_table: dict[str, list[Experiment]] = {}
        for exp in self.registry.values():
            if not exp.own:  # rows of your own: their own section (spgnet.analysis.report.own)
                by_table.setdefault(exp.table, []).append(exp)
        sections = []
        for table in section_order(by_table):
            sections.append(self.section(table, by_table[table]))
            if table in TRAINED and any(exp.reproducible for exp in by_table[table]):
                sections.append(self.trained_section(table, by_table[table]))
        from spgnet.analysis.report.own import own_sections

        return sections + own_sections(self)

    def section(self, table: str, rows: list[Experiment]) -> dict:
        per_class = any(exp.paper.per_class for exp in rows)
        frame, align = (self.per_class_frame(rows) if per_class else self.metrics_frame(rows))
        return _section(table, TITLES.get(table, f"Table {table}"), self.notes(rows), frame, align)

    def metrics_frame(self, rows: list[Experiment]):
        import pandas as pd

        descriptive, with_label = _descriptive(rows)
        metrics = [(key, head) for key, head in METRICS if any(getattr(e.paper, key) is not None for e in rows)]
        decimals = {key: _decimals(getattr(e.paper, key) for e in rows) for key, _ in metrics}
        records = []
        for exp in rows:
            record = _label_cells(exp, descriptive, with_label)
            for key, head in metrics:
                paper = getattr(exp.paper, key)
                if key == "flops_g":
                    record[f"{head} {PAPER}"] = _paper_flops(exp.paper)
                else:
                    record[f"{head} {PAPER}"] = "-" if paper is None else f"{paper:.{decimals[key]}f}"
                if key == "miou":
                    record[f"{head} {THIS_RUN}"] = self.miou_cell(exp, max(decimals[key], 2))
                    record[f"{head} {ABOVE_HEAD}"] = self.above_cell(exp)
                else:
                    record[f"{head} {THIS_RUN}"] = self.counted_cell(exp, key)
            record["Experiment"] = f"`{exp.name}`"
            records.append(record)
        frame = pd.DataFrame.from_records(records)
        text_columns = (1 if with_label else 0) + len(descriptive)
        align = ["l"] * text_columns + ["r"] * (2 * len(metrics) + any(k == "miou" for k, _ in metrics)) + ["l"]
        return frame, align

    def per_class_frame(self, rows: list[Experiment]):
        import pandas as pd

        classes = list(dict.fromkeys(c for exp in rows for c in (exp.paper.per_class or {})))
        decimals = max(2, _decimals(v for e in rows for v in (e.paper.per_class or {}).values()))
        paper_decimals = _decimals(v for e in rows for v in [e.paper.miou, *(e.paper.per_class or {}).values()])
        columns: dict[str, list[str]] = {"Class": ["**mIoU**", *classes]}
        for exp in rows:
            paper_values = [exp.paper.miou, *((exp.paper.per_class or {}).get(c) for c in classes)]
            paper_head = f"{exp.row} {PAPER}" if exp.reproducible else f"{exp.row} {PAPER} (cited, not reproduced)"
            columns[paper_head] = ["-" if v is None else f"{v:.{paper_decimals}f}" for v in paper_values]
            if exp.reproducible:
                columns[f"{exp.row} {THIS_RUN}"] = [
                    self.miou_cell(exp, decimals), *(self.class_cell(exp, c, decimals) for c in classes)
                ]
        frame = pd.DataFrame(columns)
        return frame, ["l"] + ["r"] * (len(columns) - 1)

    def notes(self, rows: list[Experiment]) -> list[str]:
        notes = []
        settings = {}
        for exp in rows:
            if not exp.reproducible:
                continue
            train, ev = self.settings(exp)
            text = f"{train.dataset}, trained on `{train.split}`, evaluated on `{ev.split}`"
            settings.setdefault(text, []).append(exp.name)
        if len(settings) == 1:
            notes.append(f"This run: {next(iter(settings))}.")
        elif settings:
            notes.append("This run: " + "; ".join(
                f"{text} ({', '.join(f'`{n}`' for n in names)})" for text, names in settings.items()) + ".")
        on_test = [exp.name for exp in rows if exp.reproducible and exp.eval.split == "test"]
        if on_test:
            reproduced = [name for names in settings.values() for name in names]
            which = "These rows are" if on_test == reproduced else ", ".join(f"`{n}`" for n in on_test) + ":"
            notes.append(f"{which} the test-set model (Sec. 4.2: trained on train+val). The test split has "
                         "no public labels, so its mIoU needs the evaluation server; `spgnet evaluate` writes the "
                         "labelIds PNGs to submit.")
        rows_by_name = self.profile_rows()[0]
        if any(rows_by_name.get(exp.name, {}).get("tiles") for exp in rows):
            notes.append("TILED #FLOPs: number of tiles x FLOPs of one training-crop tile (the paper prints "
                         "\"8 (tiles) x 30.6B\").")
        if any(exp.paper.per_class for exp in rows):
            notes.append("Transposed: one row per class, a paper / this-run column pair per method.")
        return notes

    def settings(self, exp: Experiment):
        """(train, eval) config of a reproducible row under this profile (the registry's when the
        profile lacks the row's data set)."""
        if exp.train.dataset not in self.profile.datasets:
            return exp.train, exp.eval
        cfg = resolve(exp, self.profile)
        return cfg.train, cfg.eval

    # ---- the rows of a table that this pipeline trains ----------------------------------
    def trained_section(self, table: str, rows: list[Experiment]) -> dict:
        trained = [exp for exp in rows if exp.reproducible]
        # The test-set model's train-split twin (same network and schedule, scored on val) joins the
        # table, so that SPGNet also has a row measured exactly like the competitors'.
        twins = []
        for exp in trained:
            twin = self.counterpart(exp) if exp.eval.split == "test" else None
            if twin is not None and twin not in trained:
                label = {k: f"{v} ({twin.train.split} / {twin.eval.split})" if k == next(iter(exp.columns)) else v
                         for k, v in exp.columns.items()}
                twins.append(dataclasses.replace(twin, columns=label))
        frame, align = self.trained_frame(trained + twins)
        return _section(f"{table}-trained", TRAINED[table], self.trained_notes(rows, trained), frame, align,
                        short=f"Table {table}, trained here")

    def trained_frame(self, rows: list[Experiment]):
        import pandas as pd

        descriptive, with_label = _descriptive(rows)
        records = []
        for exp in rows:
            train, ev = self.settings(exp)
            test = f"{len(ev.scales)} scale{'s' if len(ev.scales) > 1 else ''}" + (", flip" if ev.flip else "")
            record = _label_cells(exp, descriptive, with_label)
            record.update({
                "Trained on": f"`{train.split}`",
                "Evaluated on": f"`{ev.split}`, {test}",
                f"mIoU (%) {THIS_RUN}": self.miou_cell(exp, 2),
                f"mIoU {ABOVE_HEAD}": self.above_cell(exp),
                "#Params (M)": self.counted_cell(exp, "params_m", diff=False),
                "#FLOPs (G)": self.counted_cell(exp, "flops_g", diff=False),
                "Inference (s / image)": self.time_cell(exp),
                "Experiment": f"`{exp.name}`",
            })
            records.append(record)
        text_columns = (1 if with_label else 0) + len(descriptive) + 2
        return pd.DataFrame.from_records(records), ["l"] * text_columns + ["r"] * 5 + ["l"]

    def trained_notes(self, rows: list[Experiment], trained: list[Experiment]) -> list[str]:
        names = ", ".join(f"`{exp.name}`" for exp in trained)
        notes = [f"The rows of the table above that this pipeline trains ({names}), each trained and "
                 f"evaluated by the profile's schedule (table *Schedule* at the top; profile "
                 f"{self.profile.name}); mIoU on the split in *Evaluated on*, over the seeds. #Params and "
                 "#FLOPs (G = 10^9 multiply-adds) are this implementation's, counted at paper scale "
                 "(1025 x 2049 input, `spgnet profile`) on every profile; the table above sets them beside "
                 "the paper's."]
        differences = _differences({exp.name: self.settings(exp)[0] for exp in trained})
        if differences:
            notes.append("The training settings differ only in " + "; ".join(differences) + ".")
        for exp in trained:
            if exp.eval.split != "test":
                continue
            text = (f"`{exp.name}` is the paper's test-set model (trained on `{exp.train.split}`, evaluated on "
                    "`test`), so its mIoU is not comparable with rows evaluated on `val`; on the real Cityscapes "
                    "test split, which has no public labels, its mIoU cell says so instead of giving a number.")
            other = self.counterpart(exp)
            if other is not None:
                text += (f" The same network and schedule trained on `{other.train.split}` and evaluated on "
                         f"`{other.eval.split}` is Table {other.table}'s `{other.name}`: mIoU "
                         f"{self.miou_cell(other, 2)}.")
            notes.append(text)
        notes.append(self.timing_note(trained))
        cited = [exp.row for exp in rows if not exp.reproducible]
        if cited:
            notes.append(f"Not trainable here: {', '.join(cited)} (the paper cites their numbers; the registry "
                         "marks them `cited: true` and this project has no model for them).")
        return notes

    def counterpart(self, exp: Experiment) -> Experiment | None:
        """A registry row with ``exp``'s network and training except the split, evaluated on another
        split (for the test-set model: the same network trained on train and scored on val)."""
        for other in self.registry.values():
            if (other is not exp and other.reproducible and other.model == exp.model
                    and other.eval.split != exp.eval.split
                    and dataclasses.replace(other.train, split=exp.train.split) == exp.train):
                return other
        return None

    def timing_note(self, rows: list[Experiment]) -> str:
        """The caption of the inference-time column: what is timed and where (device, threads, image
        size of the eval JSONs; one clause per distinct setting)."""
        where: dict[str | None, list[str]] = {}
        for exp in rows:
            for context in self.measured(exp).timing:
                names = where.setdefault(context, [])
                if exp.name not in names:
                    names.append(exp.name)
        text = ("Inference time: `seconds_per_image` of `spgnet evaluate`, the mean over the evaluated images of "
                "the row's test-time forward passes (scales, flip) and the argmax, without data loading or "
                "writing predictions")
        if not where:
            return text + "; no eval JSON of these rows has one yet."
        clauses = [f"on {context}" if context else "on a device the eval JSON does not record (written before "
                   "`spgnet evaluate` stored `device`, `threads` and the image size)" for context in where]
        if len(where) == 1:
            return f"{text}; measured {clauses[0]}."
        return f"{text}; measured " + "; ".join(
            f"{clause} ({', '.join(f'`{n}`' for n in names)})" for clause, names in zip(clauses, where.values())) + "."

    # ---- the rest of the page ------------------------------------------------------------


def section_order(tables) -> list[str]:
    """Tables in the paper's numeric order, with :data:`PLACED_AFTER` sections moved."""
    order = sorted((t for t in tables if t not in PLACED_AFTER), key=table_order)
    for table, anchor in PLACED_AFTER.items():
        if table in tables:
            order.insert(order.index(anchor) + 1 if anchor in order else len(order), table)
    return order
