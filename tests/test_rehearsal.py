"""The CPU rehearsal of the paper path (issue 20; README, "CPU rehearsal"): the rehearsal profile is
the paper profile plus the overrides its file lists (``base: paper``), nothing else; its dry run
trains with 2 torchrun processes on the CPU; and, marked ``rehearsal`` (``make test`` runs it alone,
after the parallel tests), CI's slice of the rehearsal itself at the paper's sizes
(``scripts/rehearse.sh --slice``)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spgnet import config
from spgnet.config import PROJECT_ROOT, ConfigError, ResourceSpec, load_profile, resolve
from spgnet.workflow.gpu_slots import launcher
from spgnet.workflow.plan import make_plan
from spgnet.workflow.support import resources_for
from tests.helpers_workflow import WORKFLOW_FILES, copy_project

BIN = Path(sys.executable).parent
REHEARSAL_FILE = config.PROFILES_DIR / "rehearsal.yaml"
DATA_ROOT = "/data/sets"


def _leaves(value, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists, tuples and None are leaves."""
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def _differing(a: dict, b: dict) -> set[str]:
    la, lb = _leaves(a), _leaves(b)
    return {key for key in la.keys() | lb.keys() if la.get(key) != lb.get(key)}


def _related(path: str, key: str) -> bool:
    return path == key or path.startswith(key + ".") or key.startswith(path + ".")


def _override_keys() -> set[str]:
    """The rehearsal file's own settings, as dotted paths (``train.iterations``, ...)."""
    raw = yaml.safe_load(REHEARSAL_FILE.read_text())
    assert raw.pop("base") == "paper"
    return set(_leaves(raw))


# --------------------------------------------------------------------------------------------
# The profile: paper + the listed overrides
# --------------------------------------------------------------------------------------------


def test_the_rehearsal_profile_is_the_paper_profile_and_its_listed_overrides():
    overrides = _override_keys() - {"description"}
    paper = dataclasses.asdict(load_profile("paper", data_root=DATA_ROOT))
    rehearsal = dataclasses.asdict(load_profile("rehearsal", data_root=DATA_ROOT))
    differing = _differing(paper, rehearsal) - {"name", "description"}
    assert {p for p in differing if not any(_related(p, k) for k in overrides)} == set()  # nothing else differs
    assert {k for k in overrides if not any(_related(p, k) for p in differing)} == set()  # no override is a no-op
    # what the rehearsal keeps of the paper's path
    assert rehearsal["model"] == paper["model"] == {"norm": "inplace_abn_sync"}
    assert rehearsal["tracking"] == paper["tracking"] and rehearsal["seeds"] == paper["seeds"]
    assert rehearsal["evaluate_in_train_job"] is paper["evaluate_in_train_job"] is False
    assert {d: s["root"] for d, s in rehearsal["datasets"].items()} == {d: s["root"] for d, s in paper["datasets"].items()}


def test_every_rehearsed_experiment_resolves_as_under_the_paper_profile_but_for_the_overrides():
    """Per experiment, the resolved run (model, schedule, evaluation, data) differs from the paper
    profile's only in the rehearsal file's train keys, the synthetic data spec and the weights folder."""
    paper, rehearsal = load_profile("paper", data_root=DATA_ROOT), load_profile("rehearsal", data_root=DATA_ROOT)
    train_keys = {k for k in _override_keys() if k.startswith("train.")}
    allowed = {"profile", "data.synthetic", "model.pretrained", *train_keys}
    seen = set()
    for name in rehearsal.experiments:
        a, b = resolve(name, paper).to_dict(), resolve(name, rehearsal).to_dict()
        differing = _differing(a, b)
        assert {p for p in differing if not any(_related(p, k) for k in allowed)} == set(), name
        seen |= {k for k in train_keys if any(_related(p, k) for p in differing)}
        cfg = resolve(name, rehearsal)
        assert (cfg.train.batch_size, cfg.train.device, cfg.model.norm) == (2, "cpu", "inplace_abn_sync")
        assert cfg.train.crop == resolve(name, paper).train.crop in (769, 513)  # the paper's crops
        assert cfg.data.synthetic and cfg.model.pretrained
    assert seen == train_keys  # every train override changes some run
    splits = {name: resolve(name, rehearsal).train.split for name in rehearsal.experiments}
    assert splits["voc-spgnet"] == "trainaug" and splits["t1-spgnet"] == "trainval"


def test_one_crop_per_process():
    rehearsal = load_profile("rehearsal", data_root=DATA_ROOT)
    spec = resources_for(rehearsal.resources, "train")
    assert (spec["gpu"], spec["processes"], spec["threads"]) == (0, 2, 2)
    assert {resolve(name, rehearsal).train.batch_size for name in rehearsal.experiments} == {spec["processes"]}


