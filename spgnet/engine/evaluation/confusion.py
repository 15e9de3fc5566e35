"""The confusion matrix of an evaluation, as JSON and as a figure, beside its metrics file.

For ``spgnet evaluate ... --out DIR/NAME.json`` (:func:`confusion_paths`):

``DIR/NAME.confusion.json``  ``{"rows": [C class names] (ground truth), "columns": [C class names,
                             "void"] (prediction; "void" = any value outside the classes),
                             "matrix": [C][C + 1] pixel counts}`` (:mod:`spgnet.engine.evaluation.metrics`
                             explains the void column); ignored ground-truth pixels are not counted.
``DIR/NAME.confusion.png``   the matrix with every row divided by its sum (the share of a class's
                             pixels predicted as each class, in percent; rows of classes absent
                             from the ground truth stay blank), class names on both axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from spgnet.atomic import atomic_path, write_json

VOID = "void"


def confusion_paths(metrics_file: str | Path) -> tuple[Path, Path]:
    """``(NAME.confusion.json, NAME.confusion.png)`` beside the metrics file ``NAME.json``."""
    path = Path(metrics_file)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.confusion.json"), path.with_name(f"{stem}.confusion.png")


def row_normalised(matrix) -> np.ndarray:
    """``float64 [C, C + 1]``: each row divided by its sum (NaN for an empty row)."""
    m = np.asarray(matrix, dtype=np.float64)
    sums = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums > 0, m / np.where(sums > 0, sums, 1.0), np.nan)


def write_confusion_json(path: str | Path, matrix, class_names: Sequence[str]) -> Path:
    """Write the ``[C, C + 1]`` count matrix with its row and column names (atomically)."""
    m = np.asarray(matrix, dtype=np.int64)
    names = [str(n) for n in class_names]
    if m.shape != (len(names), len(names) + 1):
        raise ValueError(f"confusion matrix is {list(m.shape)}, expected [{len(names)}, {len(names) + 1}]")
    write_json(path, {"rows": names, "columns": names + [VOID], "matrix": m.tolist()}, allow_nan=False)
    return Path(path)


def draw_confusion(path: str | Path, matrix, class_names: Sequence[str], title: str = "") -> Path:
    """Draw the row-normalised matrix as a PNG at ``path`` (matplotlib, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share = 100.0 * row_normalised(matrix)
    names = [str(n) for n in class_names]
    c = len(names)
    side = max(4.0, 0.42 * c + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0.0, vmax=100.0)
    ax.set_xticks(range(c + 1), names + [VOID], rotation=90, fontsize=8)
    ax.set_yticks(range(c), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    if title:
        ax.set_title(title, fontsize=9)
    if c <= 25:
        for row in range(c):
            for col in range(c + 1):
                value = share[row, col]
                if np.isfinite(value) and value >= 0.5:
                    ax.text(col, row, f"{value:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if value > 50 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="% of the row's pixels")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
