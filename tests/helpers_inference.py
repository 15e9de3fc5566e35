"""Toy networks whose right answer is known, shared by the inference and evaluation tests."""

from __future__ import annotations

import torch
from torch import nn


class PixelModel(nn.Module):
    """Per-pixel linear classifier (1x1 conv): no spatial context, so any tiling is exact."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.head = nn.Conv2d(3, num_classes, 1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(num_classes, 3, 1, 1, generator=g) * 3)
            self.head.bias.copy_(torch.randn(num_classes, generator=g))

    def forward(self, x):
        return {"out": self.head(x), "aux": []}
