"""ImageNet weights per backbone (spgnet.models.weights, spgnet.models.pretrained): torchvision's
file names, strict per-stage loading, the workflow's start check, `spgnet weights check`, and what
a run records. The checkpoints are fabricated in torchvision's format: a torchvision model's
``state_dict()`` saved under torchvision's file name."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from spgnet.config import PROJECT_ROOT, ModelConfig, config_hash, load_profile, resolve
from spgnet.errors import SpgnetError
from spgnet.models import build_model_from_config
from spgnet.models.weights import model_backbones, plan_backbones, weights_file_name, weights_url
from spgnet.workflow.plan import make_plan

#: torchvision's published IMAGENET1K_V1 files (the names the issue and README give)
TORCHVISION_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "resnet152": "resnet152-394f9c45.pth",
    "densenet161": "densenet161-8d451a50.pth",
}


def fabricate(root: Path, backbone: str, seed: int, name: str | None = None, old_densenet_names: bool = False) -> dict:
    """Save a randomly initialised torchvision ``backbone`` as its ImageNet file; returns its state."""
    torch.manual_seed(seed)
    state = torchvision.models.get_model(backbone, weights=None).state_dict()
    saved = state
    if old_densenet_names:  # the published densenet161 file predates torchvision 0.4's key names
        saved = {re.sub(r"\.(norm|relu|conv)([12])\.", r".\1.\2.", k): v for k, v in state.items()}
    root.mkdir(parents=True, exist_ok=True)
    torch.save(saved, root / (name or weights_file_name(backbone)))
    return state


def assert_filled(module: torch.nn.Module, reference: dict, skip: tuple[str, ...] = ()) -> int:
    """Every tensor of ``module`` (but ``skip``, counters and DenseNet's input signs, which no file
    holds) equals the reference's; returns how many."""
    checked = 0
    for key, tensor in module.state_dict().items():
        if key.endswith(("num_batches_tracked", ".input_sign")) or key.startswith(skip):
            continue
        assert torch.equal(tensor, reference[key]), key
        checked += 1
    return checked


def tensors(reference: dict, unused: tuple[str, ...] = ()) -> int:
    """How many tensors of a torchvision file an encoder takes (the classifier and ``unused`` aside)."""
    return len([k for k in reference if not k.startswith(("fc.", "classifier.", *unused)) and "num_batches" not in k])


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def test_file_names_are_torchvisions_and_cover_every_backbone_of_the_paper_profile():
    assert {b: weights_file_name(b) for b in TORCHVISION_FILES} == TORCHVISION_FILES
    assert weights_url("resnet50") == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert set(plan_backbones(make_plan("paper", data_root="/d"))) == set(TORCHVISION_FILES)
    readme = (PROJECT_ROOT / "README.md").read_text()
    for backbone in TORCHVISION_FILES:
        assert weights_url(backbone) in readme, backbone
    with pytest.raises(SpgnetError, match="backbone 'resnet19'"):
        weights_file_name("resnet19")


# --------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------


def test_each_stage_loads_every_encoder_tensor_from_its_own_backbone_file(tmp_path):
    r18 = fabricate(tmp_path, "resnet18", seed=1)
    r50 = fabricate(tmp_path, "resnet50", seed=2)
    model = build_model_from_config(ModelConfig(backbones=("resnet18", "resnet50"), norm="batchnorm",
                                                pretrained=str(tmp_path)))
    first, second = (stage.encoder for stage in model.stages)
    # the first stage has the stem; the second starts at layer1 (Fig. 2a)
    assert assert_filled(first, r18) == tensors(r18)
    assert assert_filled(second, r50) == tensors(r50, unused=("conv1.", "bn1."))


def test_a_resnet50_file_under_resnet18s_name_fails_naming_the_file_and_key(tmp_path):
    fabricate(tmp_path, "resnet50", seed=0, name=TORCHVISION_FILES["resnet18"])
    with pytest.raises(SpgnetError) as caught:
        build_model_from_config(ModelConfig(backbones=("resnet18", "resnet18"), norm="batchnorm", pretrained=str(tmp_path)))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'resnet18-f37072fd.pth'}: not torchvision's resnet18 ImageNet file: ")
    assert "'layer1.0.conv1.weight' is (64, 64, 1, 1) in the file, (64, 64, 3, 3) in the model" in message
    assert "\n" not in message


def test_a_deeper_network_of_the_same_family_is_refused_too(tmp_path):
    """A ResNet-101 file holds every ResNet-50 tensor with the right shape: its extra blocks must fail."""
    from spgnet.models.backbone import ResNetEncoder, load_imagenet_weights
    from spgnet.models.norm import norm_act

    fabricate(tmp_path, "resnet101", seed=0, name=TORCHVISION_FILES["resnet50"])
    encoder = ResNetEncoder("resnet50", norm_act("batchnorm"), stem=False)
    with pytest.raises(SpgnetError, match=r"resnet50-0676ba61.pth: not torchvision's resnet50 ImageNet file: "
                                          r"tensor 'layer3.6.conv1.weight' has no place in the model"):
        load_imagenet_weights(encoder, tmp_path)
    torch.save({k: v for k, v in torchvision.models.resnet50().state_dict().items() if k != "layer4.2.bn3.running_var"},
               tmp_path / TORCHVISION_FILES["resnet50"])
    with pytest.raises(SpgnetError, match="no tensor 'layer4.2.bn3.running_var'"):
        load_imagenet_weights(encoder, tmp_path)


