"""``spgnet report --profile NAME``: the paper's Tables 1-12 beside this run, as Markdown.

Reads only files (the registry, the profile's plan and ``results/<profile>/``) and renders
``reports/templates/tables.md.j2`` with Jinja; the tables are pandas DataFrames turned into
GitHub-flavoured Markdown. Every row of every table comes from the registry
(:func:`spgnet.config.load_registry`), generically:

* a row the paper cites from another work shows the paper's values and "cited, not reproduced";
* a reproducible row the profile does not select says "not run in profile <name>";
* a selected row reads ``runs/<run>/seed<k>/eval/<evaluation>.json`` for every seed of the plan
  (mIoU in percent, as :mod:`spgnet.engine.evaluation.evaluate` writes it) and shows the value, or
  ``mean ± std (n=K)`` (sample standard deviation) when several seeds ran; an absent file says
  "missing: <path>"; ``miou: null`` (the unlabelled Cityscapes test split) says the test server is
  needed;
* #Params and #FLOPs come from ``profile.json`` (``spgnet profile``: always paper scale, whatever
  the profile), with the relative difference to the paper; TILED is "tiles x per-tile FLOPs".

After Table 1 (generically: after every table in :data:`TRAINED`) a second table lists the rows of
that table this pipeline trains (the registry's non-cited rows: SPGNet and its peers in
``spgnet.models.peers``), side by side on the profile's data and schedule: the measured mIoU with
the split it is from, #Params and #FLOPs without the paper's values, and the inference time per
image from the same eval JSONs (``seconds_per_image``, with the ``device``, ``threads`` and image
size :mod:`spgnet.engine.evaluation.evaluate` records), in ``mean ± std (n=K)`` form like the other cells.

The page opens with the claims of the paper's text checked three ways (:mod:`.claims`, from
``params/claims.yaml``) and the reference scores every mIoU cell is read against (:mod:`.references`;
each table gets a column "above majority / untrained"); differences between rows are tested against
seed noise by :mod:`.statistics`. Modules: :mod:`.files` (reading results), :mod:`.cells` (cell
texts), :mod:`.tables` (Tables 1-12), :mod:`.page` (header, figures, training runs, the context),
:mod:`.markdown` (tables, anchors, the Jinja template).

Each metric has two columns, "paper" and "this run". Table 2 (per class) is transposed: one row
per class, one column pair per method. The report still renders when files are missing (so that a
partial run can be inspected); ``strict`` (``args.strict``) turns the first missing file into a
one-line :class:`~spgnet.errors.SpgnetError` instead. The output is written atomically.
"""

from __future__ import annotations

from pathlib import Path

from spgnet.analysis.report.files import Problems, ResultFiles
from spgnet.analysis.report.markdown import github_anchor, render, to_markdown, write_atomic
from spgnet.analysis.report.page import Report
from spgnet.analysis.report.tables import PAPER, THIS_RUN, section_order
from spgnet.config import PROJECT_ROOT
from spgnet.errors import SpgnetError

__all__ = ["Problems", "Report", "ResultFiles", "build", "github_anchor", "main", "render", "section_order",
           "to_markdown", "write_atomic", "PAPER", "THIS_RUN"]


def build(profile: str, data_root: str | None = None, results: str | Path | None = None,
          out: str | Path | None = None, figures: str | Path | None = None,
          seeds: list[int] | None = None, registry: str | Path | None = None,
          claims: str | Path | None = None, experiments: str | None = None) -> tuple[str, Path, list[str]]:
    """(Markdown text, output path, problems) without writing anything. ``seeds`` replaces the
    profile's seeds (what the plan expects); seeds found on disk are added either way.
    ``registry`` / ``claims``: other files than ``params/experiments.yaml`` / ``params/claims.yaml``
    for the paper's numbers and the claims (the plan itself always comes from ``params/``);
    ``experiments``: a file of your own rows, reported in a section of their own (:mod:`.own`)."""
    from spgnet.claims_config import CLAIMS_FILE, load_claims
    from spgnet.config import EXPERIMENTS_FILE, load_registry
    from spgnet.workflow.plan import make_plan

    plan = make_plan(profile, data_root=data_root, seeds=seeds, experiments=experiments)
    results = Path(results) if results else PROJECT_ROOT / plan.results
    out = Path(out) if out else PROJECT_ROOT / plan.report_dir / "tables.md"
    figures = Path(figures) if figures else out.parent / "figures"
    problems = Problems()
    registry_path = Path(registry) if registry else EXPERIMENTS_FILE
    claim_list = load_claims(Path(claims) if claims else CLAIMS_FILE, registry_path)
    report = Report(plan, results, problems, figures, out, registry=load_registry(registry_path) if registry else None,
                    claims=claim_list)
    return render(report.context()), out, problems.items


def main(args) -> int:
    text, out, problems = build(
        args.profile,
        data_root=getattr(args, "data_root", None),
        results=getattr(args, "results", None),
        out=getattr(args, "out", None),
        figures=getattr(args, "figures", None),
        seeds=getattr(args, "seeds", None),
        experiments=getattr(args, "experiments", None),
    )
    if getattr(args, "strict", False) and problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SpgnetError(f"{problems[0]}{more}")
    write_atomic(out, text)
    return 0
