"""The whole page: header, tables, figures, training runs; the template's context."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from pathlib import Path

from spgnet.analysis.report.files import _show
from spgnet.analysis.report.markdown import to_markdown
from spgnet.analysis.report.provenance import MARK
from spgnet.analysis.report.tables import PAPER, THIS_RUN, TableReport
from spgnet.data.synthetic import is_generated


#: Figures linked from the report: (file under the figures folder, caption).
def _figure_list() -> list[tuple[str, str]]:
    from spgnet.analysis.attention import FIGURES
    from spgnet.analysis.curves import FIGURE_NAME

    figures = [(name, f"{title} ({', '.join(classes)})") for name, (title, classes) in FIGURES.items()]
    figures.append((FIGURE_NAME, "Training curves: loss and learning rate of every run"))
    return figures


class Report(TableReport):
    """Builds the template context for one plan and one results folder: the claims (``claims``,
    default ``params/claims.yaml``), the reference scores, the tables and the rest of the page."""

    def __init__(self, plan, results: Path, problems, figures_dir: Path, out: Path,
                 registry: dict | None = None, claims: list | None = None):
        super().__init__(plan, results, problems, figures_dir, out, registry=registry)
        if claims is None:
            from spgnet.claims_config import load_claims

            claims = load_claims()
        self.claims = claims

    # ---- the rest of the page ------------------------------------------------------------
    def header(self) -> dict:
        import pandas as pd

        datasets = []
        for name, source in self.plan.datasets().items():
            if source.synthetic:
                s = source.synthetic
                kind = (f"synthetic ({s.kind or name} layout, {s.height}x{s.width}, "
                        f"{s.num_train} train / {s.num_val} val / {s.num_test} test images)")
            elif is_generated(source.path()):
                kind = ("synthetic: `spgnet make-synthetic` wrote this tree (its manifest is there), though "
                        "the profile reads it as real data")
            else:
                kind = "real data"
            datasets.append(f"{name}: `{source.root}`, {kind}")
        schedule = []
        for run, cfg in self.plan.runs.items():
            t = cfg.train
            found = self.run_deviations(run)
            schedule.append({
                "Run": f"`{run}`", "Data set": t.dataset, "Split": t.split, "Iterations": t.iterations,
                "Batch": t.batch_size, "Crop": t.crop, "LR": t.lr, "OHEM": "✓" if t.ohem else "×",
                "Device": t.device, "Norm": cfg.model.norm,
                "As run": "not run yet" if found is None else (f"{MARK} {', '.join(found)}" if found else "as planned"),
            })
        _rows, data, _problem = self.profile_rows()
        return {
            "profile": self.profile.name,
            "description": self.profile.description,
            "datasets": datasets,
            "seeds": self.seeds_text(),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "results": _show(self.results),
            "convention": (data or {}).get("convention"),
            "own_rows": bool(self.profile.experiments_file),
            "torch": (data or {}).get("torch"),
            "schedule": to_markdown(pd.DataFrame.from_records(schedule), ["l", "l", "l", "r", "r", "r", "r", "c", "l", "l", "l"]),
        }

    def seeds_text(self) -> str:
        """"0; 0, 1, 2 for `t3-1stage`, ..." when some runs have more seeds than the profile's."""
        text = ", ".join(str(s) for s in self.plan.seeds)
        extra: dict[tuple, list[str]] = {}
        for run in self.plan.runs:
            if self.plan.seeds_of_run(run) != self.plan.seeds:
                extra.setdefault(self.plan.seeds_of_run(run), []).append(f"`{run}`")
        for seeds, runs in extra.items():
            text += f"; {', '.join(map(str, seeds))} for {', '.join(runs)}"
        return text

    def figures(self) -> list[dict]:
        figures = []
        made = {Path(path).name for path in (*self.plan.attention_figures(), self.plan.curves_figure)}
        for name, caption in _figure_list():
            if name not in made:  # a profile without a Cityscapes SPG row draws no attention figure
                continue
            path = self.figures_dir / name
            link = Path(os.path.relpath(path, self.out.parent)).as_posix()
            missing = None if path.is_file() else self.problems.add(f"missing: {_show(path)}")
            figures.append({"name": name, "caption": caption, "link": link, "missing": missing})
        sidecar = self.figures_dir / "attention.json"
        source = None
        if sidecar.is_file():
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(sidecar.read_text(encoding="utf-8"))
                source = (f"experiment `{info.get('experiment')}`, checkpoint `{info.get('checkpoint', '?')}`, "
                          f"val images {', '.join(info.get('images', []))}")
        return figures, source

    def confusions(self) -> list[dict]:
        """``[{"experiments", "seed", "link"}]``: every evaluation's row-normalised confusion matrix
        (``<evaluation>.confusion.png`` beside its metrics, :mod:`spgnet.engine.evaluation.confusion`), linked
        relative to the report; evaluations shared by several rows are listed once."""
        from spgnet.engine.evaluation.confusion import confusion_paths

        found: dict[Path, dict] = {}
        for experiment in self.plan.experiments:
            for seed in self.plan.seeds_of(experiment):
                figure = confusion_paths(self.files.path(self.plan.eval_json(experiment, seed)))[1]
                if figure.is_file():
                    entry = found.setdefault(figure, {"experiments": [], "seed": seed,
                                                      "link": Path(os.path.relpath(figure, self.out.parent)).as_posix()})
                    entry["experiments"].append(experiment)
        return list(found.values())

    def training(self) -> str:
        import pandas as pd

        records = []
        for run in self.plan.runs:
            for seed in self.seeds_of(lambda k, run=run: f"{self.plan.run_dir(run, k)}/train_metrics.json",
                                      self.plan.seeds_of_run(run)):
                path = self.files.path(f"{self.plan.run_dir(run, seed)}/train_metrics.json")
                data, problem = self.files.read(path)
                if problem:
                    records.append({"Run": f"`{run}`", "Seed": seed, "Iterations": problem, "Final loss": "",
                                    "Seconds": "", "Device": "", "Norm layer": ""})
                    continue
                loss = data.get("final_loss")
                records.append({
                    "Run": f"`{run}`", "Seed": seed, "Iterations": data.get("iterations", ""),
                    "Final loss": "" if loss is None else f"{loss:.4f}",
                    "Seconds": data.get("seconds", ""), "Device": data.get("device", ""),
                    "Norm layer": data.get("norm_layer", ""),
                })
        return to_markdown(pd.DataFrame.from_records(records), ["l", "r", "r", "r", "r", "l", "l"])

    def context(self) -> dict:
        from spgnet.models.inferred import INFERRED, RESIDUAL_MISSES
        from spgnet.recipe import PROFILE as RECIPE_PROFILE
        from spgnet.recipe import RECIPE_FILE
        from spgnet.recipe import entries as recipe_entries

        from spgnet.analysis.report.claims import ClaimsSection

        header = self.header()
        sections = [ClaimsSection(self, self.claims).section(), self.references.section(), *self.sections()]
        figures, figure_source = self.figures()
        training = self.training()
        return {
            "header": header,
            "sections": sections,
            "inferred": INFERRED,
            "residual_misses": RESIDUAL_MISSES,
            "recipe": recipe_entries(),
            "recipe_profile": RECIPE_PROFILE,
            "recipe_file": RECIPE_FILE,
            "figures": figures,
            "figure_source": figure_source,
            "confusions": self.confusions(),
            "training": training,
            "problems": self.problems.items,
            "paper_label": PAPER,
            "run_label": THIS_RUN,
        }