def test_a_missing_file_names_the_file(tmp_path):
    with pytest.raises(SpgnetError, match=re.escape(f"{tmp_path / 'resnet18-f37072fd.pth'}: ImageNet checkpoint not found")):
        build_model_from_config(ModelConfig(norm="batchnorm", pretrained=str(tmp_path)))


def test_the_competitors_load_their_backbone_file_except_the_layers_their_papers_add(tmp_path):
    from spgnet.models.peers.backbones import DenseNetBackbone, ResNetBackbone, load_pretrained
    from spgnet.models.norm import norm_act

    r101 = fabricate(tmp_path, "resnet101", seed=3)
    pspnet = build_model_from_config(ModelConfig(arch="pspnet", backbones=("resnet101",), norm="batchnorm",
                                                 pretrained=str(tmp_path)))
    new = ("conv1.", "bn1.", "layer1.0.conv1.", "layer1.0.downsample.0.")  # the deep stem and what it feeds
    assert pspnet.backbone.imagenet_skip == new
    assert assert_filled(pspnet.backbone, r101, skip=new) == tensors(r101, unused=new)
    assert not torch.equal(pspnet.backbone.layer1[0].downsample[0].weight[:, :64], r101["layer1.0.downsample.0.weight"])
    danet = build_model_from_config(ModelConfig(arch="danet", backbones=("resnet101",), norm="batchnorm",
                                                pretrained=str(tmp_path)))
    assert assert_filled(danet.backbone, r101) == tensors(r101)

    d161 = fabricate(tmp_path, "densenet161", seed=4, old_densenet_names=True)
    densenet = DenseNetBackbone("densenet161", norm_act("batchnorm"), pretrained=str(tmp_path))
    assert assert_filled(densenet, d161, skip=("features.transition4.", "features.norm5.")) == tensors(
        d161, unused=("features.norm5.",))

    # a file missing one tensor of the competitor's backbone does not load
    torch.save({k: v for k, v in r101.items() if k != "layer2.1.conv2.weight"}, tmp_path / TORCHVISION_FILES["resnet101"])
    with pytest.raises(SpgnetError, match="resnet101-63fe2227.pth: not torchvision's resnet101 ImageNet file: "
                                          "no tensor 'layer2.1.conv2.weight'"):
        ResNetBackbone("resnet101", norm_act("batchnorm"), dilated=True, deep_stem=True, pretrained=str(tmp_path))
    assert load_pretrained(torch.nn.Linear(1, 1), None) == []


# --------------------------------------------------------------------------------------------
# Configuration: the profile's weights_root, kept out of the config hash
# --------------------------------------------------------------------------------------------


def test_weights_root_reaches_the_model_but_not_the_config_hash(tmp_path):
    paper = load_profile("paper", data_root="/d")
    assert paper.weights_root == str(Path("~/.cache/torch/hub/checkpoints").expanduser())
    assert load_profile("mini").weights_root is None and load_profile("smoke").weights_root is None
    cfg = resolve("t6-r18-r50", paper)
    assert cfg.model.pretrained == paper.weights_root
    moved = dataclasses.replace(cfg.model, pretrained=str(tmp_path))
    random = dataclasses.replace(cfg.model, pretrained=None)
    assert config_hash(moved, cfg.train) == config_hash(cfg.model, cfg.train)
    assert config_hash(random, cfg.train) != config_hash(cfg.model, cfg.train)
    assert model_backbones(cfg.model) == ("resnet18", "resnet50")


def test_spgnet_train_weights_root_replaces_the_profiles(tmp_path, monkeypatch):
    import spgnet.engine.train.loop as train_module
    from spgnet.cli import main

    seen = []
    monkeypatch.setattr(train_module, "train", lambda cfg, out, **kwargs: seen.append(cfg))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "t6-r18-r50", "--profile", "mini", "--out", "run", "--weights-root", "imagenet"]) == 0
    assert main(["train", "t6-r18-r50", "--profile", "mini", "--out", "run"]) == 0
    assert [cfg.model.pretrained for cfg in seen] == [str(tmp_path / "imagenet"), None]


# --------------------------------------------------------------------------------------------
# What a run records
# --------------------------------------------------------------------------------------------


class _Pixels(torch.nn.Module):
    """A one-stage stand-in network (the model is given to train(); only the record is under test)."""

    def __init__(self, classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, classes, 1)

    def forward(self, x):
        return {"out": self.conv(x), "aux": []}


