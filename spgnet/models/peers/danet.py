"""DANet (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019), "DANet [18]".

Definition from the authors' 2018 code (junfu1115/DANet, ``encoding/models/danet.py`` and
``encoding/nn/attention.py``):

* backbone: ResNet-101 with torchvision's 7x7 stem, dilated to output stride 8;
* ``DANetHead`` (inter channels 2048 / 4 = 512): two branches, each a 3x3 conv 2048 -> 512 + norm
  + activation (``conv5a`` / ``conv5c``), then the position attention module (``PAM``: 1x1 query
  and key convs to 512 / 8 = 64 channels, 1x1 value conv, HW x HW affinity by ``bmm``, softmax,
  ``gamma * out + x`` with ``gamma`` starting at 0) or the channel attention module (``CAM``:
  C x C affinity of the features themselves, ``max - energy`` before the softmax, ``gamma``),
  then a 3x3 conv 512 -> 512 + norm + activation (``conv51`` / ``conv52``);
* classifiers ``conv6`` (position branch), ``conv7`` (channel branch) and ``conv8`` (their sum):
  dropout 0.1 + 1x1 conv 512 -> classes. ``out`` is ``conv8``; ``aux`` holds ``conv6`` and
  ``conv7``, which the 2018 code also supervises.

The attention ``bmm`` products are counted as multiply-adds; with them this definition gives
66.455M parameters and 2878.89 GMACs at 1025 x 2049, the paper's 66.5M / 2878.9B
(``docs/table1-peers.md``; 66.455M rounds to the paper's 66.5M).
"""

from __future__ import annotations

import torch
from torch import nn

from spgnet.config import ModelConfig
from spgnet.models.norm import NormAct, conv_norm_act
from spgnet.models.peers.base import PeerModel


class PositionAttention(nn.Module):
    """junfu1115/DANet ``PAM_Module``."""

    def __init__(self, channels: int):
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        query = self.query_conv(x).view(n, -1, h * w).permute(0, 2, 1)  # N x HW x C/8
        key = self.key_conv(x).view(n, -1, h * w)  # N x C/8 x HW
        attention = torch.softmax(torch.bmm(query, key), dim=-1)  # N x HW x HW
        value = self.value_conv(x).view(n, -1, h * w)  # N x C x HW
        out = torch.bmm(value, attention.permute(0, 2, 1)).view(n, c, h, w)
        return self.gamma * out + x


class ChannelAttention(nn.Module):
    """junfu1115/DANet ``CAM_Module``."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        flat = x.view(n, c, -1)
        energy = torch.bmm(flat, flat.permute(0, 2, 1))  # N x C x C
        energy = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
        attention = torch.softmax(energy, dim=-1)
        out = torch.bmm(attention, flat).view(n, c, h, w)
        return self.gamma * out + x


class DANet(PeerModel):
    arch = "danet"
    dilated, deep_stem = True, False

    def build_head(self, cfg: ModelConfig, factory: NormAct) -> None:
        in_ch = self.backbone.channels[-1]
        inter = in_ch // 4
        self.conv5a = conv_norm_act(in_ch, inter, 3, factory)
        self.conv5c = conv_norm_act(in_ch, inter, 3, factory)
        self.sa = PositionAttention(inter)
        self.sc = ChannelAttention()
        self.conv51 = conv_norm_act(inter, inter, 3, factory)
        self.conv52 = conv_norm_act(inter, inter, 3, factory)
        self.conv6 = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(inter, cfg.num_classes, 1))
        self.conv7 = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(inter, cfg.num_classes, 1))
        self.conv8 = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(inter, cfg.num_classes, 1))

    def decode(self, x: torch.Tensor, features: list[torch.Tensor]) -> dict:
        c4 = features[-1]
        sa_conv = self.conv51(self.sa(self.conv5a(c4)))
        sc_conv = self.conv52(self.sc(self.conv5c(c4)))
        return {"out": self.conv8(sa_conv + sc_conv), "aux": [self.conv6(sa_conv), self.conv7(sc_conv)]}
