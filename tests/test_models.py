"""SPGNet and its variants: shapes, gradients, the link maths, errors, weights loading."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

import spgnet
from spgnet.config import ModelConfig
from spgnet.errors import SpgnetError
from spgnet.models import SPGNet, build_model_from_config
from spgnet.models.decoder import GlobalContext
from spgnet.models.guidance import LINKS, StageLink
from spgnet.models.norm import norm_act, usable_norm

SMALL = (2, 3, 64, 96)

VARIANTS = {
    "1 stage": dict(backbones=("resnet18",), link="none"),
    "plain": dict(backbones=("resnet18", "resnet18"), link="none"),
    **{link: dict(backbones=("resnet18", "resnet18"), link=link) for link in LINKS if link != "none"},
    "no identity": dict(backbones=("resnet18", "resnet18"), link="spg_sigmoid", identity=False),
    "no csfa": dict(backbones=("resnet18", "resnet18"), link="spg_sigmoid", csfa=False),
    "3 stages": dict(backbones=("resnet18",) * 3, link="spg_sigmoid"),
    "r18+r50": dict(backbones=("resnet18", "resnet50"), link="spg_sigmoid"),
    "r50+r18 D256": dict(backbones=("resnet50", "resnet18"), link="spg_sigmoid", channels=256),
    "no gap": dict(backbones=("resnet18",), link="none", gap=False),
    "fpn": dict(backbones=("resnet18",), link="none", gap=False, decoder="fpn"),
}


def _model(norm: str = "batchnorm", **settings) -> SPGNet:
    torch.manual_seed(0)
    return build_model_from_config(ModelConfig(norm=norm, num_classes=5, **settings))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_shapes_and_gradients(variant):
    settings = VARIANTS[variant]
    model = _model(**settings).train()
    x = torch.randn(*SMALL)
    result = model(x, return_attention=True)
    stages = len(settings["backbones"])
    assert result["out"].shape == (2, 5, 64, 96)
    assert [a.shape for a in result["aux"]] == [(2, 5, 64, 96)] * (stages - 1)
    links_with_mask = 0 if settings["link"] == "none" else stages - 1
    assert len(result["attention"]) == links_with_mask
    loss = result["out"].logsumexp(1).mean() + sum(a.logsumexp(1).mean() for a in result["aux"])
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    if settings["link"] == "ge":
        assert missing == []  # GE-theta-minus has no parameters of its own
    assert missing == [], f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("norm", ["abn", "inplace_abn", "batchnorm"])
def test_every_norm_layer_trains_on_cpu(norm):
    model = _model(norm=norm, backbones=("resnet18", "resnet18"), link="spg_sigmoid").train()
    out = model(torch.randn(*SMALL))["out"]
    out.mean().backward()
    assert torch.isfinite(model.stages[0].encoder.conv1.weight.grad).all()


def test_inplace_abn_sync_is_built_as_inplace_abn_without_a_misleading_warning(recwarn):
    """One process has nothing to synchronise; under torchrun on CPU spgnet train converts the
    layers to InPlaceABNSync itself (and logs it): no "needs CUDA" warning that says otherwise."""
    assert usable_norm("inplace_abn_sync", "cpu") == "inplace_abn"
    assert usable_norm("inplace_abn_sync", "cuda") == "inplace_abn"  # no process group
    assert usable_norm("inplace_abn_sync", "meta") == "abn"
    assert not [w for w in recwarn if "inplace_abn" in str(w.message)]


def test_norm_layers_share_state_dict_keys():
    keys = {name: set(norm_act(name)(8).state_dict()) for name in ("abn", "inplace_abn", "batchnorm")}
    common = {"weight", "bias", "running_mean", "running_var"}
    assert all(common <= k for k in keys.values())


def test_spg_sigmoid_matches_the_formula():
    torch.manual_seed(0)
    link = StageLink("spg_sigmoid", 8, 3, norm_act("batchnorm")).eval()
    x_d, x_l = torch.randn(1, 8, 5, 6), torch.randn(1, 3, 5, 6)
    out, mask = link(x_d, x_l)
    expected_mask = torch.sigmoid(link.attention_conv(x_l))
    torch.testing.assert_close(mask, expected_mask)
    torch.testing.assert_close(out, expected_mask * link.transform(x_d) + x_d)


def test_spg_without_identity_drops_the_residual():
    torch.manual_seed(0)
    link = StageLink("spg_sigmoid", 8, 3, norm_act("batchnorm"), identity=False).eval()
    x_d, x_l = torch.randn(1, 8, 5, 6), torch.randn(1, 3, 5, 6)
    out, mask = link(x_d, x_l)
    torch.testing.assert_close(out, mask * link.transform(x_d))


def test_spg_softmax_normalises_over_positions():
    torch.manual_seed(0)
    link = StageLink("spg_softmax", 8, 3, norm_act("batchnorm")).eval()
    _, mask = link(torch.randn(2, 8, 5, 6), torch.randn(2, 3, 5, 6))
    sums = mask.sum(dim=(2, 3))
    torch.testing.assert_close(sums, torch.ones_like(sums))
    assert not torch.allclose(mask.sum(dim=1), torch.ones(2, 5, 6))


def test_se_and_ge_gates_are_constant_over_positions():
    torch.manual_seed(0)
    for link_name in ("se", "ge"):
        link = StageLink(link_name, 32, 3, norm_act("batchnorm")).eval()
        _, mask = link(torch.randn(2, 32, 5, 6), torch.randn(2, 3, 5, 6))
        assert mask.shape == (2, 32, 1, 1)
        assert ((mask > 0) & (mask < 1)).all()


def test_ap_pooling_keeps_the_feature_size_and_equals_gap_when_the_kernel_covers_it():
    torch.manual_seed(0)
    context = GlobalContext(16, 8, norm_act("batchnorm")).eval()
    x = torch.randn(1, 16, 7, 11)
    gap = context(x)
    context.set_test_pooling("AP", 4)
    ap = context(x)
    assert gap.shape == (1, 8, 1, 1) and ap.shape == (1, 8, 7, 11)
    context.set_test_pooling("AP", 50)
    torch.testing.assert_close(context(x), gap.expand(1, 8, 7, 11))


def test_model_runs_on_a_tile_and_in_ap_mode():
    model = _model(backbones=("resnet18",), link="none").eval()
    with torch.no_grad():
        model.set_test_pooling("AP", 2)
        assert model(torch.randn(1, 3, 97, 193))["out"].shape == (1, 5, 97, 193)
        model.set_test_pooling("GAP")
        assert model(torch.randn(1, 3, 65, 65))["out"].shape == (1, 5, 65, 65)


def test_build_model_by_experiment_name_with_overrides():
    model = spgnet.build_model("t3-spg-softmax", norm="batchnorm", num_classes=7)
    assert isinstance(model, SPGNet)
    assert model.cfg.link == "spg_softmax" and model.cfg.num_classes == 7
    assert len(model.stages) == 2 and model.stages[1].classifier.out_channels == 7


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: spgnet.build_model("t3-nonexistent"), "unknown experiment 't3-nonexistent' (valid names: t3-1stage"),
        (lambda: spgnet.build_model("t3-1stage", backbones=["resnet19"]), "unknown backbone 'resnet19' (valid: resnet18"),
        (lambda: spgnet.build_model("t3-plain", link="spg_tanh"), "unknown stage link 'spg_tanh' (valid: none, spg_sum"),
        (lambda: spgnet.build_model("t3-1stage", norm="groupnorm"), "unknown norm layer 'groupnorm' (valid: inplace_abn_sync"),
        (lambda: spgnet.build_model("t3-1stage", decoder="unet"), "unknown decoder 'unet' (valid: upsample, fpn)"),
        (lambda: spgnet.build_model("t3-1stage", colour="red"), "unknown model setting 'colour'"),
        (lambda: spgnet.build_model("t3-1stage", arch="segformer"), "unknown architecture 'segformer' (valid: spgnet"),
        (lambda: spgnet.build_model("t1-refinenet"), "cites from another work"),
    ],
)
def test_bad_names_fail_with_one_line_listing_valid_names(call, fragment):
    with pytest.raises(SpgnetError) as info:
        call()
    message = str(info.value)
    assert fragment in message and "\n" not in message


def test_cli_reports_an_unknown_experiment_on_one_line(capsys):
    from spgnet.cli import main

    assert main(["profile", "t3-typo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spgnet profile: error: unknown experiment 't3-typo' (valid names:") and "\n" not in err


def test_imagenet_weights_load_from_a_torchvision_checkpoint(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)
    model = build_model_from_config(ModelConfig(backbones=("resnet18", "resnet18"), link="spg_sigmoid",
                                                norm="batchnorm", pretrained=str(tmp_path)))
    for stage in model.stages:
        torch.testing.assert_close(stage.encoder.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
        torch.testing.assert_close(stage.encoder.layer2[0].bn1.running_var, reference.layer2[0].bn1.running_var)
    torch.testing.assert_close(model.stages[0].encoder.conv1.weight, reference.conv1.weight)


def test_a_missing_imagenet_checkpoint_is_a_clear_error(tmp_path):
    cfg = ModelConfig(norm="batchnorm", pretrained=str(tmp_path / "nope"))
    with pytest.raises(SpgnetError, match="nope/resnet18-f37072fd.pth: ImageNet checkpoint not found"):
        build_model_from_config(cfg)


def test_imagenet_reader_unwraps_and_rejects_what_is_not_a_state_dict(tmp_path):
    from spgnet.models.backbone import ResNetEncoder, load_imagenet_weights

    torch.manual_seed(2)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"model": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    encoder = ResNetEncoder("resnet18", norm_act("batchnorm"), stem=False)
    assert load_imagenet_weights(encoder, tmp_path) == path  # the file's stem and fc go unused
    torch.testing.assert_close(encoder.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    torch.save([1, 2], path)
    with pytest.raises(SpgnetError, match="resnet18-f37072fd.pth: not a state dict"):
        load_imagenet_weights(encoder, tmp_path)
    torch.save({"classifier.weight": torch.zeros(2)}, path)
    with pytest.raises(SpgnetError, match=r"not torchvision's resnet18 ImageNet file: no tensor 'layer1.0.conv1.weight'"):
        load_imagenet_weights(encoder, tmp_path)
    path.write_bytes(b"junk")
    with pytest.raises(SpgnetError, match="resnet18-f37072fd.pth: not a readable torch checkpoint"):
        load_imagenet_weights(encoder, tmp_path)


def test_registry_models_build_for_every_reproducible_spgnet_row():
    """Every SPGNet row's model section is valid (built on meta: no memory, no time)."""
    from spgnet.config import load_registry

    built = 0
    for experiment in load_registry().values():
        if experiment.reproducible and experiment.model.arch == "spgnet":
            with torch.device("meta"):
                build_model_from_config(dataclasses.replace(experiment.model, norm="abn"), device="meta")
            built += 1
    assert built >= 40


