"""Settings are typed where they are read (issue 12.6): every profile and registry value against
its declared type at load, one line naming file, key and value, exit 2 before any work starts;
the workflow's --config as people type it."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

import spgnet.config as config
from spgnet.config import types as config_types, workflow_config
from spgnet.cli import main as cli
from spgnet.config import (PROJECT_ROOT, ConfigError, EvalConfig, ModelConfig, TrainConfig, available_profiles,
                           load_profile, load_registry, resolve)
from spgnet.workflow.support import check_config

SCHEMA = PROJECT_ROOT / workflow_config.WORKFLOW_SCHEMA_FILE


# ------------------------------------------------------------------------------------------------
# The names the schema lists agree with the registries they mirror
# ------------------------------------------------------------------------------------------------


def test_known_names_agree_with_the_code_that_uses_them():
    from spgnet.data import labels
    from spgnet.engine.train import losses
    from spgnet.engine.evaluation.inference import STRATEGIES
    from spgnet.models import architectures, backbone, guidance, norm
    from spgnet.models import spgnet as spgnet_model
    from spgnet.models.peers import backbones as peer_backbones

    assert config_types.NORM_LAYERS == norm.NORM_LAYERS
    assert config_types.ARCHITECTURES == tuple(architectures())
    assert set(config_types.BACKBONES) == set(backbone.RESNETS) | set(peer_backbones.RESNETS) | set(peer_backbones.DENSENETS)
    assert config_types.LINKS == guidance.LINKS
    assert config_types.DECODERS == spgnet_model.DECODERS
    assert config_types.STRATEGIES == STRATEGIES
    assert (config_types.OHEM_RULES, config_types.OHEM_SCOPES) == (losses.OHEM_RULES, losses.OHEM_SCOPES)
    assert (config_types.DATASETS, config_types.SPLITS) == (labels.DATASETS, labels.SPLITS)
    kinds = set()
    for rules in (PROJECT_ROOT / "workflow" / "rules").glob("*.smk"):
        kinds |= set(re.findall(r'resources_for\([^,]+, "(\w+)"\)', rules.read_text()))
    assert kinds == set(config_types.RULE_KINDS)


def test_loading_a_configuration_does_not_import_torch():
    code = ("import sys; from spgnet.config import load_registry, load_profile, resolve; "
            "load_registry(); [resolve('t3-1stage', p) for p in ('mini', 'smoke')]; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr[-1000:]


def test_every_shipped_value_has_its_declared_type():
    json_types = {"number": float, "integer": int, "boolean": bool}
    for profile in available_profiles():
        prof = load_profile(profile, data_root="/data")
        for exp in load_registry().values():
            if not exp.reproducible or exp.train.dataset not in prof.datasets:
                continue
            cfg = resolve(exp, prof)
            for section in (cfg.model, cfg.train, cfg.eval):
                declared = TypeAdapter(type(section)).json_schema()["properties"]
                for name, value in dataclasses.asdict(section).items():
                    if declared[name].get("type") in json_types:
                        assert type(value) is json_types[declared[name]["type"]], (profile, exp.name, name, value)


# ------------------------------------------------------------------------------------------------
# Profiles: accepted spellings and bad values
# ------------------------------------------------------------------------------------------------


def _edit(folder: Path, section: str, text: str, profile: str = "mini") -> Path:
    """Set ``text`` (``key: value``, as a user would write it) in the profile's ``section``."""
    path = folder / f"{profile}.yaml"
    data = yaml.safe_load(path.read_text())
    if section == "top":
        data.update(yaml.safe_load(text))
    else:
        data.setdefault(section, {}).update(yaml.safe_load(text))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("text, field, expected", [
    ("lr: 1e-2", "lr", 0.01),  # PyYAML reads 1e-2 as a string
    ("lr: 2E-3", "lr", 0.002),
    ("iterations: 8e4", "iterations", 80000),
    ("iterations: 300.0", "iterations", 300),
    ("amp: auto", "amp", "auto"),
    ("amp: 'false'", "amp", False),
    ("ohem: yes", "ohem", True),
    ("ohem: 'on'", "ohem", True),
    ("device: cuda:1", "device", "cuda:1"),
    ("weight_decay_norm: 0", "weight_decay_norm", 0.0),
    ("weight_decay_bias: null", "weight_decay_bias", None),  # null: the same as weight_decay
    ("lr_mult_new_layers: 10", "lr_mult_new_layers", 10.0),
    ("ohem_top_k: 2e-1", "ohem_top_k", 0.2),
])
def test_profile_values_people_write_are_accepted(profiles, text, field, expected):
    _edit(profiles, "train", text)
    value = getattr(resolve("t3-1stage", "mini").train, field)
    assert value == expected and type(value) is type(expected)


