"""docs/recipe.md: every training and evaluation setting stated (paper, value, why, alternative),
generated from spgnet/recipe.py and the paper profile, each alternative a setting that validates."""

from __future__ import annotations

import dataclasses
import re

import pytest

from spgnet import recipe
from spgnet.config import PROJECT_ROOT, EvalConfig, ModelConfig, TrainConfig, load_profile, resolve
from spgnet.config import SECTION_TYPES, parse_overrides, validate_partial


@pytest.fixture(scope="module")
def cfgs():
    return recipe.configs()


def test_the_committed_page_is_the_generated_one(cfgs):
    page = (PROJECT_ROOT / recipe.RECIPE_FILE).read_text(encoding="utf-8")
    assert page == recipe.render(cfgs), f"{recipe.RECIPE_FILE} is stale: run `python -m spgnet.recipe --write`"


def test_every_train_and_eval_setting_has_exactly_one_entry():
    named = [key for entry in recipe.RECIPE for key in entry.keys]
    fields = {f"{section}.{f.name}" for section, cls in recipe.SECTIONS.items() for f in dataclasses.fields(cls)}
    assert sorted(k for k in named if k in fields) == sorted(fields), "a setting without (or with two) entries"
    assert len(named) == len(set(named))
    sections = {"train": TrainConfig, "eval": EvalConfig, "model": ModelConfig}
    for key in named:
        section, name = key.split(".")
        assert name in {f.name for f in dataclasses.fields(sections[section])}, key
    assert {"model.norm", "model.pretrained"} <= set(named)


def test_every_entry_says_what_the_paper_says_why_and_the_alternative(cfgs):
    for item in recipe.entries(cfgs):
        assert item["topic"] and item["why"] and item["alternative"], item["topic"]
        paper = item["paper"]
        assert recipe.NOT_STATED in paper or re.search(r"\((Sec\. \d|appendix|Appendix)", paper) or "Sec. " in paper, (
            item["topic"], paper)
        assert "{" not in item["why"].replace("{'head'", ""), item["why"]  # every quoted value filled in
    linked = [e.topic for e in recipe.RECIPE if e.link]
    assert {"Activation of the ImageNet encoders", "ImageNet weights in Inplace-ABN"} <= set(linked)


def test_values_are_the_paper_profiles(cfgs):
    items = {item["topic"]: item for item in recipe.entries(cfgs)}
    paper = load_profile("paper", data_root="/data")
    voc, cityscapes = resolve("voc-spgnet", paper), resolve("t9-r50-d256", paper)
    crops = dict(dict(items["Crop size"]["values"])["train.crop"])
    assert crops[str(cityscapes.train.crop)][0] == "t9-r50-d256" and "voc-spgnet" in crops[str(voc.train.crop)]
    assert items["Normalisation layer"]["value"] == f"`model.norm` = `{cityscapes.model.norm}`"
    assert items["Encoder initialisation"]["value"] == "`model.pretrained` = `imagenet`"
    # each key is shown for every row, once
    for item in items.values():
        for _key, grouped in item["values"]:
            assert sorted(e for _value, rows in grouped for e in rows) == sorted(e for _l, e in recipe.ROWS)
    # what the texts quote comes from the configs: 100000 of 8 x 769^2 pixels
    share = cityscapes.train.ohem_min_kept / (cityscapes.train.batch_size * cityscapes.train.crop ** 2)
    why = items["OHEM threshold rule: threshold and minimum kept"]["why"]
    assert f"{100 * share:.1f}% of a whole Cityscapes batch" in why
    per_crop = cityscapes.train.ohem_min_kept / cityscapes.train.crop ** 2  # 8 GPUs x 1 crop: per process
    assert f"{100 * per_crop:.1f}% of one {cityscapes.train.crop}^2 crop" in why


def test_every_alternative_setting_named_is_a_valid_set_item(cfgs):
    """What the page tells a reviewer to pass to --set is a key of its section and a value its type accepts."""
    found = 0
    for item in recipe.entries(cfgs):
        for span in re.findall(r"`([^`]*)`", item["alternative"]):
            items = [word for word in span.split() if re.match(r"^(train|eval|model)\.\w+=", word)]
            for section, values in parse_overrides(items).items():
                validate_partial(SECTION_TYPES[section], values, item["topic"], section)
                found += len(values)
    assert found >= 12  # ohem rule and scope, decays, lr multiplier, lr, scales, flip, padding, ...


def test_the_required_alternatives_are_settings(cfgs):
    """Issue 19: the OHEM rule and scope, norm / bias decay, the new layers' rate, Table 1's flip,
    Person-Part's scales and flip, VOC's rate and padding each switch with one --set."""
    text = " ".join(item["alternative"] for item in recipe.entries(cfgs))
    for setting in ("train.ohem_rule=top_k", "train.ohem_scope=batch", "train.weight_decay_norm=0",
                    "train.weight_decay_bias=0", "train.lr_mult_new_layers=10", "train.lr=0.007",
                    "eval.flip=true", "eval.scales=[0.5,0.75,1.0,1.25,1.5,1.75]", "eval.pad_to=513"):
        assert f"`{setting}" in text or f" {setting}" in text, setting


def test_the_module_prints_the_page(capsys, cfgs):
    assert recipe.main([]) == 0
    assert capsys.readouterr().out == recipe.render(cfgs)
