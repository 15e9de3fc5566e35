"""#Params and #FLOPs at paper scale against the paper's Tables 3, 5, 6, 7, 9, 11 and 12."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spgnet.analysis.profile import profile_experiment, tile_count
from spgnet.config import load_registry

COUNTED_TABLES = {"3", "5", "6", "7", "9", "11", "12"}
ROWS = [
    e.name
    for e in load_registry().values()
    if e.table in COUNTED_TABLES and e.reproducible and e.paper.params_m is not None
]


def _tolerance(name: str) -> float:
    return 0.01 if name == "t11-fpn" else 0.005  # the FPN-style decoder is inferred less tightly


def test_every_counted_row_is_registered():
    assert len(ROWS) == 32  # Tables 3 (7), 5 (3), 6 (4), 7 (7), 9 (4 + Sec. 4.4), 11 (2), 12 (4)


@pytest.mark.parametrize("name", ROWS)
def test_counts_match_the_paper(name):
    row = profile_experiment(load_registry()[name])
    assert abs(row["params_rel_diff"]) < _tolerance(name), row
    assert abs(row["flops_rel_diff"]) < _tolerance(name), row


def test_spg_costs_about_one_percent_more_flops_than_the_plain_baseline():
    """Sec. 3.4: SPG adds ~1% FLOPs (215.5B -> 218.0B) and ~19K parameters."""
    registry = load_registry()
    plain, spg = profile_experiment(registry["t3-plain"]), profile_experiment(registry["t3-spg-sigmoid"])
    assert 0.009 < spg["macs"] / plain["macs"] - 1 < 0.013
    assert 15_000 < spg["params"] - plain["params"] < 25_000


def test_tiled_is_counted_per_tile_and_for_eight_tiles():
    row = profile_experiment(load_registry()["t12-tiled"])
    assert row["tiles"] == 8 and row["input"] == [769, 769]
    assert row["flops_g_total"] == pytest.approx(8 * row["flops_g"])
    assert tile_count((1024, 2048), 769) == 8


def test_profile_cli_prints_json_with_paper_values():
    out = subprocess.run(
        [sys.executable, "-m", "spgnet", "profile", "t3-1stage", "t12-tiled", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["t3-1stage", "t12-tiled"]
    assert rows[0]["paper_params_m"] == 11.7 and rows[0]["paper_flops_g"] == 107.6
