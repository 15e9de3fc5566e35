"""Backbones of Table 1's competitors, built from torchvision and modified as their papers say.

* :class:`ResNetBackbone` -- torchvision's ResNet-50/101/152 without ``fc``, optionally dilated to
  output stride 8 (``replace_stride_with_dilation=[False, True, True]``, as in the DeepLab family,
  PSPNet, DANet and DUC-HDC) and optionally with the "deep stem" of hszhao/semseg's and TorchSeg's
  ResNets (three 3x3 convs 3->64->64->128 instead of the 7x7 conv, so ``layer1`` takes 128
  channels). ``forward`` returns the outputs of ``layer1..layer4``.
* :class:`DenseNetBackbone` -- torchvision's DenseNet-161 at output stride 8 as in the official
  DenseASPP code (DeepMotionAIResearch/DenseASPP ``models/DenseASPP.py``): no pooling in
  transitions 2 and 3, dilation 2 in dense block 3 and 4 in dense block 4, and an extra transition
  after block 4 (2208 -> 1104 channels) followed by the final norm.

Every norm layer is the configured :mod:`spgnet.models.norm` layer. In the ResNet blocks the
activation is fused into ``bn1``/``bn2`` and kept separate after the residual sum, exactly as in
:mod:`spgnet.models.backbone` (so ``InPlaceABN`` never sees a tensor that is used again); in the
DenseNet the ``normN``+``reluN`` pairs become one fused layer. Module names follow torchvision, so
torchvision's ImageNet file loads with :func:`load_pretrained` (never downloaded), strictly: only
the layers a paper adds (``imagenet_skip``) start from their own initialisation.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck

from spgnet.errors import SpgnetError
from spgnet.models.backbone import adopt_resnet_layers
from spgnet.models.norm import NormAct, add_input_sign, norm_only
from spgnet.models.pretrained import load_torchvision_weights

RESNETS = ("resnet50", "resnet101", "resnet152")
DENSENETS = ("densenet161",)

# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def load_pretrained(module: nn.Module, weights_root: str | Path | None) -> list[str]:
    """Fill ``module`` (a :class:`ResNetBackbone` or :class:`DenseNetBackbone`) from torchvision's
    ImageNet file of its backbone in the folder ``weights_root`` (None: leave it as built); never
    downloads. Returns the module's keys that are new by design and keep their initialisation.

    Strict (:func:`spgnet.models.pretrained.load_torchvision_weights`): every other tensor comes
    from the file and every tensor of the file but the classifier and those the new layers replace
    (``module.imagenet_skip``: the deep stem, the first ``layer1`` block's two convolutions fed by
    it, DenseASPP's ``transition4`` and ``norm5``) is used; anything else is a one-line
    :class:`SpgnetError` naming the file and the key.
    """
    if weights_root is None:
        return []
    from spgnet.models.weights import weights_path

    return load_torchvision_weights(module, weights_path(weights_root, module.name),
                                    what=f"torchvision's {module.name} ImageNet file", skip=module.imagenet_skip)


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


# --------------------------------------------------------------------------------------------
# ResNet
# --------------------------------------------------------------------------------------------


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


class ResNetBackbone(nn.Module):
    """torchvision ResNet (no ``fc``): ``forward(x)`` -> ``[c1, c2, c3, c4]`` (strides 4, 8, 16/8, 32/8).

    ``dilated``: ``replace_stride_with_dilation=[False, True, True]`` (output stride 8).
    ``deep_stem``: ``conv1`` becomes 3x3 convs 3->64 (stride 2) ->64 ->128, each but the last
    followed by norm+activation, then ``bn1`` (128) -- hszhao/semseg ``resnet.py`` and TorchSeg
    ``furnace/base_model/resnet.py`` (``deep_stem=True, stem_width=64``); ``layer1`` is rebuilt for
    128 input channels. ``dilations``: optional per-block dilation rates of ``layer3``/``layer4``
    (Hybrid Dilated Convolution, DUC-HDC); ``None`` keeps torchvision's.
    """

    def __init__(self, name: str, factory: NormAct, dilated: bool = True, deep_stem: bool = False,
                 dilations: dict[int, list[int]] | None = None, pretrained: str | None = None):
        super().__init__()
        if name not in RESNETS:
            raise SpgnetError(f"unknown backbone '{name}' (valid: {', '.join(RESNETS)})")
        self.name = name
        replace = [False, True, True] if dilated else [False, False, False]
        net = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=replace,
                                                norm_layer=norm_only(factory))
        if deep_stem:
            self.conv1 = nn.Sequential(
                _conv3x3(3, 64, stride=2), factory(64),
                _conv3x3(64, 64), factory(64),
                _conv3x3(64, 128),
            )
            self.bn1 = factory(128)
            net.inplanes, net.dilation = 128, 1  # _make_layer reads (and updates) both
            net.layer1 = net._make_layer(Bottleneck, 64, len(net.layer1))
            _init_convs(self.conv1)
            _init_convs(net.layer1)
            #: new layers (not from ImageNet): the deep stem, and layer1's first block's convs that
            #: take its 128 channels (64 in torchvision's file); the rest of layer1 keeps its shapes
            self.imagenet_skip = ("conv1.", "bn1.", "layer1.0.conv1.", "layer1.0.downsample.0.")
        else:
            self.conv1 = net.conv1
            self.bn1 = factory(64)
            self.imagenet_skip = ()
        self.maxpool = net.maxpool
        adopt_resnet_layers(self, net, factory)
        for index, rates in (dilations or {}).items():
            layer = getattr(self, f"layer{index}")
            for block, rate in zip(layer, rates):
                block.conv2.dilation = (rate, rate)
                block.conv2.padding = (rate, rate)
        self.channels = (256, 512, 1024, 2048)
        load_pretrained(self, pretrained)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.bn1(self.conv1(x)))
        features = []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features


# --------------------------------------------------------------------------------------------
# DenseNet
# --------------------------------------------------------------------------------------------


def _fuse_norm_relu(container: nn.Module, norm: str, relu: str, factory: NormAct, *, concatenated: bool = False) -> None:
    """``container.<norm>`` + ``container.<relu>`` -> one fused layer; ``concatenated``: the norm is
    fed by a concatenation (DenseNet's pre-activation norms), not by one convolution, so it gets an
    ``input_sign`` to carry negative ImageNet gammas under Inplace-ABN (:func:`add_input_sign`)."""
    layer = factory(getattr(container, norm).num_features)
    setattr(container, norm, add_input_sign(layer) if concatenated else layer)
    setattr(container, relu, nn.Identity())


class DenseNetBackbone(nn.Module):
    """torchvision DenseNet-161 at output stride 8, as the official DenseASPP builds it.

    ``features``: conv0/norm0/pool0, dense blocks 1-4 (block 3 with dilation 2, block 4 with
    dilation 4), transitions 1-3 (only transition 1 pools), ``transition4`` (2208 -> 1104, no
    pooling) and ``norm5`` (1104) with its activation (the official ``ASPP_3`` block applies an
    in-place ReLU to the ``norm5`` output, which every later branch then sees).

    The pre-activation norms that a concatenation feeds (each dense layer's ``norm1``, transitions
    1-3's ``norm``) carry an ``input_sign`` buffer (+1 unless ImageNet weights with negative gammas
    were loaded under Inplace-ABN; ``docs/imagenet-init.md``). ``transition4``'s norm takes block
    4's output too but is new, so its gammas start positive.
    """

    def __init__(self, name: str, factory: NormAct, pretrained: str | None = None):
        super().__init__()
        if name not in DENSENETS:
            raise SpgnetError(f"unknown backbone '{name}' (valid: {', '.join(DENSENETS)})")
        self.name = name
        #: new layers (not from ImageNet): the extra transition and the norm after it (1104
        #: channels; the file's norm5 has 2208)
        self.imagenet_skip = ("features.transition4.", "features.norm5.")
        net = getattr(torchvision.models, name)(weights=None)
        features = net.features
        _fuse_norm_relu(features, "norm0", "relu0", factory)
        for index in range(1, 5):
            block = getattr(features, f"denseblock{index}")
            rate = {3: 2, 4: 4}.get(index, 1)
            for layer in block.children():
                _fuse_norm_relu(layer, "norm1", "relu1", factory, concatenated=True)
                _fuse_norm_relu(layer, "norm2", "relu2", factory)
                if rate > 1:
                    layer.conv2.dilation = (rate, rate)
                    layer.conv2.padding = (rate, rate)
            if index < 4:
                transition = getattr(features, f"transition{index}")
                _fuse_norm_relu(transition, "norm", "relu", factory, concatenated=True)
                if index > 1:
                    transition.pool = nn.Identity()
        channels = features.norm5.num_features  # 2208
        del features.norm5
        transition4 = torchvision.models.densenet._Transition(channels, channels // 2)
        transition4.pool = nn.Identity()
        _fuse_norm_relu(transition4, "norm", "relu", factory)
        features.add_module("transition4", transition4)
        features.add_module("norm5", factory(channels // 2))
        self.features = features
        self.channels = channels // 2
        load_pretrained(self, pretrained)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
