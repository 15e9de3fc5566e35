"""Training curves: loss and learning rate against the step, from every run's ``train_log.csv``.

``main(args)`` (``args.profile``, ``args.data_root``, ``args.results`` (default
``results/<profile>``), ``args.out`` (default ``<report_dir>/figures/training-curves.png``)) finds
the logs of the profile's plan (``runs/<run>/seed<k>/train_log.csv``, columns ``step, loss, lr``
and ``loss_stageK``, and ``val_miou`` with ``train.val_every``), draws one loss panel per data set
(one line per run and seed, log scale), the learning-rate schedules below and, where runs were
validated while training, their validation mIoU, and writes the PNG atomically. It only reads files.
"""

from __future__ import annotations

import sys
from pathlib import Path

from spgnet.atomic import atomic_path
from spgnet.errors import SpgnetError
from spgnet.workflow.plan import CURVES_FIGURE, make_plan

#: The figure's file name, as the plan names it (spgnet.workflow.plan).
FIGURE_NAME = CURVES_FIGURE


def find_logs(plan, results: Path) -> list[dict]:
    """``[{"run", "seed", "dataset", "path", "exists"}]`` for every run and seed of ``plan``."""
    logs = []
    for run, cfg in plan.runs.items():
        for seed in plan.seeds:
            rel = Path(plan.run_dir(run, seed)).relative_to(plan.results) / "train_log.csv"
            path = results / rel
            logs.append({"run": run, "seed": seed, "dataset": cfg.train.dataset, "path": path,
                         "exists": path.is_file()})
    return logs


def read_log(path: Path):
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except Exception as err:  # noqa: BLE001 - empty or malformed file
        raise SpgnetError(f"{path}: not a readable training log ({type(err).__name__})") from None
    for column in ("step", "loss", "lr"):
        if column not in frame.columns:
            raise SpgnetError(f"{path}: training log has no '{column}' column")
    return frame


def _val_points(frame):
    """The rows of a training log that carry a validation mIoU (``train.val_every``), or None."""
    if "val_miou" not in frame.columns:
        return None
    points = frame[frame["val_miou"].notna()]
    return points if len(points) else None


def plot_curves(logs: list[dict], path: Path, title: str = "") -> Path:
    """Write the figure for the logs that exist; a SpgnetError when none does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [dict(log, frame=read_log(log["path"])) for log in logs if log["exists"]]
    if not present:
        raise SpgnetError(f"no train_log.csv found (first expected: {logs[0]['path'] if logs else '-'})")
    datasets = list(dict.fromkeys(log["dataset"] for log in present))
    validated = any(_val_points(log["frame"]) is not None for log in present)
    ratios = [3, 1, 2] if validated else [3, 1]
    fig, axes = plt.subplots(len(ratios), len(datasets), figsize=(6 * len(datasets), 3 + 2 * len(ratios)),
                             squeeze=False, gridspec_kw={"height_ratios": ratios})
    for j, dataset in enumerate(datasets):
        loss_ax, lr_ax = axes[0][j], axes[1][j]
        for log in (log for log in present if log["dataset"] == dataset):
            frame = log["frame"]
            label = f"{log['run']} (seed {log['seed']})"
            loss_ax.plot(frame["step"], frame["loss"], marker="." if len(frame) < 20 else None, label=label)
            lr_ax.plot(frame["step"], frame["lr"], label=label)
            points = _val_points(frame)
            if validated and points is not None:
                axes[2][j].plot(points["step"], points["val_miou"], marker=".", label=label)
        if validated:
            axes[2][j].set_ylabel("validation mIoU (%)")
            axes[2][j].set_xlabel("iteration")
            axes[2][j].grid(True, alpha=0.3)
        loss_ax.set_title(f"{dataset}: training loss", fontsize=10)
        loss_ax.set_ylabel("total loss (final + supervised earlier stages)")
        if all((log["frame"]["loss"] > 0).all() for log in present if log["dataset"] == dataset):
            loss_ax.set_yscale("log")
        loss_ax.grid(True, alpha=0.3)
        loss_ax.legend(fontsize=6)
        lr_ax.set_xlabel("iteration")
        lr_ax.set_ylabel("learning rate")
        lr_ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def main(args) -> int:
    from spgnet.config import PROJECT_ROOT

    plan = make_plan(args.profile, data_root=getattr(args, "data_root", None),
                     experiments=getattr(args, "experiments", None))
    results = Path(getattr(args, "results", None) or PROJECT_ROOT / plan.results)
    out = getattr(args, "out", None)
    out = Path(out) if out else PROJECT_ROOT / plan.curves_figure
    logs = find_logs(plan, results)
    missing = [log for log in logs if not log["exists"]]
    path = plot_curves(logs, out, title=f"profile {plan.profile.name}")
    if sys.stdout.isatty():
        print(f"wrote {path} ({len(logs) - len(missing)} of {len(logs)} runs)")
    return 0
