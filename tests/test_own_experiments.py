"""Rows of your own (issue 24): an experiments file and a profile file outside ``params/``, a
network built by an import path, a folder data set's class count; each bad input one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from spgnet.config import ConfigError, build_config, get_experiment, load_profile, load_registry, own_experiments
from spgnet.config import PROJECT_ROOT
from spgnet.data.synthetic.make import main as make_synthetic_main  # noqa: F401 - the generator exists

EXAMPLE_EXPERIMENTS = PROJECT_ROOT / "examples/my-experiments.yaml"


@pytest.fixture(scope="module")
def folder_set(tmp_path_factory) -> Path:
    """A 5-class folder data set (``spgnet make-synthetic --kind folder``)."""
    root = tmp_path_factory.mktemp("own") / "roads"
    done = subprocess.run([sys.executable, "-m", "spgnet", "make-synthetic", "--kind", "folder", "--out", str(root),
                           "--num-train", "4", "--num-val", "2", "--num-test", "0", "--height", "48", "--width", "80"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return root


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture()
def own_files(tmp_path, folder_set):
    """(profile file, experiments file) of the worked example, pointed at ``folder_set``."""
    profile = _write(tmp_path / "my-profile.yaml", f"""\
        base: smoke
        datasets:
          my_roads: {{kind: folder, root: {folder_set}}}
        experiments: [spg-roads, my-head]
        """)
    experiments = tmp_path / "my-experiments.yaml"
    experiments.write_text(EXAMPLE_EXPERIMENTS.read_text(encoding="utf-8"), encoding="utf-8")
    return profile, experiments


def test_the_example_rows_resolve_with_the_data_sets_class_count(own_files):
    profile, experiments = own_files
    cfg = build_config("my-head", str(profile), experiments=str(experiments))
    assert cfg.model.num_classes == 5 and cfg.model.builder == "examples.my_head:build"
    assert cfg.dataset_kind == "folder" and cfg.profile == str(profile)
    assert cfg.experiments_file == str(experiments)
    base = build_config("spg-roads", str(profile), experiments=str(experiments))
    paper = get_experiment("t3-spg-sigmoid")
    # the paper row's network and recipe, less its numbers, on 5 classes
    assert base.model.backbones == paper.model.backbones and base.model.link == paper.model.link
    assert base.paper.miou is None and base.table == "own"
    assert load_profile(str(profile), experiments=str(experiments)).name == "my-profile"


def test_the_plan_runs_the_files_rows_under_its_seeds_and_passes_both_files_on(own_files):
    from spgnet.workflow import commands
    from spgnet.workflow.plan import make_plan

    profile, experiments = own_files
    plan = make_plan(str(profile), experiments=str(experiments))
    assert plan.experiments == ("spg-roads", "my-head")
    assert plan.seeds_of("my-head") == (0, 1) and plan.results == "results/my-profile"
    line = commands.train(plan, "my-head", 1)
    assert line[:6] == ["train", "my-head", "--profile", str(profile), "--experiments", str(experiments)]
    assert commands.prepare_data(plan.datasets()["my_roads"].kind, "r", "o")[:3] == ["prepare-data", "--dataset", "folder"]


def test_the_own_rows_are_counted_at_the_data_sets_image_size(own_files):
    from spgnet.analysis.profile import profile_all

    profile, experiments = own_files
    rows = {r["name"]: r for r in profile_all(["spg-roads", "t3-spg-sigmoid"], experiments=str(experiments),
                                               profile=str(profile))}
    assert rows["spg-roads"]["input"] == [48, 80]  # make-synthetic's dataset.yaml names its image_size
    assert rows["t3-spg-sigmoid"]["input"] == [1025, 2049]
    # 5 classes instead of 19: the classifiers are smaller, nothing else
    assert rows["spg-roads"]["params"] < rows["t3-spg-sigmoid"]["params"]
    assert rows["spg-roads"]["macs"] < rows["t3-spg-sigmoid"]["macs"] / 100


def test_without_an_image_size_the_first_training_image_gives_it(own_files, folder_set, tmp_path):
    import shutil

    from PIL import Image

    from spgnet.analysis.profile import data_input_size

    profile, experiments = own_files
    copy = shutil.copytree(folder_set, tmp_path / "copy")
    described = yaml.safe_load((copy / "dataset.yaml").read_text())
    del described["image_size"]
    (copy / "dataset.yaml").write_text(yaml.safe_dump(described))
    profile.write_text(profile.read_text().replace(str(folder_set), str(copy)))
    first = sorted((copy / described["splits"]["train"]["images"]).rglob("*" + described["image_suffix"]))[0]
    width, height = Image.open(first).size
    cfg = build_config("spg-roads", str(profile), experiments=str(experiments))
    assert data_input_size(cfg) == (height, width)


OWN_FILE_ERRORS = [
    ("experiments: {mine: {base: t3-spg-sigmoid, trian: {lr: 0.1}}}",
     "experiment 'mine': unknown key 'trian'"),
    ("experiments: {t3-1stage: {base: t3-spg-sigmoid}}",
     "experiment 't3-1stage': the name of a paper row (choose another name)"),
    ("experiments: {mine: {base: t3-nope}}", "experiment 'mine' has unknown base 't3-nope'"),
    ("experiments: {mine: {base: t3-spg-sigmoid}}\nseed: [0]", "unknown key 'seed'"),
    ("experiments: {mine: {base: t3-spg-sigmoid}}\ncomparisons: [{a: mine, b: voc-spgnet}]",
     "key 'comparisons' (item 0): 'mine' is trained on 'cityscapes' and 'voc-spgnet' on 'voc'; a comparison "
     "needs the same data"),
    ("experiments: {mine: {base: t3-spg-sigmoid}}\ncomparisons: [{a: mine, b: yours}]",
     "key 'comparisons' (item 0): key 'b': unknown experiment 'yours'"),
    ("experiments: {mine: {base: t3-spg-sigmoid, model: {builder: not a path}}}",
     "experiment 'mine': key 'model.builder': expected an import path 'package.module:function', got 'not a path'"),
]


@pytest.mark.parametrize("text, message", OWN_FILE_ERRORS, ids=[m for _, m in OWN_FILE_ERRORS])
def test_a_bad_experiments_file_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    path = _write(tmp_path / "mine.yaml", text)
    with pytest.raises(ConfigError) as err:
        own_experiments(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_the_paper_registry_is_unchanged_by_an_experiments_file(own_files):
    _, experiments = own_files
    paper = load_registry()
    both = load_registry(extra=experiments)
    assert list(both)[: len(paper)] == list(paper) and set(both) - set(paper) == {"spg-roads", "my-head"}
    assert not any(exp.own for exp in paper.values()) and both["my-head"].own


def test_a_profile_file_may_not_take_a_built_in_profiles_name(tmp_path):
    path = _write(tmp_path / "smoke.yaml", "base: mini\n")
    with pytest.raises(ConfigError, match=r"smoke.yaml: a profile file may not share the name 'smoke'"):
        load_profile(str(path))
    with pytest.raises(ConfigError, match=r"nothere.yaml: profile file not found"):
        load_profile(str(tmp_path / "nothere.yaml"))


def test_a_folder_data_sets_class_count_wins_and_a_contrary_setting_is_one_line(own_files):
    profile, experiments = own_files
    with pytest.raises(ConfigError, match=r"key 'model.num_classes': data set 'my_roads' has 5 classes .*got 19"):
        build_config("spg-roads", str(profile), experiments=str(experiments), overrides=["model.num_classes=19"])


def _spgnet(*args, cwd, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(cwd)]), "SPGNET_TRACKING": "0",
           **(env or {})}
    return subprocess.run([sys.executable, "-m", "spgnet", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


BUILDER_ERRORS = [
    ("examples_nope.head:build", None, "module 'examples_nope.head' does not import (ModuleNotFoundError: "),
    ("userhead:nothing", "import torch\n", "module 'userhead' ("),
    ("userhead:build", "def build(cfg):\n    return 3\n",
     "experiment 'mine': key 'model.builder': 'userhead:build' returned a int, not a torch.nn.Module"),
    ("userhead:build", "raise RuntimeError('broken on import')\n",
     "module 'userhead' does not import (RuntimeError: broken on import)"),
]


@pytest.mark.parametrize("builder, module, message", BUILDER_ERRORS, ids=[m for _, _, m in BUILDER_ERRORS])
def test_a_builder_that_does_not_import_or_build_a_module_stops_train_in_one_line(tmp_path, own_files, builder,
                                                                                   module, message):
    profile, _ = own_files
    if module is not None:
        (tmp_path / "userhead.py").write_text(module, encoding="utf-8")
    experiments = tmp_path / "bad.yaml"
    experiments.write_text(yaml.safe_dump({"experiments": {"mine": {"base": "t3-spg-sigmoid",
                                           "train": {"dataset": "my_roads"}, "model": {"builder": builder}}}}))
    profile.write_text(profile.read_text().replace("[spg-roads, my-head]", "[mine]"))
    out = tmp_path / "run"
    done = _spgnet("train", "mine", "--profile", str(profile), "--experiments", str(experiments), "--out", str(out),
                   "--iterations", "1", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and f"{experiments}: experiment 'mine'" in lines[0], done.stderr
    assert not (out / "checkpoint.pt").exists()


def test_an_own_network_that_returns_plain_logits_trains_and_evaluates(tmp_path, own_files):
    """examples/my_head.py returns a tensor: the pipeline resizes it and trains, evaluates and
    records the row like its own, with the data set's class names."""
    profile, experiments = own_files
    out = tmp_path / "my-head"
    done = _spgnet("train", "my-head", "--profile", str(profile), "--experiments", str(experiments), "--out", str(out),
                   "--iterations", "2", "--evaluate-out", str(out / "eval.json"), cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "eval.json").read_text())
    assert list(metrics["per_class"]) == ["background", "road", "car", "tree", "sky"]
    assert 0 <= metrics["miou"] <= 100


