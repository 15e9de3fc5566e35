"""docs/own-data.md's worked example end to end (issue 24): a folder data set written by
``make-synthetic --kind folder``, the paper's t3-spg-sigmoid and a network of your own
(examples/my_head.py) trained on it under 2 seeds each through Snakemake, in a scratch copy of the
project, with the commands the page gives (smaller data and 3 iterations a run); then the report's
own section, its Welch test, the counts at the data set's size and ``spgnet predict`` with the
data set's palette."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from spgnet.config import PROJECT_ROOT
from tests.helpers_workflow import WORKFLOW_FILES, copy_project

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("own-data")]

DOC = PROJECT_ROOT / "docs/own-data.md"
#: The example's data at smoke size (the page's make-synthetic line with smaller numbers).
SMALL_DATA = {"--num-train": "6", "--num-val": "3", "--num-test": "0", "--height": "64", "--width": "96"}


def doc_commands(section: str) -> list[list[str]]:
    """The commands of the first bash block after the heading ``section`` of docs/own-data.md, each
    as its words (continuation lines joined)."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(section)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)
    return [shlex.split(command) for command in block.replace("\\\n", " ").splitlines() if command.strip()]


def _replace_options(words: list[str], values: dict) -> list[str]:
    words = list(words)
    for flag, value in values.items():
        words[words.index(flag) + 1] = value
    return words


@pytest.fixture(scope="module")
def own_project(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("own-data"), (*WORKFLOW_FILES, "examples"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SPGNET_", "MLFLOW_"))},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SPGNET_ROOT": str(root),
        "PYTHONPATH": str(PROJECT_ROOT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
    }
    make, workflow = doc_commands("## 5. Run it")
    assert make[:2] == ["spgnet", "make-synthetic"] and workflow[:2] == ["snakemake", "--cores"], (make, workflow)
    done = subprocess.run(_replace_options(make, SMALL_DATA), cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    workflow = _replace_options(workflow, {"--cores": "2"})
    workflow += ["set={all: [train.iterations=3, train.checkpoint_every=3]}", "dvc_lock=false"]
    done = subprocess.run(workflow, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-4000:]
    return root, env


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    return text[start: text.index("\n## ", start + 3)]


def test_the_report_shows_your_rows_with_two_seeds_and_the_welch_test(own_project):
    root, _ = own_project
    text = (root / "reports/my-profile/tables.md").read_text()
    rows = _section(text, "Your rows")
    for name in ("spg-roads", "my-head"):
        line = next(line for line in rows.splitlines() if line.startswith(f"| `{name}` |"))
        assert re.search(r"\| 0, 1 \| \d+\.\d\d ± \d+\.\d\d \(n=2\)", line), line
        assert re.search(r"\| \d+\.\d\d at 64 x 96 \|$", line), line  # #FLOPs at the data set's size
    comparison = _section(text, "Your comparisons")
    assert re.search(r"my head vs SPG\(sigmoid\) \(`my-head` vs `spg-roads`\) \|.*\| [+-]\d+\.\d\d \| "
                     r"p = [\d.e-]+ \((Welch's t-test|no seed variance), n = 2, 2\)", comparison), comparison
    # the paper's tables are there too, their rows not run under this profile
    assert "## Table 3." in text and "not run in profile my-profile" in text
    # nothing this profile does not make is listed as missing (the paper's Cityscapes attention
    # figures, Sec. 3.4's memory measurement)
    assert "fig5-general.png" not in text and "memory.json" not in text.split("## Claims")[0]
    assert "All result files and figures were found." in text, text[text.find("## Missing files"):][:600]


def test_the_counts_use_the_data_sets_class_count(own_project):
    root, _ = own_project
    rows = {r["name"]: r for r in json.loads((root / "results/my-profile/profile.json").read_text())["experiments"]}
    assert rows["spg-roads"]["input"] == [64, 96] and rows["my-head"]["input"] == [64, 96]
    paper = rows["t3-spg-sigmoid"]
    assert paper["input"] == [1025, 2049]
    # 2 x (3x3 head stays; two 1x1 classifiers of 19 -> 5 classes): fewer parameters, same network otherwise
    assert 0 < paper["params"] - rows["spg-roads"]["params"] < 10_000


def test_each_run_trained_its_seeds_on_the_folder_data(own_project):
    root, _ = own_project
    for name in ("spg-roads", "my-head"):
        for seed in (0, 1):
            metrics = json.loads((root / f"results/my-profile/runs/{name}/seed{seed}/eval/{name}.json").read_text())
            assert list(metrics["per_class"]) == ["background", "road", "car", "tree", "sky"]
    summary = json.loads((root / "results/my-profile/data/my_roads/summary.json").read_text())
    assert summary["classes"] == ["background", "road", "car", "tree", "sky"]


def test_predict_reads_the_profile_and_rows_from_the_checkpoint_and_paints_the_data_sets_palette(own_project,
                                                                                                  tmp_path):
    root, env = own_project
    description = yaml.safe_load((root / "data/my_roads/dataset.yaml").read_text())
    picture = sorted((root / "data/my_roads" / description["splits"]["val"]["images"]).rglob("*.jpg"))[0]
    done = subprocess.run(["spgnet", "predict", "my-head", "--checkpoint",
                           "results/my-profile/runs/my-head/seed0/checkpoint.pt", "--input", str(picture),
                           "--out", str(tmp_path)], cwd=root, env={**env, "SPGNET_TRACKING": "0"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from PIL import Image

    coloured = sorted(tmp_path.rglob("*_color.png"))
    assert coloured, list(tmp_path.rglob("*"))
    colours = {tuple(c) for c in np.asarray(Image.open(coloured[0]).convert("RGB")).reshape(-1, 3)}
    assert colours <= {tuple(c) for c in description["palette"]}, colours


def test_evaluate_and_attention_run_on_the_folder_data_with_its_classes(own_project, tmp_path):
    """The other verbs the page lists: ``evaluate`` gives the training job's own score again, and
    ``attention`` draws the data set's first classes (the paper's figures are Cityscapes')."""
    root, env = own_project
    env = {**env, "SPGNET_TRACKING": "0"}
    files = ["--profile", "examples/my-profile.yaml", "--experiments", "examples/my-experiments.yaml"]
    checkpoint = "results/my-profile/runs/spg-roads/seed0/checkpoint.pt"
    done = subprocess.run(["spgnet", "evaluate", "spg-roads", *files, "--checkpoint", checkpoint,
                           "--out", str(tmp_path / "eval.json")], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    again = json.loads((tmp_path / "eval.json").read_text())
    written = json.loads((root / "results/my-profile/runs/spg-roads/seed0/eval/spg-roads.json").read_text())
    assert again["miou"] == pytest.approx(written["miou"], abs=1e-6)
    done = subprocess.run(["spgnet", "attention", "spg-roads", *files, "--checkpoint", checkpoint,
                           "--out", str(tmp_path / "figures")], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "figures/attention-my_roads.png").stat().st_size > 0
    sidecar = json.loads((tmp_path / "figures/attention.json").read_text())
    assert list(sidecar["top_channels"]) == ["background", "road", "car", "tree"]
