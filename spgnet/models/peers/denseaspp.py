"""DenseASPP (Yang et al., "DenseASPP for Semantic Segmentation in Street Scenes", CVPR 2018),
Table 1's "DenseASPP [66]".

Definition from the official code (DeepMotionAIResearch/DenseASPP, ``models/DenseASPP.py`` with
``cfgs/DenseASPP161.py``: growth 48, 96 initial features, blocks 6/12/36/24, ``d_feature0`` 512,
``d_feature1`` 128, dropout 0.1):

* backbone: DenseNet-161 at output stride 8 (:class:`DenseNetBackbone`), including the official
  extra ``transition4`` after block 4 (2208 -> 1104 channels, no pooling) and ``norm5``;
* five densely connected ASPP branches with rates 3, 6, 12, 18, 24: [norm + activation, except for
  the first branch,] 1x1 conv to 512 (with bias) + norm + activation, 3x3 conv with the rate's
  dilation to 128 (with bias), dropout 0.1; each branch sees the backbone output concatenated with
  all earlier branches' outputs;
* classifier: dropout 0.1 + 1x1 conv (1104 + 5 * 128 = 1744 -> classes), no auxiliary head.

Each branch gets a fresh concatenation as input (the official code concatenates once and lets an
out-of-place BatchNorm read it), so that an in-place norm (``InPlaceABN``) never overwrites
features a later branch still needs; the maths is the same. This definition gives 35.40M
parameters and 1240.13 GMACs at 1025 x 2049, the paper's 35.4M / 1240.1B.
"""

from __future__ import annotations

import torch
from torch import nn

from spgnet.config import ModelConfig
from spgnet.models.norm import NormAct
from spgnet.models.peers.backbones import DENSENETS, DenseNetBackbone
from spgnet.models.peers.base import PeerModel

RATES = (3, 6, 12, 18, 24)


class DenseAsppBranch(nn.Sequential):
    """Official ``_DenseAsppBlock`` (``bn_start``: normalise the input first)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, rate: int, factory: NormAct, bn_start: bool):
        layers = [factory(in_ch)] if bn_start else []
        layers += [
            nn.Conv2d(in_ch, mid_ch, 1),
            factory(mid_ch),
            nn.Conv2d(mid_ch, out_ch, 3, padding=rate, dilation=rate),
            nn.Dropout2d(0.1),
        ]
        super().__init__(*layers)


class DenseASPP(PeerModel):
    arch = "denseaspp"
    backbone_names = DENSENETS

    def build_backbone(self, name: str, factory: NormAct, pretrained: str | None) -> nn.Module:
        return DenseNetBackbone(name, factory, pretrained=pretrained)

    def build_head(self, cfg: ModelConfig, factory: NormAct) -> None:
        channels = self.backbone.channels
        d0, d1 = 512, 128
        self.branches = nn.ModuleList(
            DenseAsppBranch(channels + i * d1, d0, d1, rate, factory, bn_start=i > 0)
            for i, rate in enumerate(RATES)
        )
        self.classification = nn.Sequential(
            nn.Dropout2d(0.1),
            nn.Conv2d(channels + len(RATES) * d1, cfg.num_classes, 1),
        )

    def decode(self, x: torch.Tensor, features: torch.Tensor) -> dict:
        pieces = [features]
        for branch in self.branches:
            # official order: torch.cat((newest, ..., oldest, backbone feature), dim=1)
            features = pieces[0] if len(pieces) == 1 else torch.cat(pieces[::-1], dim=1)
            pieces.append(branch(features))
        return {"out": self.classification(torch.cat(pieces[::-1], dim=1)), "aux": []}
