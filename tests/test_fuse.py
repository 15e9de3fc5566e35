"""Folding normalisations into convolutions for inference (spgnet.models.fuse) and its use by
spgnet.engine.evaluation.inference.infer_probs: same outputs as the eval-mode model, every foldable pair found,
nothing folded that must not be."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spgnet.config import ModelConfig
from spgnet.engine.evaluation.inference import inference_model, infer_probs
from spgnet.models import build_model_from_config
from spgnet.models.fuse import Activation, conv_norm_pairs, fold_conv_norm, fuse_for_inference, norm_folding
from spgnet.models.norm import norm_act

SPGNET_VARIANTS = {
    "1 stage": dict(backbones=("resnet18",), link="none"),
    "2 stages spg": dict(backbones=("resnet18", "resnet18"), link="spg_sigmoid"),
    "3 stages": dict(backbones=("resnet18",) * 3, link="spg_sigmoid"),
    "r50 + se": dict(backbones=("resnet50", "resnet18"), link="se", channels=64),
    "no gap": dict(backbones=("resnet18",), link="none", gap=False),
    "fpn": dict(backbones=("resnet18",), link="none", gap=False, decoder="fpn"),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if norm_folding(m) is not None or getattr(m, "running_var", None) is not None]


def randomise_norms(model: nn.Module, seed: int = 1) -> nn.Module:
    """Running statistics and affine parameters far from the identity (negative weights too, which
    inplace-abn's in-place layers use as |w| + eps)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "running_var", None) is None:
                continue
            c = m.running_var.numel()
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            if getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.randn(c, generator=g) * 0.5 + 0.8)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return model


def _spgnet(norm: str, **settings) -> nn.Module:
    torch.manual_seed(0)
    model = build_model_from_config(ModelConfig(norm=norm, num_classes=5, **settings))
    return randomise_norms(model).eval()


def _outputs(output) -> list[torch.Tensor]:
    if isinstance(output, dict):
        return [output["out"], *output.get("aux", [])]
    return [output]


def _assert_same(model, fused, x, rel: float = 1e-4):
    with torch.no_grad():
        expected, got = _outputs(model(x)), _outputs(fused(x))
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, atol=rel * max(1.0, float(a.abs().max())), rtol=rel)


@pytest.mark.parametrize("variant", list(SPGNET_VARIANTS))
@pytest.mark.parametrize("norm", ["batchnorm", "abn", "inplace_abn"])
def test_spgnet_variants_fold_every_norm_and_keep_their_outputs(variant, norm):
    model = _spgnet(norm, **SPGNET_VARIANTS[variant])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    fused = fuse_for_inference(model)
    # every normalisation of SPGNet follows a convolution whose raw output nothing else reads
    assert fused.spgnet_folded_norms == len(_norms(model))
    assert not [m for m in fused.modules() if getattr(m, "running_var", None) is not None]
    _assert_same(model, fused, x)
    # the original is untouched
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, Activation) for m in fused.modules())


def test_spgnet_ap_pooling_and_attention_survive_folding():
    model = _spgnet("inplace_abn", backbones=("resnet18", "resnet18"), link="spg_sigmoid")
    fused = fuse_for_inference(model)
    x = torch.randn(1, 3, 96, 128)
    for m in (model, fused):
        m.set_test_pooling("AP", 2)
    _assert_same(model, fused, x)
    with torch.no_grad():
        a, b = model(x, return_attention=True)["attention"], fused(x, return_attention=True)["attention"]
    torch.testing.assert_close(b[0], a[0], atol=1e-5, rtol=1e-4)


def test_training_mode_is_restored_and_the_copy_is_in_eval_mode():
    model = _spgnet("batchnorm", backbones=("resnet18",), link="none").train()
    fused = fuse_for_inference(model)
    assert all(m.training for m in model.modules())
    assert not any(m.training for m in fused.modules())
    assert conv_norm_pairs(model)[0] == ("stages.0.encoder.conv1", "stages.0.encoder.bn1")
    assert all(m.training for m in model.modules())


def test_torchvision_deeplabv3_folds_every_batchnorm():
    from torchvision.models.segmentation import deeplabv3_resnet50

    torch.manual_seed(0)
    model = randomise_norms(deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=5, aux_loss=True)).eval()
    fused = fuse_for_inference(model, check=True)
    assert fused.spgnet_folded_norms == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    _assert_same(model, fused, torch.randn(1, 3, 64, 64))


def test_a_peer_model_folds_what_it_runs():
    from spgnet.models.peers import PEER_BUILDERS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model = PEER_BUILDERS["pspnet"](ModelConfig(arch="pspnet", backbones=("resnet50",), norm="inplace_abn",
                                                    num_classes=5), device="cpu")
    model = randomise_norms(model).eval()
    x = torch.randn(1, 3, 64, 64)
    fused = fuse_for_inference(model, x)
    assert fused.spgnet_folded_norms == len(_norms(model))
    _assert_same(model, fused, x)


# ---------------------------------------------------------------- what must not be folded


class ResidualReadsConv(nn.Module):
    """The convolution's raw output feeds the norm and a sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.bn3 = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y) + y  # y read twice: not foldable
        w = self.bn2(self.conv2(z))  # foldable
        return self.bn3(w + 1)  # norm not fed by a convolution


class Shared(nn.Module):
    """One convolution called twice, once before a norm and once not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x)