# --------------------------------------------------------------------------------------------
# base: and resources.train.processes
# --------------------------------------------------------------------------------------------


def test_base_merges_the_named_profile_under_the_file_mapping_by_mapping(profiles):
    (profiles / "child.yaml").write_text("base: smoke\ntrain: {iterations: 7}\nresources: {train: {threads: 2}}\n"
                                         "weights_root: null\n")
    child, smoke = load_profile("child"), load_profile("smoke")
    assert child.name == "child" and child.description == smoke.description
    assert child.train == {**smoke.train, "iterations": 7}
    assert child.resources["train"] == dataclasses.replace(smoke.resources["train"], threads=2)
    assert child.datasets == smoke.datasets and child.experiments == smoke.experiments
    (profiles / "grandchild.yaml").write_text("base: child\ntrain: {crop: 33}\n")
    assert load_profile("grandchild").train == {**smoke.train, "iterations": 7, "crop": 33}


@pytest.mark.parametrize("text, message", [
    ("base: nosuch\n", "child.yaml: key 'base': unknown profile 'nosuch' (valid profiles: "),
    ("base: child\n", "child.yaml: key 'base': profile 'child' has a cyclic 'base' chain"),
    ("base: [paper]\n", "child.yaml: key 'base': expected the name of a profile, got ['paper']"),
    ("base: smoke\nbasis: paper\n", "child.yaml: unknown key 'basis' (valid keys: base, "),
    ("base: smoke\ntrain: {iterations: -1}\n", "key 'train.iterations': input should be greater than or equal to 1"),
])
def test_a_bad_base_is_one_line(profiles, text, message):
    (profiles / "child.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_profile("child")
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("resources, message", [
    ("{evaluate: {processes: 2}}", "key 'resources.evaluate.processes': only train jobs run several processes, got 2"),
    ("{train: {gpus: 8, processes: 2}}", "key 'resources.train.processes': a GPU job runs one process per GPU (gpus: 8)"),
    ("{train: {processes: 0}}", "key 'resources.train.processes': input should be greater than or equal to 1"),
])
def test_processes_is_for_cpu_training_jobs(profiles, resources, message):
    (profiles / "child.yaml").write_text(f"base: smoke\nresources: {resources}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_profile("child")


def test_the_launcher_of_a_cpu_job_of_several_processes_is_torchrun_without_gpu_slots():
    assert launcher(0, processes=2) == "torchrun --standalone --nproc_per_node 2 -m spgnet"
    assert launcher(0, processes=1) == launcher(0) == "spgnet"
    assert launcher(8, processes=8).startswith("python -m spgnet.workflow.gpu_slots --gpus {resources.gpu} -- torchrun ")
    assert resources_for({"train": ResourceSpec(gpus=0, processes=2, threads=2)}, "train")["processes"] == 2
    assert resources_for({"train": ResourceSpec(gpus=4)}, "train")["processes"] == 4
    assert resources_for({}, "train")["processes"] == 1


# --------------------------------------------------------------------------------------------
# Dry runs
# --------------------------------------------------------------------------------------------


def _dry_run(*args: str, home: Path | None = None) -> list[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **({"HOME": str(home)} if home else {})}
    run = subprocess.run(["snakemake", "-n", "-p", "--forceall", *args], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:] + run.stdout[-2000:]
    return re.findall(r"^Shell command: (.*)$", run.stdout, re.M)


def _weights(tmp_path: Path, profile: str, data_root: Path) -> Path:
    from spgnet.models.weights import plan_backbones, weights_file_name

    folder = tmp_path / "imagenet"
    folder.mkdir(exist_ok=True)
    for backbone in plan_backbones(make_plan(profile, data_root=str(data_root))):
        (folder / weights_file_name(backbone)).touch()
    return folder


def test_the_rehearsal_dry_run_trains_with_two_torchrun_processes_of_one_thread(tmp_path):
    data = tmp_path / "data"
    lines = _dry_run("reproduce_spgnet", "--cores", "2", "--config", "profile=rehearsal", f"data_root={data}",
                     f"weights_root={_weights(tmp_path, 'rehearsal', data)}")
    plan = make_plan("rehearsal", data_root=str(data))
    train = [line for line in lines if " train " in line]
    assert len(train) == len(plan.train_runs()) == 4
    launch = "OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 -m spgnet train "
    assert all(line.startswith(launch) and "--profile rehearsal --data-root " in line for line in train), train[:2]
    evaluate = [line for line in lines if " evaluate " in line]
    assert len(evaluate) == 5 and all(line.startswith("OMP_NUM_THREADS=2 spgnet evaluate ") for line in evaluate)
    assert not any("gpu_slots" in line for line in lines)
    generate = [line for line in lines if "make-synthetic" in line]
    assert any("--height 1024 --width 2048" in line for line in generate)
    assert sum("--height 375 --width 500" in line for line in generate) == 2


def test_every_paper_job_that_reads_the_profile_gets_the_data_root(tmp_path):
    """The paper profile's dataset roots are ${data_root}/...: a verb given --profile paper without
    --data-root stops (the curves job did, found by the rehearsal)."""
    data = tmp_path / "data"
    for folder in ("cityscapes", "VOCdevkit/VOC2012", "person_part"):
        (data / folder).mkdir(parents=True)
    lines = _dry_run("reproduce_all", "--cores", "8", "--resources", "gpu=8", "--config", "profile=paper",
                     f"data_root={data}", f"weights_root={_weights(tmp_path, 'paper', data)}")
    with_profile = [line for line in lines if "--profile paper" in line]
    assert {"train", "evaluate", "attention", "curves", "report"} <= {
        re.search(r"spgnet (\w+) ", line).group(1) for line in with_profile}
    assert [line for line in with_profile if f"--data-root {data}" not in line] == []


# --------------------------------------------------------------------------------------------
# CI's slice of the rehearsal itself (serial: `make test` runs it after the parallel tests)
# --------------------------------------------------------------------------------------------


COPIED = (*WORKFLOW_FILES, "scripts")


def _finite_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "train_log.csv") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses and all(math.isfinite(v) for v in losses), losses
    return losses


@pytest.mark.rehearsal
@pytest.mark.skipif(bool(os.environ.get("PYTEST_XDIST_WORKER")),
                    reason="runs alone (make test's serial phase, -m rehearsal): it needs the machine's memory")
def test_the_rehearsal_slice_at_paper_sizes(tmp_path):
    root = copy_project(tmp_path / "project", COPIED)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SPGNET_TRACKING", "MLFLOW_"))},
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "SPGNET_ROOT": str(root)}
    run = subprocess.run(["bash", "scripts/rehearse.sh", "--slice"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-5000:]
    print(run.stdout + run.stderr[-3000:])
    results = root / "results/rehearsal"

    # VOC: trainaug at crop 513, 2 processes of one crop each, InPlaceABNSync, killed and resumed
    voc = results / "runs/voc-spgnet/seed0"
    log = (results / "logs/train_voc-spgnet_seed0.log").read_text()
    assert "spgnet train: resuming from iteration 1 (results/rehearsal/runs/voc-spgnet/seed0/latest.pt)" in log
    assert "rehearse: killed voc-spgnet at iteration 1" in run.stderr
    for run_dir, dataset, split, crop in ((voc, "voc", "trainaug", 513),
                                          (results / "runs/t9-r50-d256/seed0", "cityscapes", "train", 769)):
        metrics = json.loads((run_dir / "train_metrics.json").read_text())
        assert metrics["schedule"] == {"dataset": dataset, "split": split, "crop": crop, "batch_size": 2,
                                       "iterations": 2, "device": "cpu"}, metrics["schedule"]
        assert (metrics["world_size"], metrics["norm_layer"], metrics["iterations"]) == (2, "InPlaceABNSync", 2)
        assert metrics["precision"] == "float32" and metrics["skipped_steps"] == 0 and metrics["data"]["synthetic"]
        assert math.isfinite(metrics["final_loss"]) and len(_finite_losses(run_dir)) == 2
        conversion = metrics["pretrained"]["files"]["resnet50"]["norm_conversion"]
        assert conversion["norm_layers"] > 0 and conversion["channels"] > 0 and conversion["sign_to_conv"] > 0
        assert metrics["pretrained"]["files"]["resnet50"]["published_hash"] is False  # the fabricated file
        assert json.loads((run_dir / "untrained.json").read_text())["kind"] == "untrained"
    assert json.loads((voc / "train_metrics.json").read_text())["segments"] == [0, 1]

    # t9-r50-d256's AP evaluation of one 1024 x 2048 image
    evaluation = json.loads((results / "runs/t9-r50-d256/seed0/eval/t9-r50-d256.json").read_text())
    assert evaluation["image_size_min"] == evaluation["image_size_max"] == [1024, 2048]
    assert (evaluation["num_images"], evaluation["strategy"], evaluation["split"]) == (1, "AP", "val")
    assert math.isfinite(evaluation["miou"])

    # the paper report of the slice's results marks its rows as not the paper's schedule
    from spgnet.analysis.report.provenance import MARK

    report = (root / "reports/rehearsal/tables.md").read_text()
    assert "spgnet report --profile paper" in report and MARK in report
    assert (results / "rehearse-summary-slice.txt").read_text().startswith("slice rehearsal: ")
