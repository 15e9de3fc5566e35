"""BiSeNet (Yu et al., "BiSeNet: Bilateral Segmentation Network for Real-time Semantic
Segmentation", ECCV 2018), Table 1's "BiSeNet [70]" with a ResNet-101 context path.

Definition from the authors' public code, TorchSeg (ycszen/TorchSeg, now yu-changqian/TorchSeg):
``model/bisenet/cityscapes.bisenet.R101/network.py`` and ``furnace/seg_opr/seg_oprs.py``
(``ConvBnRelu``, ``AttentionRefinement``, ``FeatureFusion``), with the 64-channel main head of
the ``cityscapes.bisenet.R18`` definition:

* context path: ResNet-101 with the deep stem (``deep_stem=True, stem_width=64``), not dilated
  (output stride 32); global context = global average pooling + 1x1 conv 2048 -> 128 + norm +
  activation, broadcast to the stride-32 map;
* attention refinement modules on ``layer4`` (2048 -> 128) and ``layer3`` (1024 -> 128): 3x3 conv +
  norm + activation, times a sigmoid channel attention (global pooling, 1x1 conv + norm); the
  stride-32 sum is upsampled to stride 16, refined by a 3x3 conv (128), added to the stride-16 ARM
  output, upsampled to stride 8 and refined again (TorchSeg interpolates with
  ``align_corners=True``);
* spatial path: 7x7 conv stride 2 (64), two 3x3 convs stride 2 (64), 1x1 conv to 128, each with
  norm + activation (stride 8);
* feature fusion module: concat (256), 1x1 conv + norm + activation, ``x + x * SE(x)`` (two 1x1
  convs without norm, ReLU, sigmoid);
* heads: main head on the fusion output (3x3 conv 256 -> 64 + norm + activation, 1x1 conv to the
  classes); auxiliary heads (3x3 conv 128 -> 256 + norm + activation, 1x1 conv) on the two
  refined context features (strides 16 and 8), which TorchSeg supervises (``aux``) and, like
  TorchSeg's forward, evaluates only in training mode (``aux`` is empty in evaluation mode).

Counted with the project's convention (evaluation mode, so the aux heads' parameters count but
their 12.45 GMACs do not) this gives 47.79M parameters and 429.48 GMACs at 1025 x 2049. The paper
prints 51.6M and 429.5B: the FLOPs match, the parameters are 7% lower. No public BiSeNet definition found reaches
51.6M (``docs/table1-peers.md``); the paper's parameter figure may come from another
implementation, so the gap is reported, not tuned away.
"""

from __future__ import annotations

import torch
from torch import nn

from spgnet.config import ModelConfig
from spgnet.models.norm import NormAct, conv_norm_act
from spgnet.models.peers.base import PeerModel, upsample


class AttentionRefinement(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, factory: NormAct):
        super().__init__()
        self.conv_3x3 = conv_norm_act(in_ch, out_ch, 3, factory)
        self.channel_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            *conv_norm_act(out_ch, out_ch, 1, factory, activation="identity"),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fm = self.conv_3x3(x)
        return fm * self.channel_attention(fm)


class FeatureFusion(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, factory: NormAct, reduction: int = 1):
        super().__init__()
        self.conv_1x1 = conv_norm_act(in_ch, out_ch, 1, factory)
        self.channel_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(out_ch, out_ch // reduction, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(out_ch // reduction, out_ch, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        fm = self.conv_1x1(torch.cat([x1, x2], dim=1))
        return fm + fm * self.channel_attention(fm)


class SpatialPath(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, factory: NormAct, inner: int = 64):
        super().__init__(
            conv_norm_act(in_ch, inner, 7, factory, stride=2),
            conv_norm_act(inner, inner, 3, factory, stride=2),
            conv_norm_act(inner, inner, 3, factory, stride=2),
            conv_norm_act(inner, out_ch, 1, factory),
        )


class BiSeNetHead(nn.Sequential):
    def __init__(self, in_ch: int, mid_ch: int, num_classes: int, factory: NormAct):
        super().__init__(conv_norm_act(in_ch, mid_ch, 3, factory), nn.Conv2d(mid_ch, num_classes, 1))


class BiSeNet(PeerModel):
    arch = "bisenet"
    dilated, deep_stem = False, True

    def build_head(self, cfg: ModelConfig, factory: NormAct) -> None:
        c = 128
        self.spatial_path = SpatialPath(3, c, factory)
        self.global_context = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_norm_act(2048, c, 1, factory))
        self.arms = nn.ModuleList([AttentionRefinement(2048, c, factory), AttentionRefinement(1024, c, factory)])
        self.refines = nn.ModuleList([conv_norm_act(c, c, 3, factory), conv_norm_act(c, c, 3, factory)])
        self.ffm = FeatureFusion(2 * c, 2 * c, factory)
        self.heads = nn.ModuleList([
            BiSeNetHead(c, 256, cfg.num_classes, factory),  # aux, stride 16
            BiSeNetHead(c, 256, cfg.num_classes, factory),  # aux, stride 8
            BiSeNetHead(2 * c, 64, cfg.num_classes, factory),  # main, stride 8
        ])

    def decode(self, x: torch.Tensor, features: list[torch.Tensor]) -> dict:
        spatial = self.spatial_path(x)
        c1, c2, c3, c4 = features
        blocks = [c4, c3, c2]
        last = self.global_context(c4).expand(-1, -1, *c4.shape[-2:])
        refined = []
        for i, (arm, refine) in enumerate(zip(self.arms, self.refines)):
            fm = arm(blocks[i]) + last
            last = refine(upsample(fm, blocks[i + 1].shape[-2:], align_corners=True))
            refined.append(last)
        fused = self.ffm(spatial, last)
        aux = [self.heads[0](refined[0]), self.heads[1](refined[1])] if self.training else []
        return {"out": self.heads[2](fused), "aux": aux}
