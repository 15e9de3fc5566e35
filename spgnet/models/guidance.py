"""Links between stages: SPG and the variants Tables 3 and 4 compare it with.

SPG (Sec. 3.4, Fig. 3), with x_d the earlier stage's decoder output (after its 3x3 head conv) and
x_l = its per-class logits (1x1 conv D -> C, supervised):

    m   = sigmoid(conv1x1_{C->D}(x_l))        "Guided Attention" (supervise)
    out = m * T(x_d) + x_d                    T = conv1x1_{D->D} + norm (excite, identity)

and a 1x1 conv D -> 64 (+norm+act) then feeds the next encoder's ``layer1`` (see ``SPGNet``).
The counts pin the layers down: SPG adds ~2.5B FLOPs and ~19K parameters over the plain baseline
(C*D + D*D weights at stride 4), which is exactly these two 1x1 convs.

Variants (``link``):
  ``none``         plain 2-stage baseline: out = x_d (Table 3, row 2).
  ``spg_sum``      "the sum of the transformed predictions and the decoder output" (Sec. 4.4):
                   out = conv(x_l) + T(x_d) + x_d, i.e. SPG with the product replaced by a sum
                   and no sigmoid. Table 3 gives it the same 218.0B as SPG, so it keeps T.
  ``spg_softmax``  m = softmax of conv(x_l) over the H x W positions, per channel.
  ``spg_sigmoid``  the proposed module.
  ``se``           squeeze-and-excite [25]: m = sigmoid(W2 relu(W1 GAP(x_d))), reduction 16,
                   broadcast over H x W; no supervision of the gate (Table 4).
  ``ge``           gather-and-excite GE-theta-minus [24]: the parameter-free gather (average
                   pooling over the whole map), m = sigmoid(gathered), broadcast (Table 4).
``identity=False`` drops the ``+ x_d`` (Table 3). SE and GE re-weight ``T(x_d)`` and keep the
identity like SPG, so that the three differ only in where the attention comes from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spgnet.errors import SpgnetError
from spgnet.models.backbone import residual_add
from spgnet.models.norm import NormAct

LINKS = ("none", "spg_sum", "spg_softmax", "spg_sigmoid", "se", "ge")
SE_REDUCTION = 16


class StageLink(nn.Module):
    """Maps (x_d, x_l) of one stage to the feature passed on to the next stage."""

    def __init__(self, link: str, channels: int, num_classes: int, factory: NormAct, identity: bool = True):
        super().__init__()
        if link not in LINKS:
            raise SpgnetError(f"unknown stage link '{link}' (valid: {', '.join(LINKS)})")
        self.link = link
        self.identity = identity
        if link == "none":
            return
        self.transform = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), factory(channels, activation="identity"))
        if link.startswith("spg"):
            self.attention_conv = nn.Conv2d(num_classes, channels, 1)
        elif link == "se":
            hidden = max(channels // SE_REDUCTION, 1)
            self.squeeze = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def attention(self, x_d: torch.Tensor, x_l: torch.Tensor) -> torch.Tensor | None:
        """The re-weighting mask (``None`` for ``none``; pre-activation map for ``spg_sum``)."""
        if self.link == "none":
            return None
        if self.link == "spg_sum":
            return self.attention_conv(x_l)
        if self.link == "spg_sigmoid":
            return torch.sigmoid(self.attention_conv(x_l))
        if self.link == "spg_softmax":
            logits = self.attention_conv(x_l)
            n, c, h, w = logits.shape
            return F.softmax(logits.flatten(2), dim=-1).view(n, c, h, w)
        pooled = F.adaptive_avg_pool2d(x_d, 1)
        if self.link == "se":
            return torch.sigmoid(self.squeeze(pooled))
        return torch.sigmoid(pooled)  # ge

    def forward(self, x_d: torch.Tensor, x_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mask = self.attention(x_d, x_l)
        if mask is None:
            return x_d, None
        transformed = self.transform(x_d)
        out = mask + transformed if self.link == "spg_sum" else mask * transformed
        if self.identity:
            out = residual_add(out, x_d)
        return out, mask
