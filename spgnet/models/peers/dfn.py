"""DFN (Yu et al., "Learning a Discriminative Feature Network for Semantic Segmentation", CVPR
2018), Table 1's "DFN [71]" with ResNet-101.

Definition from the authors' public code, TorchSeg (ycszen/TorchSeg, now yu-changqian/TorchSeg):
``model/dfn/cityscapes.dfn.R101_v1c/network.py`` and ``furnace/seg_opr/seg_oprs.py``
(``RefineResidual``, ``ChannelAttention``):

* backbone: ResNet-101 "v1c" = deep stem (3x3 convs 3->64->64->128), not dilated (stride 32);
* smooth network: global context (global average pooling + 1x1 conv 2048 -> 512 + norm +
  activation); for ``layer4``, ``layer3``, ``layer2``, ``layer1`` in turn: a refinement residual
  block (RRB: 1x1 conv to 512, then 3x3 conv + norm + activation, 3x3 conv, residual sum, ReLU),
  a channel attention block (CAB: global pooling of ``cat(x, previous)``, linear 1024 -> 512, ReLU,
  linear 512 -> 512, sigmoid; ``x * attention + previous``), a second RRB, and a head (RRB to
  9 * classes without the final ReLU, 1x1 conv to the classes); the result, upsampled to the next
  stage (``align_corners=True``), is the next stage's ``previous``;
* border network: RRBs (to 21 channels) on ``layer1..layer4``, summed top-down at stride 4 with an
  RRB (21) after each sum, each with a head (RRB to 9 channels, 1x1 conv to 1 border logit).

``out`` is the last (stride-4) smooth head; ``aux`` holds the three earlier smooth heads, which
TorchSeg supervises like the output; ``border`` holds the four one-channel border logits (at the
input size). :func:`spgnet.engine.train.losses.segmentation_loss` supervises each of them as DFN does
(Sec. 3.3, "l = l_s + lambda l_b"): a sigmoid focal loss against the semantic boundaries of the
label map, weight lambda = 0.1 (TorchSeg's ``aux_loss_alpha``). TorchSeg also builds an RRB for
the first border stage (``border_aft_rrbs[0]``, 8.4K parameters) that its forward never uses; it
is kept so that the parameter count is that of TorchSeg's definition, and frozen
(``requires_grad=False``), so that every trainable parameter gets a gradient and
DistributedDataParallel needs no ``find_unused_parameters`` (the optimiser,
:func:`spgnet.engine.train.schedule.build_optimizer`, takes trainable parameters only).

Counted with the project's convention (all heads and the border network included) this gives
90.22M parameters and 2240.33 GMACs at 1025 x 2049. The paper prints 112.0M and 2239.6B: the
FLOPs match to 0.03%, the parameters are 19% lower. No public DFN definition found reaches 112.0M
(``docs/table1-peers.md``); the paper's parameter figure may come from another
implementation, so the gap is reported, not tuned away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spgnet.config import ModelConfig
from spgnet.models.norm import NormAct, conv_norm_act
from spgnet.models.peers.base import PeerModel, upsample


class RefineResidual(nn.Module):
    """TorchSeg ``RefineResidual`` (``ksize`` 3, no biases)."""

    def __init__(self, in_ch: int, out_ch: int, factory: NormAct, relu: bool = True):
        super().__init__()
        self.conv_1x1 = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.cbr = conv_norm_act(out_ch, out_ch, 3, factory)
        self.conv_refine = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_1x1(x)
        out = self.conv_refine(self.cbr(x)) + x
        return F.relu(out) if self.relu else out


class ChannelAttentionBlock(nn.Module):
    """TorchSeg ``ChannelAttention`` (an ``SELayer`` on the concatenation, reduction 1)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_ch, out_ch), nn.ReLU(), nn.Linear(out_ch, out_ch), nn.Sigmoid())

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x1, x2], dim=1).mean(dim=(2, 3))
        attention = self.fc(pooled)[:, :, None, None]
        return x1 * attention + x2


class DFNHead(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, factory: NormAct):
        super().__init__()
        self.rrb = RefineResidual(in_ch, out_ch * 9, factory, relu=False)
        self.conv = nn.Conv2d(out_ch * 9, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.rrb(x))


class DFN(PeerModel):
    arch = "dfn"
    dilated, deep_stem = False, True

    def build_head(self, cfg: ModelConfig, factory: NormAct) -> None:
        smooth, border = 512, 21
        stages = [2048, 1024, 512, 256]  # layer4 .. layer1
        self.global_context = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_norm_act(2048, smooth, 1, factory))
        self.smooth_pre_rrbs = nn.ModuleList(RefineResidual(ch, smooth, factory) for ch in stages)
        self.cabs = nn.ModuleList(ChannelAttentionBlock(2 * smooth, smooth) for _ in stages)
        self.smooth_aft_rrbs = nn.ModuleList(RefineResidual(smooth, smooth, factory) for _ in stages)
        self.smooth_heads = nn.ModuleList(DFNHead(smooth, cfg.num_classes, factory) for _ in stages)
        self.border_pre_rrbs = nn.ModuleList(RefineResidual(ch, border, factory) for ch in stages[::-1])
        # as in TorchSeg, border_aft_rrbs[0] exists but the forward never uses it: counted, frozen
        self.border_aft_rrbs = nn.ModuleList(RefineResidual(border, border, factory) for _ in stages)
        self.border_aft_rrbs[0].requires_grad_(False)
        self.border_heads = nn.ModuleList(DFNHead(border, 1, factory) for _ in stages)

    def decode(self, x: torch.Tensor, features: list[torch.Tensor]) -> dict:
        blocks = features  # strides 4, 8, 16, 32
        top_down = blocks[::-1]
        last = self.global_context(top_down[0]).expand(-1, -1, *top_down[0].shape[-2:])
        smooth_out = []
        for i, fm in enumerate(top_down):
            fm = self.smooth_pre_rrbs[i](fm)
            fm = self.cabs[i](fm, last)
            fm = self.smooth_aft_rrbs[i](fm)
            smooth_out.append(self.smooth_heads[i](fm))
            if i + 1 < len(top_down):
                last = upsample(fm, top_down[i + 1].shape[-2:], align_corners=True)
        border_out = []
        size4 = blocks[0].shape[-2:]
        last = None
        for i, fm in enumerate(blocks):
            fm = self.border_pre_rrbs[i](fm)
            if last is None:
                last = fm
            else:
                last = self.border_aft_rrbs[i](last + upsample(fm, size4, align_corners=True))
            border_out.append(self.border_heads[i](last))
        return {"out": smooth_out[-1], "aux": smooth_out[:-1], "border": border_out}
