"""SGD and the poly schedule of Sec. 4.2 (:mod:`spgnet.engine.train.schedule`): the optimiser's
parameter groups, the learning rate, the paper's schedule per dataset."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from spgnet.config import resolve
from spgnet.engine.train.schedule import build_optimizer, poly_lr, set_lr
from tests.helpers_train import ToyNet

pytestmark = pytest.mark.usefixtures("no_tracking")


def test_optimizer_is_papers_sgd():
    cfg = resolve("t3-plain", "mini")
    assert (cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay, cfg.train.poly_power) == (0.01, 0.9, 1e-4, 0.9)
    model = ToyNet()
    opt = build_optimizer(model, cfg.train)
    assert isinstance(opt, torch.optim.SGD)
    (group,) = opt.param_groups
    assert group["lr"] == 0.01 and group["momentum"] == 0.9 and group["weight_decay"] == 1e-4
    assert group["nesterov"] is False
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in model.parameters())
    set_lr(opt, 0.005)
    assert opt.param_groups[0]["lr"] == 0.005


def _group_of(optimizer) -> dict:
    """``id(parameter)`` -> (lr multiplier, weight decay) of its group."""
    return {id(p): (g["lr_mult"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


def _is_norm(module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or type(module).__name__ in (
        "ABN", "InPlaceABN", "InPlaceABNSync")


def test_optimizer_groups_put_norm_and_bias_decay_and_lr_multiplier_on_the_right_parameters():
    from spgnet.models import build_model_from_config

    cfg = resolve("t3-plain", "mini")  # two ResNet-18 stages
    model = build_model_from_config(cfg.model)
    (group,) = build_optimizer(model, cfg.train).param_groups  # the defaults: one rate, one decay
    assert (group["lr_mult"], group["weight_decay"]) == (1.0, 1e-4)
    t = dataclasses.replace(cfg.train, weight_decay_norm=0.0, weight_decay_bias=5e-5, lr_mult_new_layers=10.0)
    groups = _group_of(build_optimizer(model, t))
    kinds = set()
    for name, param in model.named_parameters():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        encoder = name.startswith("stages.") and ".encoder." in name
        decay = 0.0 if _is_norm(module) else 5e-5 if name.endswith(".bias") else 1e-4
        assert groups[id(param)] == (1.0 if encoder else 10.0, decay), name
        kinds.add((encoder, decay))
    assert kinds == {(True, 0.0), (True, 1e-4), (False, 0.0), (False, 5e-5), (False, 1e-4)}
    assert groups[id(model.stages[1].encoder.layer4[1].conv2.weight)] == (1.0, 1e-4)  # the 2nd stage's encoder too
    assert groups[id(model.stages[0].classifier.bias)] == (10.0, 5e-5)


def test_a_peers_new_backbone_layers_get_the_new_layers_rate():
    """PSPNet's deep stem is not in torchvision's file (``imagenet_skip``): new, like the head."""
    from spgnet.models import build_model_from_config

    cfg = resolve("t1-pspnet", "mini", model={"backbones": ["resnet50"]}, train={"lr_mult_new_layers": 10.0})
    model = build_model_from_config(cfg.model)
    groups = _group_of(build_optimizer(model, cfg.train))
    skip = model.backbone.imagenet_skip
    assert skip
    for name, param in model.named_parameters():
        imagenet = name.startswith("backbone.") and not name.removeprefix("backbone.").startswith(skip)
        assert groups[id(param)][0] == (1.0 if imagenet else 10.0), name


def test_the_poly_schedule_keeps_each_groups_multiplier_and_resume_keeps_the_groups():
    t = dataclasses.replace(resolve("t3-plain", "mini").train, lr_mult_new_layers=10.0)
    model = ToyNet()  # no ImageNet part: every layer is new
    opt = build_optimizer(model, t)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.1)]
    set_lr(opt, poly_lr(t.lr, 50, 100))
    assert opt.param_groups[0]["lr"] == pytest.approx(10 * 0.01 * 0.5 ** 0.9)
    from spgnet.models import build_model_from_config

    cfg = resolve("t3-1stage", "mini")
    model = build_model_from_config(cfg.model)
    opt = build_optimizer(model, dataclasses.replace(cfg.train, lr_mult_new_layers=10.0))
    set_lr(opt, 0.004)
    assert sorted(g["lr"] for g in opt.param_groups) == [pytest.approx(0.004), pytest.approx(0.04)]
    again = build_optimizer(model, dataclasses.replace(cfg.train, lr_mult_new_layers=10.0))
    again.load_state_dict(opt.state_dict())  # what --resume does
    set_lr(again, 0.002)
    assert [g["lr"] / g["lr_mult"] for g in again.param_groups] == [pytest.approx(0.002)] * 2


def test_poly_schedule_values():
    assert poly_lr(0.01, 0, 100) == 0.01
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert poly_lr(0.01, 99, 100) == pytest.approx(0.01 * 0.01 ** 0.9)
    assert poly_lr(0.01, 100, 100) == 0.0
    lrs = [poly_lr(0.01, i, 80000, 0.9) for i in range(0, 80000, 1000)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_paper_schedules_per_dataset():
    from spgnet.config import get_experiment

    cityscapes = get_experiment("t3-plain").train
    assert (cityscapes.iterations, cityscapes.batch_size, cityscapes.crop) == (80000, 8, 769)
    voc = get_experiment("voc-spgnet").train
    assert (voc.iterations, voc.crop, voc.batch_size) == (30000, 513, 28)