WORKFLOW_BUILDER_ERRORS = [
    ("nowhere.at_all:build", None,
     "module 'nowhere.at_all' does not import (ModuleNotFoundError: No module named 'nowhere')"),
    ("userhead:build", "def build(cfg):\n    return 'a network'\n",
     "'userhead:build' returned a str, not a torch.nn.Module"),
]


@pytest.mark.parametrize("builder, module, message", WORKFLOW_BUILDER_ERRORS, ids=["import", "not-a-module"])
def test_the_workflow_stops_at_its_start_on_a_builder_that_does_not_build(tmp_path, own_files, builder, module,
                                                                           message):
    """Snakemake builds the plan (which resolves every row) and then each row's network on the meta
    device: a bad builder is one line naming the file and the row, before any job."""
    from tests.helpers_workflow import copy_project

    profile, _ = own_files
    root = copy_project(tmp_path / "project")
    if module is not None:
        (root / "userhead.py").write_text(module, encoding="utf-8")
    experiments = tmp_path / "bad.yaml"
    experiments.write_text(yaml.safe_dump({"experiments": {"mine": {
        "base": "t3-spg-sigmoid", "train": {"dataset": "my_roads"}, "model": {"builder": builder}}}}))
    profile.write_text(profile.read_text().replace("[spg-roads, my-head]", "[mine]"))
    env = {**os.environ, "SPGNET_ROOT": str(root), "PYTHONPATH": str(PROJECT_ROOT), "SPGNET_TRACKING": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["snakemake", "-n", "--cores", "1", "reproduce_all", "--config", f"profile={profile}",
                           f"experiments={experiments}"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "config error" in line]
    assert errors == [f"spgnet workflow: config error: {experiments}: experiment 'mine': key 'model.builder': "
                      f"{message}"], done.stderr
    assert not (root / "results").exists()


def test_every_verb_refuses_a_comparison_of_two_data_sets(tmp_path, own_files):
    """The file's comparisons are checked whenever it is read, not only by the workflow."""
    profile, _ = own_files
    experiments = _write(tmp_path / "mine.yaml", """\
        experiments:
          mine: {base: t3-spg-sigmoid, train: {dataset: my_roads}}
        comparisons: [{a: mine, b: t3-spg-sigmoid}]
        """)
    with pytest.raises(ConfigError, match=r"'mine' is trained on 'my_roads' and 't3-spg-sigmoid' on 'cityscapes'"):
        build_config("mine", str(profile), experiments=str(experiments))


def test_a_profile_listing_a_row_no_file_has_names_the_profile(own_files):
    profile, experiments = own_files
    with pytest.raises(ConfigError) as err:
        load_profile(str(profile))  # without the experiments file
    assert str(err.value).startswith(f"{profile}: key 'experiments': unknown experiment 'spg-roads' (rows of your own "
                                     f"need their file: --experiments FILE"), str(err.value)


def test_a_misspelt_required_key_is_named_as_the_unknown_key_it_is(tmp_path):
    from spgnet.config import load_description

    _write(tmp_path / "dataset.yaml", """\
        class: [road, sky]
        splits:
          train: {images: i, labels: l}
          val: {images: i, labels: l}
        """)
    with pytest.raises(ConfigError) as err:
        load_description(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'dataset.yaml'}: unknown key 'class' (valid keys: classes,")
