"""Decoders: the paper's upsample-module decoder (Sec. 3.2-3.3) and the FPN-style one (Table 11).

From the text: global average pooling on the encoder output, a 1x1 conv to D channels, then
upsample modules that (i) pass the encoder feature through a residual block to D channels, (ii)
add the bilinearly upsampled previous decoder output, (iii) fuse the sum with residual blocks.

From the paper's counts (``docs/architecture-counts.md``), not the text:
  * the fusion is TWO D->D bottlenecks per module (the text says "another residual block"; one
    block leaves every #FLOPs row short, two match all of them to 0.03%);
  * there are modules at strides 32, 16, 8 and 4; at stride 32 the previous output is the GAP
    feature, and without GAP (Tables 11-12) the stride-32 module is its lateral block alone;
  * at test time, "AP" (Table 12) replaces GAP with average pooling of kernel crop/32, stride 1,
    whose output is padded back to the feature size by replication (Porzi et al. [47]; the
    inplace-abn DeepLab head does the same). The 1x1 conv runs on the pooled map before the
    padding, which is equivalent (it is per pixel) and fits the paper's counts better.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spgnet.errors import SpgnetError
from spgnet.models.backbone import bottleneck, residual_add
from spgnet.models.norm import NormAct, conv_norm_act

TEST_POOLING = ("GAP", "AP")


class GlobalContext(nn.Module):
    """GAP (or, at test time, AP) on the stride-32 feature, then a 1x1 conv to D channels."""

    def __init__(self, in_ch: int, channels: int, factory: NormAct):
        super().__init__()
        self.conv = conv_norm_act(in_ch, channels, 1, factory)
        self.mode = "GAP"
        self.kernel: int | None = None

    def set_test_pooling(self, mode: str, kernel: int | None = None) -> None:
        if mode not in TEST_POOLING:
            raise SpgnetError(f"unknown test pooling '{mode}' (valid: {', '.join(TEST_POOLING)})")
        if mode == "AP" and not kernel:
            raise SpgnetError("test pooling 'AP' needs a kernel (training crop // 32)")
        self.mode, self.kernel = mode, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.training or self.mode == "GAP":
            return self.conv(F.adaptive_avg_pool2d(x, 1))
        kh, kw = min(self.kernel, height), min(self.kernel, width)
        pooled = self.conv(F.avg_pool2d(x, (kh, kw), stride=1))
        # replicate-pad back to H x W: (kw-1)//2 left, the rest right (same for rows)
        left, top = (kw - 1) // 2, (kh - 1) // 2
        pad = (left, kw - 1 - left, top, kh - 1 - top)
        return F.pad(pooled, pad, mode="replicate")


class UpsampleModule(nn.Module):
    """Fig. 2b: lateral residual block, + upsampled previous output, two fusing residual blocks."""

    def __init__(self, in_ch: int, channels: int, factory: NormAct, merge: bool = True):
        super().__init__()
        self.lateral = bottleneck(in_ch, channels, factory)
        self.fuse = nn.Sequential(bottleneck(channels, channels, factory), bottleneck(channels, channels, factory)) if merge else None

    def forward(self, encoder_feature: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        x = self.lateral(encoder_feature)
        if previous is not None:
            if previous.shape[-2:] != x.shape[-2:]:
                previous = F.interpolate(previous, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = residual_add(x, previous)
        return self.fuse(x) if self.fuse is not None else x


class UpsampleDecoder(nn.Module):
    """The paper's decoder. ``forward(features)`` returns the outputs at strides 4, 8, 16, 32."""

    def __init__(self, encoder_channels: tuple[int, ...], channels: int, factory: NormAct, gap: bool = True):
        super().__init__()
        self.context = GlobalContext(encoder_channels[-1], channels, factory) if gap else None
        # modules[k] works at the scale of encoder output k (k = 0: stride 4 ... 3: stride 32)
        self.modules_by_scale = nn.ModuleList(
            UpsampleModule(c, channels, factory, merge=(k < 3 or gap)) for k, c in enumerate(encoder_channels)
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        previous = self.context(features[-1]) if self.context is not None else None
        outputs = [None] * 4
        for k in (3, 2, 1, 0):
            previous = self.modules_by_scale[k](features[k], previous)
            outputs[k] = previous
        return outputs


class FPNDecoder(nn.Module):
    """FPN-style decoder of Table 11 (Lin et al. [37]) with Inplace-ABN after every conv.

    1x1 lateral conv (+norm+act) at each of the 4 scales, nearest-neighbour top-down upsampling and
    addition, one 3x3 output conv at the finest level only ("only use the largest resolution
    feature maps for prediction", appendix A). No GAP. Counts: 11.60M / 118.59B (paper 11.5M /
    118.6B) with the shared 3x3 head; the best fit among the variants tried.
    """

    def __init__(self, encoder_channels: tuple[int, ...], channels: int, factory: NormAct):
        super().__init__()
        self.laterals = nn.ModuleList(conv_norm_act(c, channels, 1, factory) for c in encoder_channels)
        self.output = conv_norm_act(channels, channels, 3, factory)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = [None] * 4
        previous = None
        for k in (3, 2, 1, 0):
            x = self.laterals[k](features[k])
            if previous is not None:
                x = residual_add(x, F.interpolate(previous, size=x.shape[-2:], mode="nearest"))
            outputs[k] = previous = x
        outputs[0] = self.output(outputs[0])
        return outputs