class ReadAfterNorm(nn.Module):
    """The raw convolution output is read after an out-of-place norm."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) * y.sigmoid()


class WeightStandardisedConv(nn.Conv2d):
    def forward(self, x):
        w = (self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True))
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


@pytest.mark.parametrize("cls, pairs", [
    (ResidualReadsConv, [("conv2", "bn2")]),
    (Shared, []),
    (ReadAfterNorm, []),
])
def test_only_exclusive_conv_norm_pairs_fold(cls, pairs):
    torch.manual_seed(0)
    model = randomise_norms(cls()).eval()
    assert conv_norm_pairs(model, torch.randn(1, 3, 8, 8)) == pairs
    fused = fuse_for_inference(model, torch.randn(1, 3, 8, 8))
    assert fused.spgnet_folded_norms == len(pairs)
    _assert_same(model, fused, torch.randn(2, 3, 8, 8))


def test_convolutions_with_their_own_forward_and_transposed_ones_are_left_alone():
    torch.manual_seed(0)
    model = randomise_norms(nn.Sequential(WeightStandardisedConv(3, 4, 3), nn.BatchNorm2d(4),
                                          nn.ConvTranspose2d(4, 4, 2, stride=2), nn.BatchNorm2d(4))).eval()
    assert conv_norm_pairs(model, torch.randn(1, 3, 8, 8)) == []


def test_norms_without_running_statistics_are_not_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    assert conv_norm_pairs(model, torch.randn(2, 3, 4, 4)) == []


@pytest.mark.parametrize("layer, activation", [
    ("ABN", "leaky_relu"), ("ABN", "relu"), ("ABN", "elu"), ("InPlaceABN", "elu"),
    ("InPlaceABN", "identity"), ("InPlaceABNSync", "leaky_relu"),
])
@pytest.mark.parametrize("affine", [True, False])
def test_every_inplace_abn_layer_and_activation(layer, activation, affine):
    import inplace_abn

    from spgnet.models import norm as norm_module

    cls = norm_module.InPlaceABNSync if layer == "InPlaceABNSync" else getattr(inplace_abn, layer)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, groups=3),
                          cls(6, affine=affine, activation=activation, activation_param=0.3))
    randomise_norms(model).eval()
    x = torch.randn(2, 3, 5, 5)
    fused = fuse_for_inference(model, x)
    assert fused.spgnet_folded_norms == 1
    assert isinstance(fused[1], nn.Identity if activation == "identity" else Activation)
    _assert_same(model, fused, x)


def test_fold_conv_norm_refuses_a_training_norm():
    conv, bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4).train()
    with pytest.raises(ValueError, match="cannot fold"):
        fold_conv_norm(conv, bn)


def test_frozen_batchnorm_and_conv1d_fold():
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    model = randomise_norms(nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4), nn.ReLU())).eval()
    _assert_same(model, fuse_for_inference(model, torch.randn(1, 3, 6, 6), check=True), torch.randn(2, 3, 6, 6))
    model1d = randomise_norms(nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4))).eval()
    fused = fuse_for_inference(model1d, torch.randn(1, 3, 9))
    assert fused.spgnet_folded_norms == 1
    _assert_same(model1d, fused, torch.randn(2, 3, 9))


# ---------------------------------------------------------------- infer_probs() uses it


def test_infer_probs_runs_the_folded_copy_and_refreshes_it_when_the_weights_change():
    model = _spgnet("abn", backbones=("resnet18",), link="none")
    image = torch.randn(3, 64, 96)
    folded = inference_model(model, image[None])
    assert folded is not model and folded.spgnet_folded_norms == len(_norms(model))
    assert inference_model(model) is folded  # cached
    # on CPU the copy (and infer_probs's input to it) is channels-last, what oneDNN's convolutions use
    assert folded.spgnet_memory_format == torch.channels_last
    conv = next(m for m in folded.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    for strategy in ("GAP", "AP", "TILED"):
        kwargs = dict(strategy=strategy, crop=65, scales=(1.0, 0.75), flip=True)
        torch.testing.assert_close(infer_probs(model, image, **kwargs), infer_probs(model, image, fuse=False, **kwargs),
                                   atol=1e-5, rtol=1e-4)
    state = randomise_norms(_spgnet("abn", backbones=("resnet18",), link="none"), seed=5).state_dict()
    model.load_state_dict(state)  # e.g. a checkpoint
    refreshed = inference_model(model)
    assert refreshed is not folded
    torch.testing.assert_close(infer_probs(model, image), infer_probs(model, image, fuse=False), atol=1e-5, rtol=1e-4)


def test_infer_probs_never_folds_a_training_model_nor_a_model_without_norms():
    model = _spgnet("batchnorm", backbones=("resnet18",), link="none").train()
    assert inference_model(model) is model
    plain = nn.Conv2d(3, 2, 1).eval()
    assert inference_model(plain, torch.randn(1, 3, 4, 4)) is plain


def test_norm_act_layers_report_their_folding():
    bn = norm_act("batchnorm")(4, activation="elu").eval()
    scale, shift, activation, param = norm_folding(bn)
    assert activation == "elu" and param == pytest.approx(0.01) and scale.shape == (4,)
    assert norm_folding(nn.ReLU()) is None


class ReadThroughProperty(nn.Module):
    """``y.data`` reads the raw convolution output; ``y.shape`` does not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 1)
        self.bn2 = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        assert y.shape[1] == 3
        z = self.bn(y) + y.data
        w = self.conv2(z)
        return self.bn2(w) if w.dim() == 4 else w


def test_metadata_reads_do_not_block_folding_but_value_reads_do():
    model = randomise_norms(ReadThroughProperty()).eval()
    assert conv_norm_pairs(model, torch.randn(1, 3, 4, 4)) == [("conv2", "bn2")]