class _Crops(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        g = torch.Generator().manual_seed(int(index))
        return {"image": torch.randn(3, 8, 8, generator=g), "label": torch.randint(0, 19, (8, 8), generator=g)}


def test_train_metrics_record_each_backbones_file_and_sha256(tmp_path, monkeypatch):
    from tests.helpers_train import train_with

    monkeypatch.setenv("SPGNET_TRACKING", "0")

    root = tmp_path / "imagenet"
    fabricate(root, "resnet18", seed=0)
    fabricate(root, "resnet50", seed=1)
    cfg = resolve("t6-r18-r50", "mini", model={"pretrained": str(root)},
                  train={"iterations": 1, "batch_size": 2, "workers": 0, "device": "cpu", "amp": False})
    train_with(cfg, tmp_path / "run", model=_Pixels(19), dataset=_Crops())
    record = json.loads((tmp_path / "run" / "train_metrics.json").read_text())["pretrained"]
    assert record["source"] == "imagenet" and record["path"] == str(root)
    assert list(record["files"]) == ["resnet18", "resnet50"]
    for backbone, entry in record["files"].items():
        path = root / TORCHVISION_FILES[backbone]
        assert entry["file"] == path.name and entry["path"] == str(path) and entry["url"] == weights_url(backbone)
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["published_hash"] is False  # fabricated: not the bytes torchvision publishes
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["pretrained"] == record


# --------------------------------------------------------------------------------------------
# spgnet weights check
# --------------------------------------------------------------------------------------------


def test_weights_check_lists_present_missing_and_wrong_files(tmp_path, capsys):
    from spgnet.cli import main

    needs = plan_backbones(make_plan("smoke"))
    assert set(needs) == {"resnet18", "resnet50", "resnet101"}
    fabricate(tmp_path, "resnet18", seed=0)
    fabricate(tmp_path, "resnet50", seed=0, name=TORCHVISION_FILES["resnet101"])  # wrong network
    assert main(["weights", "check", "--profile", "smoke", "--weights-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    digest = hashlib.sha256((tmp_path / TORCHVISION_FILES["resnet18"]).read_bytes()).hexdigest()
    assert re.search(rf"resnet18-f37072fd\.pth\s+present .*sha256 {digest} \(not the published file", lines["resnet18"])
    assert re.search(r"resnet50-0676ba61\.pth\s+missing .*download https://download\.pytorch\.org/models/resnet50-0676ba61\.pth",
                     lines["resnet50"])
    assert re.search(r"resnet101-63fe2227\.pth\s+wrong .*no tensor 'layer3\.6\.conv1\.weight'", lines["resnet101"])
    assert "2 of 3 ImageNet files missing or wrong" in out

    (tmp_path / TORCHVISION_FILES["resnet101"]).write_bytes(b"not a checkpoint")
    fabricate(tmp_path, "resnet50", seed=0)
    assert main(["weights", "check", "--profile", "smoke", "--weights-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"resnet101-63fe2227\.pth\s+wrong .*not a readable torch checkpoint", out)

    fabricate(tmp_path, "resnet101", seed=0)
    assert main(["weights", "check", "--profile", "smoke", "--weights-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count(" present ") == 3

    assert main(["weights", "check", "--profile", "smoke"]) == 2  # smoke trains from random weights
    assert "has no weights_root" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The workflow's start check
# --------------------------------------------------------------------------------------------


def _snakemake(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["snakemake", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_a_missing_weights_file_stops_the_workflow_before_any_job(tmp_path):
    data = tmp_path / "data"
    for folder in ("cityscapes", "VOCdevkit/VOC2012", "person_part"):
        (data / folder).mkdir(parents=True)
    weights = tmp_path / "imagenet"
    weights.mkdir()
    for backbone, name in TORCHVISION_FILES.items():
        if backbone != "resnet152":
            (weights / name).touch()  # the start check looks for the files; reading them is weights check's job
    result = _snakemake("-n", "--cores", "1", "reproduce_all", "--config", "profile=paper", f"data_root={data}",
                        f"weights_root={weights}")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "config error" in line]
    assert len(errors) == 1, result.stderr[-1500:]
    assert (f"config: key 'weights_root': {weights / 'resnet152-394f9c45.pth'} is missing (ImageNet weights of resnet152, "
            "needed by t7-r152-1stage): download https://download.pytorch.org/models/resnet152-394f9c45.pth") in errors[0]
    assert "Job stats" not in result.stdout and "rule train" not in result.stdout

    (weights / TORCHVISION_FILES["resnet152"]).touch()
    result = _snakemake("-n", "-p", "--forceall", "--cores", "1", "table7", "--config", "profile=paper",
                        f"data_root={data}", f"weights_root={weights}")
    assert result.returncode == 0, result.stderr[-2000:]
    trainings = re.findall(r"spgnet train \S+ .*", result.stdout)
    assert trainings and all(f"--weights-root {weights} " in line for line in trainings)
