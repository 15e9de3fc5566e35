"""The report's section for rows of your own (an experiments file, ``--experiments``; issue 24,
``docs/own-data.md``): one table of the file's rows beside each other, and its comparisons.

The rows table gives each row's data set, seeds, mIoU as ``mean ± std (n=K)`` over its seeds (the
cells of every other table, :mod:`.cells`), how far it is above the data set's references
(:mod:`.references`), and #Params / #FLOPs from ``profile.json``, counted at the data set's image
size with its class count (:func:`spgnet.analysis.profile.data_input_size`). A comparison ``a`` vs
``b`` (the file's ``comparisons``, both rows on the same data) gives the two means, their difference
and Welch's t-test over the seeds (:func:`.statistics.compare_seeds`, what the claims section tests
the paper's differences with): whether the difference is more than seed noise.
"""

from __future__ import annotations

from spgnet.analysis.report.cells import _seeds_cell
from spgnet.analysis.report.markdown import _section
from spgnet.analysis.report.statistics import ALPHA, compare_seeds
from spgnet.config import own_experiments


def own_sections(report) -> list[dict]:
    """The sections of the plan's experiments file of your own rows (none without one); ``report``
    is the :class:`~spgnet.analysis.report.tables.TableReport` whose cells they reuse."""
    file = report.profile.experiments_file
    if not file:
        return []
    own = own_experiments(file)
    rows = [report.registry[name] for name in own.names if name in report.registry]
    sections = [_section("own", f"Your rows: {own.title}", _notes(report, own), _rows_frame(report, rows),
                         ["l", "l", "l", "l", "r", "r", "r", "r"], short="Your rows")]
    if own.comparisons:
        sections.append(_section("own-comparisons", f"Your comparisons: {own.title}", _comparison_notes(),
                                 _comparisons_frame(report, own.comparisons), ["l", "r", "r", "r", "l"],
                                 short="Your comparisons"))
    return sections


def _notes(report, own) -> list[str]:
    profile = report.profile
    return [f"Rows of `{own.file}`, trained and evaluated under profile `{profile.arg}`; mIoU is the mean ± "
            f"sample standard deviation over the seeds (n = seeds with a result). #Params / #FLOPs are counted "
            f"with the row's class count at its data set's image size (`spgnet profile --experiments`)."]


def _comparison_notes() -> list[str]:
    return [f"Δ = mean(a) − mean(b) in mIoU points; Welch's t-test (two-sided) over the seeds of the two rows; "
            f"a difference is *distinguishable from seed noise* when p < {ALPHA}. One seed on a side: no test."]


def _counted(report, exp, key: str) -> str:
    rows, _data, problem = report.profile_rows()
    row = rows.get(exp.name)
    if problem or row is None:
        return report.counted_cell(exp, key, diff=False)
    cell = report.counted_cell(exp, key, diff=False)
    if key == "flops_g" and row.get("input"):
        cell += f" at {row['input'][0]} x {row['input'][1]}"
    return cell


def _rows_frame(report, rows):
    import pandas as pd

    records = []
    for exp in rows:
        planned = exp.name in report.plan.evaluations
        measured = report.measured(exp)
        seeds = ", ".join(map(str, report.plan.seeds_of(exp.name))) if planned else "-"
        records.append({
            "Experiment": f"`{exp.name}`",
            "Description": exp.description or "-",
            "Data set": exp.train.dataset,
            "Seeds": seeds,
            "mIoU (%)": report.miou_cell(exp, 2) if planned else measured.text,
            "above majority / untrained": report.above_cell(exp),
            "#Params (M)": _counted(report, exp, "params_m"),
            "#FLOPs (G)": _counted(report, exp, "flops_g"),
        })
    return pd.DataFrame.from_records(records)


def _comparisons_frame(report, comparisons):
    import pandas as pd

    records = []
    for comparison in comparisons:
        a, b = report.registry[comparison.a], report.registry[comparison.b]
        ma, mb = report.measured(a), report.measured(b)
        record = {"Comparison": f"{comparison.title} (`{a.name}` vs `{b.name}`)",
                  "a": _seeds_cell(ma.miou, ma.missing, 2) if ma.miou else ma.text,
                  "b": _seeds_cell(mb.miou, mb.missing, 2) if mb.miou else mb.text}
        if ma.miou and mb.miou:
            same_run = (a.name in report.plan.evaluations and b.name in report.plan.evaluations
                        and report.plan.evaluations[a.name].run == report.plan.evaluations[b.name].run)
            result = compare_seeds(ma.miou, mb.miou, same_run=same_run)
            record["Δ (a − b)"] = f"{result.delta:+.2f}"
            record["seed test"] = result.describe()
        else:
            record["Δ (a − b)"] = "-"
            record["seed test"] = "no result on one side"
        records.append(record)
    return pd.DataFrame.from_records(records)
