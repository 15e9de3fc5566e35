"""ImageNet BatchNorm weights under Inplace-ABN (spgnet.models.pretrained.fit_to_abs_weight_norms,
docs/imagenet-init.md): a torchvision file loaded into an encoder built with ``inplace_abn`` gives
the network it gives under ``abn`` / ``batchnorm``, whose layers scale by ``weight`` where
Inplace-ABN scales by ``|weight| + eps``.

The files are fabricated in torchvision's format with what real ImageNet files have and the
default initialisation lacks: gammas of both signs (N(0, 1)), nonzero running means and running
variances other than 1, nonzero betas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from spgnet.config import ModelConfig, resolve
from spgnet.errors import SpgnetError
from spgnet.models import build_model_from_config
from spgnet.models.backbone import ResNetEncoder, load_imagenet_weights
from spgnet.models.norm import norm_act
from spgnet.models.peers.backbones import DenseNetBackbone
from spgnet.models.pretrained import NormConversion, fit_to_abs_weight_norms
from spgnet.models.weights import fabricate_weights_file, weights_file_name

TOLERANCE = 1e-5  # max|a - b| / max|b|


def fabricate(root: Path, backbone: str, seed: int) -> dict:
    """torchvision's ``backbone`` with ImageNet-like norm tensors, saved under its file name
    (:func:`spgnet.models.weights.fabricate_weights_file`); returns the saved state."""
    return torch.load(fabricate_weights_file(root, backbone, seed), weights_only=True)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def weights_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    for seed, backbone in enumerate(("resnet18", "resnet50", "resnet101", "resnet152", "densenet161")):
        fabricate(root, backbone, seed)
    return root


def imagenet_part_output(densenet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output of dense block 4, the last layer from the ImageNet file: DenseASPP's transition4 and
    norm5 after it are new, and a fresh Inplace-ABN scales by 1 + eps where ABN scales by 1."""
    seen = []
    handle = densenet.features.denseblock4.register_forward_hook(lambda m, i, out: seen.append(out.clone()))
    try:
        with torch.no_grad():
            densenet(x.clone())
    finally:
        handle.remove()
    return seen[0]


def encoder_outputs(backbone: str, norm: str, root: Path, x: torch.Tensor, stem: bool = True, train: bool = False):
    encoder = ResNetEncoder(backbone, norm_act(norm), stem=stem)
    load_imagenet_weights(encoder, root)
    encoder.train(train)
    with torch.no_grad():
        return encoder(x.clone()), encoder


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "resnet101", "resnet152"])
def test_a_resnet_file_gives_the_same_encoder_under_inplace_abn_as_under_abn(backbone, weights_root):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    reference, _ = encoder_outputs(backbone, "abn", weights_root, x)
    batchnorm, _ = encoder_outputs(backbone, "batchnorm", weights_root, x)
    inplace, encoder = encoder_outputs(backbone, "inplace_abn", weights_root, x)
    for level in range(4):
        assert relative_difference(batchnorm[level], reference[level]) <= TOLERANCE
        assert relative_difference(inplace[level], reference[level]) <= TOLERANCE, (backbone, level)
    done = encoder.imagenet_init
    assert done["file"] == weights_file_name(backbone)
    assert done["sign_to_conv"] > 0.3 * done["channels"] and done["sign_to_input"] == 0


def test_the_comparison_sees_a_plain_copy_of_the_gammas(weights_root, monkeypatch):
    """The test above fails on a loader that copies gammas unchanged (the loader before the fix)."""
    import spgnet.models.pretrained as pretrained

    monkeypatch.setattr(pretrained, "fit_to_abs_weight_norms", lambda *args, **kwargs: NormConversion())
    x = torch.randn(2, 3, 64, 64)
    reference, _ = encoder_outputs("resnet18", "abn", weights_root, x)
    copied, _ = encoder_outputs("resnet18", "inplace_abn", weights_root, x)
    assert relative_difference(copied[-1], reference[-1]) > 0.1


def test_a_later_stage_without_stem_and_training_mode_statistics_agree_too(weights_root):
    """A stage after the first starts at layer1 (64 channels in); batch statistics negate with the
    moved sign, so the equality holds in training mode as well."""
    torch.manual_seed(1)
    x = torch.randn(2, 64, 32, 32)
    reference, _ = encoder_outputs("resnet50", "abn", weights_root, x, stem=False)
    inplace, encoder = encoder_outputs("resnet50", "inplace_abn", weights_root, x, stem=False)
    assert relative_difference(inplace[-1], reference[-1]) <= TOLERANCE
    assert "bn1" not in dict(encoder.named_children())
    x = torch.randn(2, 3, 64, 64)
    reference, _ = encoder_outputs("resnet18", "abn", weights_root, x, train=True)
    inplace, _ = encoder_outputs("resnet18", "inplace_abn", weights_root, x, train=True)
    assert relative_difference(inplace[-1], reference[-1]) <= TOLERANCE


