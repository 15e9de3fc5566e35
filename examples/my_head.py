"""A network of your own for the SPGNet pipeline (docs/own-data.md): a ResNet encoder with a small
FCN-style head, built by ``build(cfg)`` and named in an experiments file as
``model: {builder: examples.my_head:build}``.

``cfg`` is the row's ``spgnet.config.ModelConfig``: ``cfg.num_classes`` is the data set's class
count (from its ``dataset.yaml``), ``cfg.backbones[0]`` the ResNet to use, ``cfg.channels`` the
head's width, ``cfg.pretrained`` the folder of torchvision's ImageNet files (None: random weights).
The function returns a plain ``nn.Module`` whose ``forward`` gives logits ``[N, C, h, w]``; the
pipeline resizes them to the input and trains, evaluates, counts and reports the network like its
own.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn


class MyHead(nn.Module):
    """ResNet stem to layer3 (stride 16), then 3x3 conv + BN + ReLU and a 1x1 classifier."""

    def __init__(self, num_classes: int, backbone: str = "resnet18", channels: int = 128,
                 weights: Path | None = None):
        super().__init__()
        resnet = getattr(torchvision.models, backbone)(weights=None)
        if weights is not None:
            resnet.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.encoder = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                     resnet.layer1, resnet.layer2, resnet.layer3)
        width = resnet.layer3[-1].conv2.out_channels if backbone in ("resnet18", "resnet34") else \
            resnet.layer3[-1].conv3.out_channels
        self.head = nn.Sequential(nn.Conv2d(width, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True), nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build(cfg) -> nn.Module:
    """The network of a row whose ``model.builder`` is ``examples.my_head:build``."""
    backbone = cfg.backbones[0]
    weights = None
    if cfg.pretrained:  # torchvision's file for this ResNet, under its own name
        matches = sorted(Path(cfg.pretrained).glob(f"{backbone}-*.pth"))
        weights = matches[0] if matches else None
    return MyHead(cfg.num_classes, backbone, cfg.channels, weights)
