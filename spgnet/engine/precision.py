"""Mixed precision of a training run (``train.amp``): fp16 + gradient scaler on CUDA, bf16 on CPU."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype | None  # autocast dtype, None for float32
    use_grad_scaler: bool
    reason: str

    @property
    def name(self) -> str:
        return {None: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[self.dtype]


def resolve_precision(amp, device: torch.device) -> Precision:
    if not amp or device.type not in ("cuda", "cpu"):
        return Precision(None, False, "train.amp is off")
    if device.type == "cuda":
        return Precision(torch.float16, True, "CUDA: float16 autocast with a gradient scaler")
    return Precision(torch.bfloat16, False, "CPU: bfloat16 autocast")