def test_scales_written_as_ints_become_floats(profiles):
    _edit(profiles, "eval", "{scales: [1, 2], flip: 'true', max_scale: 3}")
    ev = resolve("t3-1stage", "mini").eval
    assert ev.scales == (1.0, 2.0) and all(type(s) is float for s in ev.scales) and ev.flip is True
    assert ev.max_scale == 3.0 and type(ev.max_scale) is float
    _edit(profiles, "eval", "{max_scale: 1.5}")  # the profile's cap drops the scales above it
    assert resolve("t3-1stage", "mini").eval.scales == (1.0,)


BAD_PROFILE_VALUES = [
    ("train", "lr: abc", "key 'train.lr': input should be a valid number, unable to parse string as a number, got 'abc'"),
    ("train", "lr: .nan", "key 'train.lr': input should be a finite number, got nan"),
    ("train", "lr: true", "key 'train.lr': input should be a number, not a boolean, got True"),
    ("train", "iterations: -3", "key 'train.iterations': input should be greater than or equal to 1, got -3"),
    ("train", "iterations: 1e-2", "key 'train.iterations': input should be a valid integer, got a number with a fractional part, got 0.01"),
    ("train", "batch_size: 0", "key 'train.batch_size': input should be greater than or equal to 1, got 0"),
    ("train", "momentum: 1.5", "key 'train.momentum': input should be less than 1, got 1.5"),
    ("train", "device: gpu", "key 'train.device': expected 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    ("train", "amp: bf16", "key 'train.amp': expected 'auto', true or false, got 'bf16'"),
    ("train", "dataset: ade20k", "key 'train.dataset': the profile has no datasets.ade20k (valid: cityscapes, voc, person_part)"),
    ("train", "dataset: 'ade 20k'", "key 'train.dataset': expected a data set name (letters, digits, '_' and '-', a letter first), got 'ade 20k'"),
    ("train", "lrr: 0.1", "unknown key 'train.lrr' (valid keys: amp, aux_weight, batch_size,"),
    # the recipe's open choices (docs/recipe.md)
    ("train", "ohem_rule: topk", "key 'train.ohem_rule': input should be 'threshold' or 'top_k', got 'topk'"),
    ("train", "ohem_scope: gpu", "key 'train.ohem_scope': input should be 'batch' or 'process', got 'gpu'"),
    ("train", "ohem_top_k: 20", "key 'train.ohem_top_k': input should be less than or equal to 1, got 20"),
    ("train", "ohem_top_k: 0", "key 'train.ohem_top_k': input should be greater than 0, got 0"),
    # issue 22, point 8: bounds that the settings' use needs (a crop of 1e9 reached NumPy)
    ("train", "crop: 1e9", "key 'train.crop': input should be less than or equal to 8192, got 1000000000.0"),
    ("eval", "pad_to: 100000", "key 'eval.pad_to': input should be less than or equal to 8192, got 100000"),
    ("eval", "scales: [1.0, 50]", "key 'eval.scales' (item 1): input should be less than or equal to 4, got 50"),
    ("train", "weight_decay_norm: -1e-4", "key 'train.weight_decay_norm': input should be greater than or equal to 0, got -0.0001"),
    ("train", "weight_decay_bias: none", "key 'train.weight_decay_bias': input should be a valid number, unable to parse string as a number, got 'none'"),
    ("train", "lr_mult_new_layers: 0", "key 'train.lr_mult_new_layers': input should be greater than 0, got 0"),
    ("eval", "pad_to: 0", "key 'eval.pad_to': input should be greater than or equal to 1, got 0"),
    ("eval", "pad_to: 513.5", "key 'eval.pad_to': input should be a valid integer, got a number with a fractional part, got 513.5"),
    ("model", "norm: bn", "key 'model.norm': input should be 'inplace_abn_sync', 'inplace_abn', 'abn' or 'batchnorm', got 'bn'"),
    ("model", "link: spg", "key 'model.link': input should be 'none', 'spg_sum', 'spg_softmax', 'spg_sigmoid', 'se' or 'ge', got 'spg'"),
    ("model", "decoder: aspp", "key 'model.decoder': input should be 'upsample' or 'fpn', got 'aspp'"),
    ("model", "arch: unet", "key 'model.arch': input should be 'spgnet', 'pspnet',"),
    ("model", "backbones: [resnet18, vgg16]", "key 'model.backbones' (item 1): input should be 'resnet18',"),
    ("model", "backbones: []", "key 'model.backbones': tuple should have at least 1 item after validation, not 0, got []"),
    ("top", "seeds: [-1]", "key 'seeds' (item 0): input should be greater than or equal to 0, got -1"),
    ("top", "report_dir: 7", "key 'report_dir': input should be a valid string, got 7"),
    ("resources", "train: {threads: 0}", "key 'resources.train.threads': input should be greater than or equal to 1, got 0"),
    ("resources", "gpu: {threads: 1}", "key 'resources.gpu': input should be 'train', 'evaluate' or 'light', got 'gpu'"),
    ("datasets", "ade20k: {root: data/ade}", "key 'datasets.ade20k.kind': missing (one of cityscapes, voc, person_part, folder; 'folder' for a tree described by its dataset.yaml)"),
    ("datasets", "ade20k: {root: data/ade, kind: ade}", "key 'datasets.ade20k.kind': input should be 'cityscapes', 'voc', 'person_part' or 'folder', got 'ade'"),
    ("dataset_overrides", "voc: {train: {crop: -65}}", "key 'dataset_overrides.voc.train.crop': input should be greater than or equal to 1, got -65"),
    ("dataset_overrides", "voc: {model: {norm: abn}}", "unknown key 'dataset_overrides.voc.model'"),
]


@pytest.mark.parametrize("section, text, message", BAD_PROFILE_VALUES, ids=[v[1] for v in BAD_PROFILE_VALUES])
def test_a_bad_profile_value_is_one_line_naming_file_key_and_value(profiles, section, text, message):
    path = _edit(profiles, section, text)
    with pytest.raises(ConfigError) as err:
        load_profile("mini")
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_a_bad_value_fails_spgnet_train_before_any_work(profiles, tmp_path, capsys):
    _edit(profiles, "train", "lr: abc")
    out = tmp_path / "runs" / "t3-1stage"
    assert cli(["train", "t3-1stage", "--profile", "mini", "--out", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"spgnet train: error: {profiles / 'mini.yaml'}: key 'train.lr': input should be a valid number, "
                   "unable to parse string as a number, got 'abc'"]
    assert not (tmp_path / "runs").exists()


def test_cli_overrides_are_typed_too():
    with pytest.raises(ConfigError, match=r"^profile 'mini': key 'eval.strategy': input should be 'GAP', 'AP' or 'TILED', got 'XX'$"):
        resolve("t3-1stage", "mini", eval={"strategy": "XX"})


# ------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------


def _registry_with(tmp_path, edit) -> Path:
    data = yaml.safe_load(config.EXPERIMENTS_FILE.read_text())
    edit(data)
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


BAD_REGISTRY_VALUES = [
    (lambda d: d["experiments"]["t3-plain"]["model"].update(link="spg"),
     "experiment 't3-plain': key 'model.link': input should be 'none', 'spg_sum',"),
    (lambda d: d["experiments"]["t3-spg-sum"].setdefault("train", {}).update(lr="abc"),
     "experiment 't3-spg-sum': key 'train.lr': input should be a valid number, unable to parse string as a number, got 'abc'"),
    (lambda d: d["experiments"]["t12-gap"]["eval"].update(strategy="MAX"),
     "experiment 't12-gap': key 'eval.strategy': input should be 'GAP', 'AP' or 'TILED', got 'MAX'"),
    (lambda d: d["experiments"]["t3-1stage"]["paper"].update(miou="high"),
     "experiment 't3-1stage': key 'paper.miou': input should be a valid number, unable to parse string as a number, got 'high'"),
    (lambda d: d["experiments"]["t3-1stage"].update(model="resnet18"),
     "experiment 't3-1stage': key 'model': expected a mapping, got 'resnet18'"),
    (lambda d: d["defaults"]["train"].update(iterations=-80000),
     "defaults: key 'train.iterations': input should be greater than or equal to 1, got -80000"),
    (lambda d: d["defaults"]["model"].update(norm="syncbn"),
     "defaults: key 'model.norm': input should be 'inplace_abn_sync',"),
]


@pytest.mark.parametrize("edit, message", BAD_REGISTRY_VALUES, ids=[m[1].split(": ")[1] for m in BAD_REGISTRY_VALUES])
def test_a_bad_registry_value_is_one_line_naming_file_experiment_key_and_value(tmp_path, edit, message):
    path = _registry_with(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_registry(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_registry_numbers_written_as_1e_2_are_numbers(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(config.EXPERIMENTS_FILE.read_text().replace("    iterations: 80000\n", "    iterations: 9e4\n    lr: 2e-2\n", 1))
    assert "lr: 2e-2" in path.read_text()
    train = load_registry(path)["t3-1stage"].train  # its schedule is the defaults'
    assert (train.lr, train.iterations) == (0.02, 90000) and type(train.iterations) is int


def test_the_cli_refuses_a_bad_registry_with_exit_2_and_no_run_folder(tmp_path):
    """As a user would meet it: a copy of the project whose registry has `lr: 1e-x`."""
    root = tmp_path / "project"
    (root / "params").mkdir(parents=True)
    (root / "params" / "profiles").symlink_to(config.PROFILES_DIR, target_is_directory=True)
    _registry_with(root / "params", lambda d: d["defaults"]["train"].update(lr="1e-x"))
    out = tmp_path / "run"
    for argv in (["experiments"], ["train", "t3-1stage", "--out", str(out)]):
        result = subprocess.run([sys.executable, "-m", "spgnet", *argv], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "SPGNET_ROOT": str(root)})
        assert result.returncode == 2 and result.stdout == "", result.stderr[-2000:]
        assert result.stderr.splitlines() == [
            f"spgnet {argv[0]}: error: {root / 'params' / 'experiments.yaml'}: defaults: key 'train.lr': input should be "
            "a valid number, unable to parse string as a number, got '1e-x'"]
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# The workflow's --config
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [
    ({"dvc_lock": "false"}, {"dvc_lock": False}),
    ({"dvc_lock": "False"}, {"dvc_lock": False}),
    ({"dvc_lock": False}, {"dvc_lock": False}),
    ({"dvc_lock": "no"}, {"dvc_lock": False}),
    ({"dvc_lock": "0"}, {"dvc_lock": False}),
    ({"dvc_lock": 0}, {"dvc_lock": False}),
    ({"dvc_lock": "yes"}, {"dvc_lock": True}),
    ({"dvc_lock": "true"}, {"dvc_lock": True}),
    ({"seeds": "0,1,2"}, {"seeds": [0, 1, 2]}),
    ({"seeds": "[0, 1, 2]"}, {"seeds": [0, 1, 2]}),
    ({"seeds": ["0", "1", "2"]}, {"seeds": [0, 1, 2]}),  # what Snakemake makes of seeds=[0,1,2]
    ({"seeds": 3}, {"seeds": [3]}),
    ({"seeds": None}, {"seeds": None}),
])
def test_workflow_config_accepts_what_people_type(given, expected):
    config_dict = {"profile": "mini", "data_root": None, "seeds": None, "dvc_lock": True, **given}
    check_config(config_dict, SCHEMA)
    assert {k: config_dict[k] for k in expected} == expected
    assert all(type(config_dict[k]) is type(v) for k, v in expected.items())


@pytest.mark.parametrize("given, message", [
    ({"dvc_lock": "maybe"}, "config: key 'dvc_lock': input should be a valid boolean, unable to interpret input, got 'maybe'"),
    ({"seeds": "0,x"}, "config: key 'seeds' (item 1): input should be a valid integer, unable to parse string as an integer, got 'x'"),
    ({"seeds": "-1"}, "config: key 'seeds' (item 0): input should be greater than or equal to 0, got -1"),
    ({"seeds": []}, "config: key 'seeds': tuple should have at least 1 item after validation, not 0, got []"),
    ({"profle": "mini"}, "config: unknown key 'profle' (valid keys: data_root, dvc_lock, experiments, profile, seeds, set, weights_root)"),
    ({"profile": "nope"}, "config: key 'profile': unknown profile 'nope' (valid: mini, paper, rehearsal, smoke)"),
])
def test_workflow_config_errors_are_one_line(given, message):
    with pytest.raises(ConfigError) as err:
        check_config({"profile": "mini", "dvc_lock": True, **given}, SCHEMA)
    assert str(err.value) == message


def test_the_schema_file_is_generated_from_the_model():
    assert SCHEMA.read_text(encoding="utf-8") == workflow_config.render_workflow_schema()
    assert list(yaml.safe_load(SCHEMA.read_text())["properties"]) == [
        f.name for f in dataclasses.fields(workflow_config.WorkflowConfig)]


def test_the_sections_have_no_untyped_field():
    for cls in (ModelConfig, TrainConfig, EvalConfig, config.PaperNumbers, config.DatasetSource, config.Profile):
        for f in dataclasses.fields(cls):
            assert f.type not in ("str", "int", "float", "Any") or f.name in ("root", "name", "description", "report_dir"), (cls, f.name)


def test_dvc_lock_false_on_the_command_line_drops_the_dvc_lock_job():
    """README: `--config dvc_lock=false` skips the final `dvc commit` (Snakemake passes 'false' as a string)."""
    def jobs(*config):
        result = subprocess.run(["snakemake", "-n", "--forceall", "--cores", "1", "reproduce_all", *config],
                                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
        assert result.returncode == 0, result.stderr[-2000:]
        return dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))

    assert jobs().get("dvc_lock") == "1"
    assert "dvc_lock" not in jobs("--config", "dvc_lock=false")
