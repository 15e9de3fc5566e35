"""How a table's rows are labelled and told apart: the registry's descriptive columns of the rows
(Method, Backbone, ...) with a "Row" label where those do not tell them apart, and the config
fields in which rows differ (the notes under :mod:`spgnet.analysis.report.tables`' sections)."""

from __future__ import annotations

import dataclasses

from spgnet.config import Experiment


def _descriptive(rows: list[Experiment]) -> tuple[list[str], bool]:
    """The registry's descriptive columns of ``rows`` (Method, Backbone, ...) and whether a "Row"
    label is needed (no such columns, or two rows that they do not tell apart)."""
    descriptive = list(dict.fromkeys(k for exp in rows for k in exp.columns))
    keys = [tuple(str(exp.columns.get(k, "")) for k in descriptive) for exp in rows]
    return descriptive, not descriptive or len(set(keys)) < len(keys)


def _label_cells(exp: Experiment, descriptive: list[str], with_label: bool) -> dict:
    record = {"Row": exp.row} if with_label else {}
    record.update({k: str(exp.columns.get(k, "")) for k in descriptive})
    return record


def _differences(configs: dict) -> list[str]:
    """"field: value (`name`, ...), value (...)" for each field in which the dataclasses
    ``configs`` (name -> config) differ."""
    values = {name: dataclasses.asdict(cfg) for name, cfg in configs.items()}
    fields = list(dict.fromkeys(k for v in values.values() for k in v))
    differences = []
    for key in fields:
        groups: dict[str, list[str]] = {}
        for name, v in values.items():
            groups.setdefault(f"`{v.get(key)}`", []).append(name)
        if len(groups) > 1:
            differences.append(f"{key}: " + ", ".join(
                f"{value} ({', '.join(f'`{n}`' for n in names)})" for value, names in groups.items()))
    return differences
