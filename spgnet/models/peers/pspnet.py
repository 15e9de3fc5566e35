"""PSPNet (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017), Table 1's "PSPNet [75]".

Definition from hszhao/semseg (``model/pspnet.py``, ``model/resnet.py``), the authors' PyTorch
re-implementation:

* backbone: ResNet-101 with the deep stem (3x3 convs 3->64->64->128), dilated to output stride 8;
* pyramid pooling module: adaptive average pooling to bins 1, 2, 3, 6, each followed by a 1x1 conv
  2048 -> 512 (no bias) + norm + activation, bilinearly upsampled (``align_corners=True``) and
  concatenated with the input (4096 channels);
* classifier: 3x3 conv 4096 -> 512 + norm + activation, dropout 0.1, 1x1 conv 512 -> classes.

hszhao/semseg also trains with an auxiliary head on ``layer3`` (weight 0.4); it is left out here
because the paper's Table 1 figures count the network without it (65.7M / 2117.3B; with it the
count is 3.6% higher, ``docs/table1-peers.md``), so ``aux`` is empty. With this
definition the project's counting convention gives 65.71M parameters and 2117.33 GMACs at
1025 x 2049, the paper's figures to the printed digit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spgnet.config import ModelConfig
from spgnet.models.norm import NormAct, conv_norm_act
from spgnet.models.peers.base import PeerModel


class PyramidPooling(nn.Module):
    """hszhao/semseg ``PPM``: ``cat([x, up(conv(pool_b(x))) for b in bins])``."""

    def __init__(self, in_ch: int, reduction: int, bins: tuple[int, ...], factory: NormAct):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), *conv_norm_act(in_ch, reduction, 1, factory)) for b in bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=True) for stage in self.stages]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(PeerModel):
    arch = "pspnet"
    dilated, deep_stem = True, True

    def build_head(self, cfg: ModelConfig, factory: NormAct) -> None:
        channels = self.backbone.channels[-1]
        bins = (1, 2, 3, 6)
        self.ppm = PyramidPooling(channels, channels // len(bins), bins, factory)
        self.cls = nn.Sequential(
            *conv_norm_act(2 * channels, 512, 3, factory),
            nn.Dropout2d(0.1),
            nn.Conv2d(512, cfg.num_classes, 1),
        )

    def decode(self, x: torch.Tensor, features: list[torch.Tensor]) -> dict:
        return {"out": self.cls(self.ppm(features[-1])), "aux": []}
