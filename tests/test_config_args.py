"""One way in for settings: spgnet.config.build_config builds every verb's run config (--set overrides)."""

from __future__ import annotations

import argparse

import pytest

from spgnet.config import ConfigError, config_from_args, config_hash, load_profile, parse_overrides, resolve


def _args(**values):
    base = dict(experiment="t3-1stage", profile="mini", data_root=None, set=[])
    base.update(values)
    return argparse.Namespace(**base)


def test_set_values_are_read_as_yaml():
    assert parse_overrides(["train.lr=0.02", "eval.scales=[1.0, 1.5]", "eval.flip=true", "model.channels=64"]) == {
        "train": {"lr": 0.02}, "eval": {"scales": [1.0, 1.5], "flip": True}, "model": {"channels": 64}}


@pytest.mark.parametrize("item, message", [
    ("train.lr", "expected SECTION.KEY=VALUE"),
    ("lr=0.1", "expected SECTION.KEY=VALUE"),
    ("data.root=/x", "unknown section 'data'"),
    ("eval.scales=[1.0", "not valid YAML"),
])
def test_bad_set_items_are_one_line_errors_naming_the_item(item, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_overrides([item])
    assert item in str(info.value) and "\n" not in str(info.value)


def test_every_verb_gets_the_same_config_with_overrides_applied_last():
    plain = config_from_args(_args())
    assert plain == resolve("t3-1stage", "mini")
    cfg = config_from_args(_args(set=["train.lr=0.02", "eval.scales=[1.0,1.5]"], iterations=7, strategy="TILED"))
    assert cfg.train.lr == 0.02 and cfg.train.iterations == 7
    assert cfg.eval.scales == (1.0, 1.5) and cfg.eval.strategy == "TILED"
    # the mini profile caps the registry's multi-scale sets at eval.max_scale; --set lifts the cap
    assert resolve("t9-r50-d256-msflip", "mini").eval.scales == (0.75, 1.0, 1.25)
    assert config_from_args(_args(experiment="t9-r50-d256-msflip", set=["eval.max_scale=2.0"])).eval.scales == (
        0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    assert resolve("t9-r50-d256-msflip", load_profile("paper", data_root="/data")).eval.scales[-1] == 2.0
    # the cap itself is not hashed, the scales it leaves are: lifting it reruns only multi-scale rows
    from spgnet.workflow.plan import make_plan

    plan, lifted = make_plan("mini"), make_plan("mini", overrides={"all": ["eval.max_scale=2.0"]})
    assert lifted.evaluation_settings("t3-1stage") == plan.evaluation_settings("t3-1stage")
    assert lifted.evaluation_settings("t9-r50-d256-msflip") != plan.evaluation_settings("t9-r50-d256-msflip")
    # an override is part of the run's identity: --resume refuses a checkpoint trained without it
    assert config_hash(cfg.model, cfg.train) != config_hash(plain.model, plain.train)


def test_every_open_recipe_choice_is_a_set_away():
    """docs/recipe.md: each alternative a reviewer may expect is a setting, switched with --set
    (Snakemake's --config set=..., DVC's -S take the same items)."""
    items = ["train.ohem_rule=top_k", "train.ohem_top_k=0.2", "train.ohem_scope=process",
             "train.weight_decay_norm=0", "train.weight_decay_bias=0", "train.lr_mult_new_layers=10",
             "train.lr=0.007", "eval.flip=true", "eval.scales=[0.5,0.75,1.0,1.25,1.5,1.75]", "eval.pad_to=513"]
    plain = config_from_args(_args(experiment="t10-spgnet-ms"))
    cfg = config_from_args(_args(experiment="t10-spgnet-ms", set=items))
    t, ev = cfg.train, cfg.eval
    assert (t.ohem_rule, t.ohem_top_k, t.ohem_scope) == ("top_k", 0.2, "process")
    assert (t.weight_decay_norm, t.weight_decay_bias, t.lr_mult_new_layers, t.lr) == (0.0, 0.0, 10.0, 0.007)
    assert (ev.flip, ev.scales, ev.pad_to) == (True, (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), 513)
    assert config_hash(cfg.model, cfg.train) != config_hash(plain.model, plain.train)
    with pytest.raises(ConfigError, match=r"^--set: key 'train.ohem_scope': input should be 'batch' or 'process', got 'gpu'$"):
        config_from_args(_args(set=["train.ohem_scope=gpu"]))


def test_numbers_typed_as_people_type_them():
    # YAML 1.1 reads 2e-2 as a string; the typed config turns it into the float it means
    assert config_from_args(_args(set=["train.lr=2e-2"])).train.lr == 0.02


def test_an_unknown_key_names_it():
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        config_from_args(_args(set=["train.lrr=0.1"]))


def test_the_cli_accepts_set_on_train_evaluate_and_attention():
    from spgnet.cli import _build_parser

    parser = _build_parser()
    for argv in (["train", "t3-1stage", "--out", "x"], ["evaluate", "t3-1stage", "--checkpoint", "c", "--out", "m.json"],
                 ["attention", "t3-spg-sigmoid", "--checkpoint", "c", "--out", "d"]):
        args = parser.parse_args(argv + ["--set", "train.lr=0.02", "--set", "eval.flip=true"])
        assert args.set == ["train.lr=0.02", "eval.flip=true"]
        assert config_from_args(args).train.lr == 0.02


def test_predict_and_export_build_their_config_the_same_way(tmp_path):
    """spgnet predict/export/load_model read a checkpoint with the config every verb builds
    (config_from_args), --set included: a network trained with an override is rebuilt with it."""
    from spgnet.serving.predictor import run_config

    cfg = run_config("t3-1stage", tmp_path / "unused.pt", profile="mini", overrides=["model.channels=64"])
    assert cfg == config_from_args(_args(set=["model.channels=64"]))
    assert cfg.model.channels == 64
    with pytest.raises(ConfigError, match="unknown key 'model.chanels'"):
        run_config("t3-1stage", tmp_path / "unused.pt", profile="mini", overrides=["model.chanels=64"])


def test_a_bad_set_value_is_named_as_the_set_it_came_from():
    with pytest.raises(ConfigError, match=r"^--set: key 'train.lr': input should be a valid number.*got 'abc'$"):
        config_from_args(_args(set=["train.lr=abc"]))
    with pytest.raises(ConfigError, match=r"^--set: key 'train.iterations'"):
        config_from_args(_args(set=["train.iterations=-3"]))
