"""Optimiser and learning-rate schedule of Sec. 4.2.

Mini-batch SGD with momentum 0.9, initial learning rate 0.01, weight decay 1e-4, and the "poly"
schedule ``lr = base_lr * (1 - it / max_it) ** 0.9`` (the values come from
:class:`spgnet.config.TrainConfig`). The schedule is a pure function of the iteration, so a resumed
run needs no scheduler state: :func:`set_lr` is called before every step.

The paper gives one learning rate and one weight decay; three settings open the usual alternatives
(``docs/recipe.md``), each parameter taking the values of what it is:

====================== ==================================== =========================================
parameter              weight decay                         learning rate
====================== ==================================== =========================================
of a normalisation     ``weight_decay_norm`` (weight and    ``lr``, times ``lr_mult_new_layers``
layer                  bias; None: ``weight_decay``)        outside the ImageNet encoders
bias of another layer  ``weight_decay_bias`` (None:         likewise
                       ``weight_decay``)
any other              ``weight_decay``                     likewise
====================== ==================================== =========================================

The ImageNet encoders are the parameters torchvision's ImageNet files fill when
``model.pretrained`` is set (:func:`imagenet_parameters`): every SPGNet stage's ``encoder``, a
Table 1 peer's ``backbone`` less its ``imagenet_skip`` layers (new by design). Everything else
(decoders, heads, SPG links, CSFA, a peer's head) is a new layer, whether or not the encoders were
actually loaded. Parameters with the same (multiplier, decay) share one SGD parameter group, which
remembers its multiplier (``"lr_mult"``); with the defaults that is one group, the paper's setting.
"""

from __future__ import annotations

import torch
from torch import nn


def _norm_classes() -> tuple[type, ...]:
    classes = [nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm]
    try:
        from inplace_abn import ABN  # InPlaceABN and InPlaceABNSync derive from it

        classes.append(ABN)
    except ImportError:  # pragma: no cover - inplace-abn is a dependency of the project
        pass
    return tuple(classes)


def imagenet_parameters(model: nn.Module) -> set[int]:
    """``id`` of every parameter of ``model`` that torchvision's ImageNet weights fill (module
    docstring); empty for a model that has no ImageNet part."""
    from spgnet.models.peers.base import PeerModel
    from spgnet.models.spgnet import SPGNet

    if isinstance(model, SPGNet):
        return {id(p) for stage in model.stages for p in stage.encoder.parameters()}
    if isinstance(model, PeerModel):
        skip = tuple(getattr(model.backbone, "imagenet_skip", ()))
        return {id(p) for name, p in model.backbone.named_parameters() if not name.startswith(skip)}
    return set()


def parameter_groups(model: nn.Module, train_cfg) -> list[dict]:
    """The SGD parameter groups of ``model``'s trainable parameters (module docstring), in the
    order the parameters first appear: ``{"params", "lr", "lr_mult", "weight_decay"}`` each."""
    decay = train_cfg.weight_decay
    norm_decay = decay if train_cfg.weight_decay_norm is None else train_cfg.weight_decay_norm
    bias_decay = decay if train_cfg.weight_decay_bias is None else train_cfg.weight_decay_bias
    encoders = imagenet_parameters(model)
    norms = _norm_classes()
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, norms):
                weight_decay = norm_decay
            elif name == "bias":
                weight_decay = bias_decay
            else:
                weight_decay = decay
            lr_mult = 1.0 if id(param) in encoders else train_cfg.lr_mult_new_layers
            groups.setdefault((lr_mult, weight_decay), []).append(param)
    return [{"params": params, "lr": train_cfg.lr * lr_mult, "lr_mult": lr_mult, "weight_decay": weight_decay}
            for (lr_mult, weight_decay), params in groups.items()]


def build_optimizer(model: nn.Module, train_cfg) -> torch.optim.SGD:
    """SGD over the trainable parameters with ``train_cfg``'s lr, momentum and weight decays, in
    the groups of :func:`parameter_groups`."""
    return torch.optim.SGD(
        parameter_groups(model, train_cfg),
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
    """Set the schedule's learning rate ``lr``: each group gets ``lr`` times its ``"lr_mult"``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
