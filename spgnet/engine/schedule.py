"""Optimiser and learning-rate schedule of Sec. 4.2.

Mini-batch SGD with momentum 0.9 and weight decay 1e-4 on every parameter, initial learning rate
0.01, and the "poly" schedule ``lr = base_lr * (1 - it / max_it) ** 0.9`` (the values come from
:class:`spgnet.config.TrainConfig`). The schedule is a pure function of the iteration, so a resumed
run needs no scheduler state: :func:`set_lr` is called before every step.
"""

from __future__ import annotations

import torch
from torch import nn


def build_optimizer(model: nn.Module, train_cfg) -> torch.optim.SGD:
    """SGD over the trainable parameters with ``train_cfg``'s lr, momentum and weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(
        params,
        lr=train_cfg.lr,
        momentum=train_cfg.momentum,
        weight_decay=train_cfg.weight_decay,
    )


def poly_lr(base_lr: float, iteration: int, max_iterations: int, power: float = 0.9) -> float:
    """Learning rate of step ``iteration`` (0-based) of ``max_iterations``: ``base*(1-it/max)^power``."""
    if max_iterations <= 0:
        raise ValueError("max_iterations must be positive")
    progress = min(max(iteration, 0), max_iterations) / max_iterations
    return base_lr * (1.0 - progress) ** power


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
