"""Cell texts of the report's tables: decimals as the paper prints them, mean ± std over seeds,
where an inference time was measured."""

from __future__ import annotations

import re
from dataclasses import dataclass, field



def _decimals(values) -> int:
    """Digits after the point of the paper's numbers in one column (80.10 is stored as 80.1, so
    the column's maximum is used: Table 8 prints two)."""
    digits = [len(repr(float(v)).split(".")[1].rstrip("0")) for v in values if v is not None]
    return max([1, *digits])


def _paper_flops(paper) -> str:
    if paper.flops_note:  # "8 (tiles) x 30.6B" -> "8 x 30.6"
        return re.sub(r"\s*\(tiles\)", "", paper.flops_note).strip().rstrip("B").strip()
    return "-" if paper.flops_g is None else f"{paper.flops_g:.1f}"


def _mean_std(values: list[float], decimals: int) -> str:
    import pandas as pd

    series = pd.Series(values, dtype="float64")
    if len(series) == 1:
        return f"{series.iloc[0]:.{decimals}f}"
    return f"{series.mean():.{decimals}f} ± {series.std(ddof=1):.{decimals}f} (n={len(series)})"


def _seeds_cell(values: list[float], missing: list[str], decimals: int) -> str:
    """:func:`_mean_std` of the seeds that have a value, saying which part of them when some eval
    JSONs are missing."""
    text = _mean_std(values, decimals)
    if missing:
        text += f" ({len(values)} of {len(values) + len(missing)} seeds; {missing[0]})"
    return text


def _pixels(size) -> str:
    return " x ".join(str(v) for v in size)


def _timing_context(data: dict) -> str | None:
    """Where an eval JSON's ``seconds_per_image`` was measured ("cpu (name), 1 thread, 256 x 512
    images"), or None when the JSON predates these keys."""
    if data.get("device") is None:
        return None
    device = data["device"] + (f" ({data['device_name']})" if data.get("device_name") else "")
    threads = data.get("threads")
    parts = [device]
    if threads is not None:
        parts.append(f"{threads} CPU thread{'s' if threads != 1 else ''}")
    low, high = data.get("image_size_min"), data.get("image_size_max")
    if low and high:
        size = _pixels(low) if low == high else f"{_pixels(low)} to {_pixels(high)}"
        parts.append(f"{size} images")
    return ", ".join(parts)


@dataclass
class Measured:
    """What the eval JSONs of one experiment hold, over the plan's seeds."""

    status: str  # "ok", "cited", "not-run", "missing", "no-labels"
    text: str = ""  # the cell when status != "ok"
    miou: list = field(default_factory=list)
    per_class: dict = field(default_factory=dict)  # class -> [values]
    missing: list = field(default_factory=list)
    short: str = ""  # the per-class cells' short form of ``text``
    seconds: list = field(default_factory=list)  # seconds_per_image of every JSON read, labelled or not
    timing: list = field(default_factory=list)  # _timing_context of each of those JSONs