# ---------------------------------------------------------------- one value per channel (GAP branch)


def test_sync_norm_is_inplace_abns_layer_with_the_same_state():
    import inplace_abn

    from spgnet.models import norm as norm_module

    layer = norm_act("inplace_abn_sync")(8)
    assert isinstance(layer, inplace_abn.InPlaceABNSync) and type(layer).__name__ == "InPlaceABNSync"
    assert type(layer) is norm_module.InPlaceABNSync
    assert layer.state_dict().keys() == inplace_abn.InPlaceABN(8).state_dict().keys()
    assert sum(p.numel() for p in layer.parameters()) == 16


def test_sync_norm_over_one_process_still_refuses_one_value_per_channel():
    """No process group (or a group of one): the merged statistics would be of one value."""
    layer = norm_act("inplace_abn_sync")(4).train()
    with pytest.raises(ValueError, match="single sample per channel"):
        layer(torch.randn(1, 4, 1, 1))
    layer(torch.randn(2, 4, 1, 1))  # two values: fine


@pytest.mark.parametrize("norm", ["batchnorm", "inplace_abn"])
def test_gap_branch_at_one_crop_raises_unless_running_statistics_are_asked_for(norm):
    """One crop on one process: the GAP branch's norm has one value per channel. Batch statistics
    do not exist, so training raises (as torchvision's ASPPPooling does); the explicit opt-out
    used by the memory benchmark makes those calls use the running statistics."""
    from spgnet.models.norm import single_value_norms_use_running_stats

    model = _model(norm, backbones=("resnet18",), link="none").train()
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="per channel"):
        model(x)
    hit = single_value_norms_use_running_stats(model)
    context_norm = model.stages[0].decoder.context.conv[1]
    before = context_norm.running_mean.clone()
    model(x)["out"].sum().backward()
    assert hit == {id(context_norm)}
    assert torch.equal(context_norm.running_mean, before)  # used, not updated
    assert all(m.training for m in model.modules())
    assert context_norm.weight.grad is not None


def test_memory_benchmark_uses_the_models_single_value_fallback():
    from spgnet.analysis import memory

    model = _model("batchnorm", backbones=("resnet18",), link="none").train()
    assert memory._allow_single_value_norms(model) == set()
    model(torch.randn(1, 3, 64, 64))  # no error
