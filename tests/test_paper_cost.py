"""benchmarks/paper_cost.py (README "Cost on paper") and the reproduce_spgnet target."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from spgnet.config import PROJECT_ROOT
from spgnet.models import build_model_from_config
from spgnet.workflow.plan import make_plan


@pytest.fixture(scope="module")
def cost():
    spec = importlib.util.spec_from_file_location("paper_cost", PROJECT_ROOT / "benchmarks" / "paper_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plan():
    return make_plan("paper", data_root="/data")


def hooked_macs(model_cfg, batch: int, size: tuple[int, int], training: bool, pooling=None) -> float:
    """Multiply-adds per image from the layer shapes (forward hooks on every convolution and linear
    layer), independent of FlopCounterMode: out elements x in channels / groups x kernel area."""
    cfg = dataclasses.replace(model_cfg, norm="abn", pretrained=None)
    with torch.device("meta"):
        model = build_model_from_config(cfg, device="meta")
    model = model.to("meta").train(training)
    if pooling is not None:
        model.set_test_pooling(*pooling)
    total = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total.append(output.numel() * module.in_channels // module.groups * kh * kw)
        else:
            total.append(output.numel() * module.in_features)

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.empty((batch, 3, *size), device="meta"))
    return sum(total) / batch


def test_one_run_and_its_evaluations_against_a_recount_from_layer_shapes(cost, plan):
    cfg = plan.runs["t3-1stage"]
    assert (cfg.train.crop, cfg.train.batch_size, cfg.train.iterations) == (769, 8, 80000)
    macs = hooked_macs(cfg.model, 2, (769, 769), training=True)
    train_flops = 2 * 3 * macs * 8 * 80000
    one_run = dataclasses.replace(plan, runs={"t3-1stage": cfg})
    assert cost.run_flops(one_run)["t3-1stage"] == pytest.approx(train_flops, rel=1e-9)

    # AP at 1024 x 2048 on the 500 val images (kernel 769 // 32); TILED: 2 x 4 windows of 769 x 769
    ap = hooked_macs(cfg.model, 1, (1024, 2048), training=False, pooling=("AP", 24))
    tiled = 8 * hooked_macs(cfg.model, 1, (769, 769), training=False, pooling=("GAP", None))
    rows = {name: plan.evaluations[name] for name in ("t3-1stage", "t12-tiled")}
    evals = cost.evaluation_flops(dataclasses.replace(plan, evaluations=rows))
    assert evals[rows["t3-1stage"].evaluation] == pytest.approx(2 * ap * 500, rel=1e-9)
    assert evals[rows["t12-tiled"].evaluation] == pytest.approx(2 * tiled * 500, rel=1e-9)

    # GPU-hours: FLOPs over 40% of the A100's 312 TFLOP/s
    hours = (train_flops + 2 * ap * 500) / (0.4 * 312e12) / 3600
    assert cost.gpu_hours(train_flops + 2 * ap * 500, cost.GPU_PEAK_FLOPS["A100 SXM"], 0.4) == pytest.approx(hours)
    row = cost.target_cost(one_run, ["t3-1stage"], {"t3-1stage": train_flops}, {rows["t3-1stage"].evaluation: 2 * ap * 500})
    assert row["runs"] == ["t3-1stage"] and row["train_flops"] + row["eval_flops"] == pytest.approx(hours * 0.4 * 312e12 * 3600)


def test_reproduce_spgnet_trains_no_table1_competitor(cost, plan, tmp_path):
    from spgnet.models.weights import plan_backbones, weights_file_name

    for folder in ("cityscapes", "VOCdevkit/VOC2012", "person_part", "imagenet"):
        (tmp_path / folder).mkdir(parents=True)
    for backbone in plan_backbones(plan):
        (tmp_path / "imagenet" / weights_file_name(backbone)).touch()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["snakemake", "-n", "-p", "--forceall", "--cores", "1", "reproduce_spgnet", "--config", "profile=paper",
         f"data_root={tmp_path}", f"weights_root={tmp_path / 'imagenet'}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    trained = set(re.findall(r"spgnet train (\S+) ", result.stdout))
    peers = {run for run, cfg in plan.runs.items() if cfg.model.arch != "spgnet"}
    assert len(peers) == 6 and not trained & peers
    assert trained == set(plan.runs) - peers
    assert trained == set(cost.target_cost(plan, cost.targets(plan)["reproduce_spgnet"], dict.fromkeys(plan.runs, 0.0),
                                           dict.fromkeys(plan.unique_evaluations(), 0.0))["runs"])
    assert "rule report" not in result.stdout
