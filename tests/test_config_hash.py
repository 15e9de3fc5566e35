"""What the configuration hash holds (issue 20, point 2): the settings that change the trained
network (or the evaluation), and none of those that only say how a machine runs it, so that a job
requeued on a node with fewer cores, another GPU index or other intervals resumes its checkpoint.

Every field of the three sections is listed here as IN or OUT, with a value it may be changed to: a
field added to a section without a line here fails ``test_every_field_is_listed``."""

from __future__ import annotations

import dataclasses

import pytest

from spgnet.config import EvalConfig, ModelConfig, TrainConfig, config_hash, resolve

IN, OUT = True, False

#: field -> (in the hash?, another valid value)
MODEL = {
    "arch": (IN, "pspnet"), "backbones": (IN, ("resnet50",)), "channels": (IN, 256), "link": (IN, "none"),
    "identity": (IN, False), "supervise": (IN, False), "csfa": (IN, False), "gap": (IN, False),
    "decoder": (IN, "fpn"), "num_classes": (IN, 21), "norm": (IN, "batchnorm"),
    "pretrained": (IN, "/weights"),  # random vs ImageNet is in; where the files lie is not (below)
    "builder": (IN, "examples.my_head:build"),  # a network of your own; absent (None) leaves every hash as it was
}
TRAIN = {
    "dataset": (IN, "voc"), "split": (IN, "trainval"), "crop": (IN, 513), "batch_size": (IN, 28),
    "iterations": (IN, 30000), "lr": (IN, 0.007), "momentum": (IN, 0.95), "weight_decay": (IN, 5e-4),
    "weight_decay_norm": (IN, 0.0), "weight_decay_bias": (IN, 0.0), "lr_mult_new_layers": (IN, 10.0),
    "poly_power": (IN, 1.0), "scale_min": (IN, 0.75), "scale_max": (IN, 1.75), "scale_step": (IN, 0.125),
    "ohem": (IN, True), "ohem_rule": (IN, "top_k"), "ohem_threshold": (IN, 0.6), "ohem_min_kept": (IN, 200000),
    "ohem_top_k": (IN, 0.3), "ohem_scope": (IN, "batch"), "aux_weight": (IN, 0.4),
    "checkpoint_every": (OUT, 1000), "log_every": (OUT, 10), "workers": (OUT, 16),
    "device": (IN, "cpu"),  # its type decides the precision; the index does not count (below)
    "amp": (IN, False),  # float16 vs float32 changes the numbers the network is trained with
    "val_every": (OUT, 5000),
}
EVAL = {
    "split": (IN, "test"), "strategy": (IN, "TILED"), "scales": (IN, (0.75, 1.0)), "flip": (IN, True),
    "tile_overlap": (IN, 0.5), "pad_to": (IN, 513), "submission": (IN, True),
    "max_scale": (OUT, 1.25),  # a profile's cap: the scales it leaves are hashed (eval.scales)
}
SECTIONS = {ModelConfig: MODEL, TrainConfig: TRAIN, EvalConfig: EVAL}
CASES = [(cls, name, hashed, value) for cls, table in SECTIONS.items() for name, (hashed, value) in table.items()]


@pytest.mark.parametrize("cls", list(SECTIONS), ids=lambda cls: cls.__name__)
def test_every_field_is_listed(cls):
    assert [f.name for f in dataclasses.fields(cls)] == list(SECTIONS[cls])


@pytest.mark.parametrize("cls, name, hashed, value", CASES,
                         ids=[f"{cls.__name__}.{name}" for cls, name, _, _ in CASES])
def test_a_field_changes_the_hash_exactly_when_it_changes_the_network(cls, name, hashed, value):
    base = cls()
    changed = dataclasses.replace(base, **{name: value})
    assert getattr(changed, name) != getattr(base, name)
    assert (config_hash(changed) != config_hash(base)) is hashed


def test_where_files_lie_and_which_gpu_do_not_count():
    base = TrainConfig()
    assert config_hash(dataclasses.replace(base, device="cuda:3")) == config_hash(base)
    model = ModelConfig(pretrained="/a")
    assert config_hash(dataclasses.replace(model, pretrained="/b")) == config_hash(model)


def test_a_requeued_job_with_other_machine_settings_resumes(tmp_path):
    """The rehearsal's fault: `--set train.workers=...` on resume refused the checkpoint."""
    from tests.helpers_train import ToySet, toy_cfg, toy_model, train_with

    train_with(toy_cfg(iterations=4), tmp_path, model=toy_model(), dataset=ToySet(), stop_after=2)
    moved = toy_cfg(iterations=4, workers=1, log_every=2, checkpoint_every=1)
    metrics = train_with(moved, tmp_path, resume=True, model=toy_model(), dataset=ToySet())
    assert metrics["iterations"] == 4 and metrics["segments"][-1] == 2


def test_the_paper_profiles_machine_settings_leave_the_hash_of_a_run_alone():
    from spgnet.config import load_profile

    paper = resolve("t9-r50-d256", load_profile("paper", data_root="/data"))
    moved = dataclasses.replace(paper.train, workers=2, log_every=1, checkpoint_every=10, device="cuda:1")
    assert config_hash(paper.model, moved) == config_hash(paper.model, paper.train)


def test_settings_added_at_their_default_leave_every_hash_as_it_was():
    """``ModelConfig.builder`` and ``DatasetSource.kind`` came later (issue 24): at their defaults
    (and for a built-in data set's own kind) they are left out, so no checkpoint's hash changed."""
    from spgnet.config import DatasetSource
    from spgnet.config.sections import _hashed_fields

    assert "builder" not in _hashed_fields(ModelConfig())
    assert _hashed_fields(ModelConfig(builder="m:f"))["builder"] == "m:f"
    source = DatasetSource(root="data/x")
    assert config_hash(dataclasses.replace(source, kind="cityscapes")) == config_hash(source)
    assert config_hash(dataclasses.replace(source, kind="folder")) != config_hash(source)