def test_densenet161_moves_the_sign_of_concatenation_fed_norms_into_their_input(weights_root):
    torch.manual_seed(2)
    x = torch.randn(1, 3, 64, 64)
    outputs, modules = {}, {}
    for norm in ("abn", "inplace_abn"):
        modules[norm] = DenseNetBackbone("densenet161", norm_act(norm), pretrained=str(weights_root)).eval()
        outputs[norm] = imagenet_part_output(modules[norm], x)
    assert relative_difference(outputs["inplace_abn"], outputs["abn"]) <= TOLERANCE
    done = modules["inplace_abn"].imagenet_init
    assert done["sign_to_input"] > 0 and done["sign_to_conv"] > 0
    signs = modules["inplace_abn"].features.denseblock1.denselayer1.norm1.input_sign
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert modules["abn"].features.denseblock1.denselayer1.norm1.input_sign.eq(1).all()


@pytest.mark.parametrize("arch", ["pspnet", "danet", "duc_hdc", "bisenet", "dfn", "denseaspp"])
def test_every_table1_peer_backbone_is_the_same_network_under_both_norms(arch, weights_root):
    backbone = "densenet161" if arch == "denseaspp" else "resnet101"
    x = torch.randn(1, 3, 64, 64)
    outputs = {}
    for norm in ("abn", "inplace_abn"):
        torch.manual_seed(4)  # the layers the peer's paper adds start alike under both norms
        model = build_model_from_config(ModelConfig(arch=arch, backbones=(backbone,), norm=norm,
                                                    num_classes=19, pretrained=str(weights_root)))
        model.backbone.eval()
        if arch == "denseaspp":
            outputs[norm] = imagenet_part_output(model.backbone, x)
            continue
        with torch.no_grad():
            outputs[norm] = model.backbone(x.clone())[-1]
    assert relative_difference(outputs["inplace_abn"], outputs["abn"]) <= TOLERANCE, arch


def test_gammas_below_eps_are_counted_and_the_error_stays_within_eps(tmp_path):
    state = fabricate(tmp_path, "resnet18", seed=5)
    state["layer1.0.bn1.weight"][:3] = torch.tensor([0.0, 4e-6, -2e-6])
    torch.save(state, tmp_path / weights_file_name("resnet18"))
    x = torch.randn(2, 3, 64, 64)
    reference, _ = encoder_outputs("resnet18", "abn", tmp_path, x)
    inplace, encoder = encoder_outputs("resnet18", "inplace_abn", tmp_path, x)
    assert encoder.imagenet_init["below_eps"] == 3
    assert encoder.layer1[0].bn1.weight[:3].eq(0).all()  # |w| + eps == eps there
    assert relative_difference(inplace[-1], reference[-1]) <= TOLERANCE


def test_a_negative_gamma_with_nowhere_to_go_is_named():
    class TwoConvsIntoOneNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
            self.norm = norm_act("inplace_abn")(4)

        def forward(self, x):
            return self.norm(self.a(x) + self.b(x))

    module = TwoConvsIntoOneNorm()
    with torch.no_grad():
        module.norm.weight.copy_(torch.tensor([1.0, -1.0, 2.0, -0.5]))
    with pytest.raises(SpgnetError, match=r"^f\.pth: 'norm' has 2 negative gammas and neither a convolution"):
        fit_to_abs_weight_norms(module, source="f.pth")


def test_the_sync_conversion_keeps_the_input_sign(weights_root):
    from spgnet.engine.train.distributed import convert_inplace_abn_sync

    model = DenseNetBackbone("densenet161", norm_act("inplace_abn"), pretrained=str(weights_root)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x.clone())
        synced = convert_inplace_abn_sync(model).eval()
        after = synced(x.clone())
    norm = synced.features.denseblock2.denselayer3.norm1
    assert type(norm).__name__ == "InPlaceABNSync" and (norm.input_sign < 0).any()
    assert relative_difference(after, before) <= TOLERANCE


def test_the_run_records_per_file_how_many_channels_were_converted(tmp_path, monkeypatch):
    from tests.helpers_train import train_with

    monkeypatch.setenv("SPGNET_TRACKING", "0")
    root = tmp_path / "imagenet"
    files = {b: fabricate(root, b, seed) for seed, b in enumerate(("resnet18", "resnet50"))}
    cfg = resolve("t6-r18-r50", "mini", model={"pretrained": str(root), "norm": "inplace_abn"},
                  train={"iterations": 1, "batch_size": 2, "workers": 0, "device": "cpu", "amp": False,
                         "crop": 64})

    class Crops(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, key):
            g = torch.Generator().manual_seed(int(key[0] if isinstance(key, tuple) else key))
            return {"image": torch.randn(3, 64, 64, generator=g), "label": torch.randint(0, 19, (64, 64), generator=g)}

    train_with(cfg, tmp_path / "run", dataset=Crops())
    record = json.loads((tmp_path / "run" / "train_metrics.json").read_text())["pretrained"]["files"]

    def negatives(state, skip=()):
        return sum(int((v < 0).sum()) for k, v in state.items()
                   if k.endswith(".weight") and v.dim() == 1 and not k.startswith(("fc.", *skip)))

    # stage 1 reads resnet18 with its stem, stage 2 resnet50 without (bn1 is not loaded there)
    assert record["resnet18"]["norm_conversion"]["sign_to_conv"] == negatives(files["resnet18"])
    assert record["resnet50"]["norm_conversion"]["sign_to_conv"] == negatives(files["resnet50"], skip=("bn1.",))
    assert record["resnet50"]["norm_conversion"]["sign_to_input"] == 0
    assert record["resnet18"]["sha256"] and record["resnet50"]["norm_conversion"]["norm_layers"] == 52
