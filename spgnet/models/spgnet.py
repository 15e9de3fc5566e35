"""SPGNet: stacked encoder-decoder stages linked by SPG (Sec. 3.1, Fig. 2).

Per stage ``s``:
  * encoder: a torchvision ResNet (with the stem only for ``s = 1``; later stages start at
    ``layer1``, fed at stride 4 by a 1x1 conv D -> 64 (+norm+act) from the stage link);
  * Cross Stage Feature Aggregation for ``s > 1`` (Fig. 2c, MSPN [33]): at each of the 4 scales,
    the previous stage's encoder output and decoder output each pass a 1x1 conv + norm to the
    current encoder's channel count, and both are added to the current encoder's output at that
    scale before it feeds the next layer (as in MSPN's ``network.py``);
  * decoder (:mod:`spgnet.models.decoder`), whose stride-4 output goes through a 3x3 conv D -> D
    (+norm+act) and a 1x1 classifier D -> C. The 3x3 head is not in the text; the #FLOPs of every
    row grow by exactly 9*D^2 per stride-4 pixel per stage with it (22.55B at D=128, 90.1B at
    D=256), which pins it down;
  * between stages, a :class:`~spgnet.models.guidance.StageLink` (SPG or a Table 3/4 variant).

``forward(x)`` returns ``{"out": final logits, "aux": [logits of stages 1..S-1]}``, all bilinearly
upsampled to the input size; ``forward(x, return_attention=True)`` adds ``"attention"``: the
guidance masks of every link at stride 4 (Sec. 4.5). Which ``aux`` terms enter the loss is the
training engine's decision (``ModelConfig.supervise``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spgnet.config import ModelConfig
from spgnet.errors import SpgnetError
from spgnet.models.backbone import ResNetEncoder, load_imagenet_weights, residual_add
from spgnet.models.decoder import FPNDecoder, UpsampleDecoder
from spgnet.models.guidance import StageLink
from spgnet.models.norm import NormAct, conv_norm_act, norm_act

DECODERS = ("upsample", "fpn")


def _projection(in_ch: int, out_ch: int, factory: NormAct) -> nn.Sequential:
    """1x1 conv + norm (no activation): CSFA's cross-stage projections."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), factory(out_ch, activation="identity"))


class Stage(nn.Module):
    """One encoder-decoder stage with its head (and CSFA projections from the previous stage)."""

    def __init__(self, backbone: str, channels: int, num_classes: int, factory: NormAct, *,
                 first: bool, decoder: str, gap: bool, previous: "Stage | None", csfa: bool):
        super().__init__()
        self.encoder = ResNetEncoder(backbone, factory, stem=first)
        if decoder == "upsample":
            self.decoder = UpsampleDecoder(self.encoder.channels, channels, factory, gap=gap)
        elif decoder == "fpn":
            self.decoder = FPNDecoder(self.encoder.channels, channels, factory)
        else:
            raise SpgnetError(f"unknown decoder '{decoder}' (valid: {', '.join(DECODERS)})")
        self.head = conv_norm_act(channels, channels, 3, factory)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.csfa_encoder = self.csfa_decoder = None
        if previous is not None and csfa:
            self.csfa_encoder = nn.ModuleList(
                _projection(p, c, factory) for p, c in zip(previous.encoder.channels, self.encoder.channels)
            )
            self.csfa_decoder = nn.ModuleList(_projection(channels, c, factory) for c in self.encoder.channels)

    def forward(self, x: torch.Tensor, previous: tuple[list, list] | None = None):
        skips = None
        if previous is not None and self.csfa_encoder is not None:
            prev_enc, prev_dec = previous
            skips = [residual_add(pe(e), pd(d)) for pe, pd, e, d in zip(self.csfa_encoder, self.csfa_decoder, prev_enc, prev_dec)]
        encoded = self.encoder(x, skips)
        decoded = self.decoder(encoded)
        x_d = self.head(decoded[0])
        return x_d, self.classifier(x_d), encoded, decoded


class SPGNet(nn.Module):
    """Multi-stage SPGNet (1, 2 or 3 stages; any ResNet per stage). Build from a ModelConfig."""

    def __init__(self, cfg: ModelConfig, device: str | torch.device = "cpu"):
        super().__init__()
        from spgnet.models.norm import usable_norm

        if not 1 <= cfg.num_stages <= 3:
            raise SpgnetError(f"model.backbones: {cfg.num_stages} stages given; SPGNet has 1, 2 or 3")
        if cfg.channels % 4:
            raise SpgnetError(f"model.channels: {cfg.channels} is not a multiple of 4 (bottleneck width)")
        self.cfg = cfg
        factory = norm_act(usable_norm(cfg.norm, device))
        stages, links, inputs = [], [], []
        for index, backbone in enumerate(cfg.backbones):
            previous = stages[-1] if stages else None
            stage = Stage(backbone, cfg.channels, cfg.num_classes, factory, first=index == 0,
                          decoder=cfg.decoder, gap=cfg.gap, previous=previous, csfa=cfg.csfa)
            if previous is not None:
                links.append(StageLink(cfg.link, cfg.channels, cfg.num_classes, factory, identity=cfg.identity))
                inputs.append(conv_norm_act(cfg.channels, stage.encoder.in_channels, 1, factory))
            stages.append(stage)
        self.stages = nn.ModuleList(stages)
        self.links = nn.ModuleList(links)
        self.next_inputs = nn.ModuleList(inputs)
        if cfg.pretrained:
            for stage in self.stages:
                load_imagenet_weights(stage.encoder, cfg.pretrained)

    def set_test_pooling(self, mode: str, kernel: int | None = None) -> None:
        """Table 12: "GAP" or "AP" (kernel = training crop // 32) at inference; no-op without GAP."""
        for stage in self.stages:
            context = getattr(stage.decoder, "context", None)
            if context is not None:
                context.set_test_pooling(mode, kernel)

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        size = x.shape[-2:]
        logits, attention = [], []
        previous = None
        features = x
        for index, stage in enumerate(self.stages):
            x_d, x_l, encoded, decoded = stage(features, previous)
            logits.append(x_l)
            if index < len(self.links):
                linked, mask = self.links[index](x_d, x_l)
                if mask is not None:
                    attention.append(mask)
                features = self.next_inputs[index](linked)
                previous = (encoded, decoded)
        upsampled = [F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in logits]
        result = {"out": upsampled[-1], "aux": upsampled[:-1]}
        if return_attention:
            result["attention"] = attention
        return result
