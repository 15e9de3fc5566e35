"""DUC-HDC (Wang et al., "Understanding Convolution for Semantic Segmentation", WACV 2018),
Table 1's "DUC-HDC [58]".

* Hybrid Dilated Convolution (HDC, Sec. 3.2 of the paper): a ResNet-101 dilated to output stride 8
  whose 3x3 convs use the dilation rates 1, 2, 5, 9 in turn in ``layer3`` (res4b) and 5, 9, 17 in
  ``layer4`` (res5b), as in the widely used PyTorch port of the authors' MXNet code
  (zijundeng/pytorch-semantic-segmentation ``models/duc_hdc.py``, ``ResNetDUCHDC``);
* Dense Upsampling Convolution (DUC, Sec. 3.1): one 3x3 conv 2048 -> 8 * 8 * classes (with bias) +
  norm + activation, then a pixel shuffle by 8 back to the input resolution (that port's
  ``_DenseUpsamplingConvModule``); a final bilinear resize only when the input is not a multiple
  of 8. The authors' MXNet model sums several dilated DUC convs; the single conv is what matches
  the paper's count;
* the ResNet-101 has the deep 3-conv stem (3x3 convs 3->64->64->128), which the 7x7 stem misses by
  0.12M parameters.

With this definition the project's counting convention gives 65.04M parameters and 2234.29
GMACs at 1025 x 2049, the paper's 65.0M / 2234.3B. There is no auxiliary head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spgnet.config import ModelConfig
from spgnet.models.norm import NormAct
from spgnet.models.peers.base import PeerModel

LAYER3_RATES = (1, 2, 5, 9)
LAYER4_RATES = (5, 9, 17)


class DUCHDC(PeerModel):
    arch = "duc_hdc"
    dilated, deep_stem = True, True

    def dilations(self, name: str) -> dict[int, list[int]]:
        blocks3 = {"resnet50": 6, "resnet101": 23, "resnet152": 36}[name]
        return {3: [LAYER3_RATES[i % len(LAYER3_RATES)] for i in range(blocks3)], 4: list(LAYER4_RATES)}

    def build_head(self, cfg: ModelConfig, factory: NormAct) -> None:
        self.factor = 8
        channels = self.factor ** 2 * cfg.num_classes
        self.duc = nn.Sequential(
            nn.Conv2d(self.backbone.channels[-1], channels, 3, padding=1),
            factory(channels),
        )

    def decode(self, x: torch.Tensor, features: list[torch.Tensor]) -> dict:
        return {"out": F.pixel_shuffle(self.duc(features[-1]), self.factor), "aux": []}
