"""ResNet encoders from torchvision, with fused norm+activation layers (Sec. 4.2).

torchvision's ResNets give the structure and the ImageNet weight layout; the only change is that
each block's batch norms become the configured :mod:`spgnet.models.norm` layer, with the
activation fused into the norm where it directly follows it (``bn1``/``bn2``) and kept separate
after the residual sum. That is how inplace-abn's own ResNets are built, and it is what lets
``InPlaceABN`` save memory. The activation is leaky ReLU (slope 0.01) everywhere.

Only the first SPGNet stage has the stem (7x7 conv, stride 2, 3x3 max-pool, stride 2; Sec. 4.2);
later stages start at ``layer1``, fed at stride 4 by the SPG module (Fig. 2a). This is pinned down
by the paper's #Params/#FLOPs (``docs/architecture-counts.md``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from spgnet.errors import SpgnetError
from spgnet.models.norm import LEAKY_SLOPE, NormAct, norm_only
from spgnet.models.pretrained import load_torchvision_weights

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def residual_add(out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """``out + identity``, in place when no gradient is recorded.

    While training, ``out`` may be the output an in-place ABN keeps for its backward pass, so the sum
    is a new tensor; at inference the in-place add (what torchvision's blocks always do) saves one
    full-size allocation and copy per block.
    """
    if torch.is_grad_enabled() and (out.requires_grad or identity.requires_grad):
        return out + identity
    return out.add_(identity)


class NormActBasicBlock(BasicBlock):
    """torchvision's ``BasicBlock`` whose ``bn1`` carries the activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        return self.relu(residual_add(out, identity))


class NormActBottleneck(Bottleneck):
    """torchvision's ``Bottleneck`` whose ``bn1`` and ``bn2`` carry the activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        out = self.bn3(self.conv3(out))
        return self.relu(residual_add(out, identity))


def fuse_block_activations(block: nn.Module, factory: NormAct) -> nn.Module:
    """Turn a torchvision block built with identity-activation norms into its NormAct twin."""
    block.bn1 = factory(block.bn1.num_features)
    if isinstance(block, Bottleneck):
        block.bn2 = factory(block.bn2.num_features)
        block.__class__ = NormActBottleneck
    elif isinstance(block, BasicBlock):
        block.__class__ = NormActBasicBlock
    else:  # pragma: no cover - torchvision has only these two
        raise TypeError(f"unsupported block {type(block).__name__}")
    block.relu = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    return block


def adopt_resnet_layers(module: nn.Module, net: nn.Module, factory: NormAct) -> None:
    """Move ``layer1..layer4`` of torchvision ResNet ``net`` onto ``module``, each block turned into
    its NormAct twin (:func:`fuse_block_activations`)."""
    for index in range(1, 5):
        layer = getattr(net, f"layer{index}")
        for block in layer:
            fuse_block_activations(block, factory)
        setattr(module, f"layer{index}", layer)


def bottleneck(in_ch: int, out_ch: int, factory: NormAct) -> NormActBottleneck:
    """A ResNet bottleneck ``in_ch -> out_ch`` (mid channels ``out_ch / 4``; Sec. 3.3).

    A projection shortcut (1x1 conv + norm) is added when the channel count changes, as in ResNet.
    """
    downsample = None
    if in_ch != out_ch:
        downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), factory(out_ch, activation="identity"))
    block = Bottleneck(in_ch, out_ch // Bottleneck.expansion, downsample=downsample, norm_layer=norm_only(factory))
    return fuse_block_activations(block, factory)


#: key prefixes of a ResNet's stem, which only the first SPGNet stage has
STEM = ("conv1.", "bn1.")


def load_imagenet_weights(encoder: "ResNetEncoder", weights_root: str | Path) -> Path:
    """Fill every tensor of ``encoder`` from torchvision's ImageNet file of its backbone in the
    folder ``weights_root`` (``resnet50-0676ba61.pth`` for a ResNet-50 stage; see
    :mod:`spgnet.models.weights`); returns the file's path. Never downloads.

    Strict (:func:`spgnet.models.pretrained.load_torchvision_weights`): only ``fc.*`` and, for a
    stage without the stem (every stage but the first, Fig. 2a), ``conv1``/``bn1`` of the file
    go unused; a missing file or any missing, extra or differently shaped tensor is a one-line
    :class:`SpgnetError` naming the file and the key. Under Inplace-ABN the BatchNorm tensors are
    converted so that the encoder computes what torchvision's network computes (up to the leaky
    ReLU; ``docs/imagenet-init.md``); ``encoder.imagenet_init`` says how many channels changed.
    """
    from spgnet.models.weights import weights_path

    path = weights_path(weights_root, encoder.name)
    reference = next(encoder.parameters())
    example = torch.zeros(1, 3 if encoder.has_stem else encoder.in_channels, 64, 64,
                          device=reference.device, dtype=reference.dtype)
    load_torchvision_weights(encoder, path, what=f"torchvision's {encoder.name} ImageNet file",
                             skip=() if encoder.has_stem else STEM, example=example)
    return path


class ResNetEncoder(nn.Module):
    """``layer1..layer4`` of a torchvision ResNet (plus the stem when ``stem``), no ``fc``.

    ``forward(x, skips)`` returns the four feature maps (strides 4, 8, 16, 32 of the image); when
    ``skips`` is given, ``skips[k](...)`` -> tensor is added to the output of layer ``k+1`` before
    it feeds the next layer (Cross Stage Feature Aggregation, Fig. 2c).
    """

    def __init__(self, name: str, factory: NormAct, stem: bool = True):
        super().__init__()
        if name not in RESNETS:
            raise SpgnetError(f"unknown backbone '{name}' (valid: {', '.join(RESNETS)})")
        net = getattr(torchvision.models, name)(weights=None, norm_layer=norm_only(factory))
        self.name = name
        self.has_stem = stem
        if stem:
            self.conv1 = net.conv1
            self.bn1 = factory(net.bn1.num_features)
            self.maxpool = net.maxpool
        adopt_resnet_layers(self, net, factory)
        expansion = 4 if name in ("resnet50", "resnet101", "resnet152") else 1
        #: channels of the four outputs
        self.channels = tuple(c * expansion for c in (64, 128, 256, 512))
        #: channels ``layer1`` expects as input (what a later stage must be fed)
        self.in_channels = 64

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        if self.has_stem:
            x = self.maxpool(self.bn1(self.conv1(x)))
        features = []
        for index in range(4):
            x = getattr(self, f"layer{index + 1}")(x)
            if skips is not None:
                x = residual_add(x, skips[index])
            features.append(x)
        return features
