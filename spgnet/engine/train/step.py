"""One training step (Sec. 4.2): forward under autocast, the loss of the global batch, backward, update.

:func:`train_step` is what :mod:`spgnet.engine.train.loop`'s loop calls once per iteration; it is a
plain function of the network, a batch, the optimiser and the run's settings, so it can be tested
and benchmarked alone (``benchmarks/gpu_check.py``). Every random draw inside the step comes from
``torch.manual_seed(step_seed(seed, iteration, rank))``, set by the loop before it.
"""

from __future__ import annotations

import torch
from torch import nn

from spgnet.config import RunConfig
from spgnet.engine.train import distributed
from spgnet.engine.train.losses import segmentation_loss
from spgnet.engine.train.precision import Precision
from spgnet.errors import SpgnetError


def step_seed(seed: int, iteration: int, rank: int = 0) -> int:
    """Seed of the global RNGs during ``iteration`` (dropout and the like)."""
    return (int(seed) * 1_000_003 + int(iteration) * 9_973 + int(rank)) % (2**63 - 1)


def memory_format(model: nn.Module, device: torch.device) -> torch.memory_format:
    """Channels-last on CUDA (tensor cores read NHWC without transposes), except for networks with
    InPlaceABN layers, whose kernels are written for NCHW-contiguous tensors."""
    if device.type != "cuda" or any("ABN" in type(m).__name__ for m in model.modules()):
        return torch.contiguous_format
    return torch.channels_last


def forward(net: nn.Module, images: torch.Tensor, cfg: RunConfig, world_size: int) -> dict:
    """``net(images)``, with the error of a norm layer that sees one value per channel (the GAP
    branch on one crop per process, unsynchronised) turned into one line naming the fixes."""
    try:
        return net(images)
    except ValueError as err:
        if "per channel" not in str(err):
            raise
        # see spgnet.models.norm for why this stays an error
        if cfg.model.norm != "inplace_abn_sync":
            why = f"norm '{cfg.model.norm}' is not synchronised"
        elif world_size == 1:
            why = "norm 'inplace_abn_sync' is synchronised over one process"
        else:
            why = "that layer is not synchronised over the processes"
        raise SpgnetError(
            f"a normalisation layer got one value per channel ({str(err).splitlines()[0]}); "
            f"each of the {world_size} process(es) has {images.shape[0]} crop(s) of the "
            f"batch of {cfg.train.batch_size} and {why}: use at least 2 crops per process "
            "(train.batch_size), or norm 'inplace_abn_sync' over at least 2 processes "
            "(the paper: 8 GPUs x 1 crop)"
        ) from None


def train_step(net: nn.Module, batch: dict, optimizer: torch.optim.Optimizer, cfg: RunConfig, *,
               precision: Precision, scaler, info, fmt=torch.contiguous_format) -> tuple[dict[str, float], bool]:
    """One SGD step on this process's part of a global batch.

    Returns the global batch's losses ``{"loss": total, "loss_stage1": ..., ...}`` (the same on
    every process) and whether the update was skipped: with a gradient scaler when the loss or
    the gradients were not finite (the scaler lowers its scale; a non-finite forward pass also
    leaves the norm layers' running statistics as they were), without one when the loss was not
    finite (the caller then stops).
    """
    images = batch["image"].to(info.device, non_blocking=True).contiguous(memory_format=fmt)
    labels = batch["label"].to(info.device, non_blocking=True).long()
    buffers = [b for b in net.buffers() if b.is_floating_point()] if scaler is not None else []
    before = [b.clone() for b in buffers]
    # forward under autocast; each loss is this process's share of the global batch's mean
    with torch.autocast(device_type=info.device.type, dtype=precision.dtype, enabled=precision.dtype is not None):
        outputs = forward(net, images, cfg, info.world_size)
        loss, terms = segmentation_loss(outputs, labels, cfg.train, supervise=cfg.model.supervise,
                                        sync=info.distributed)
    shares = torch.stack([loss.detach().float()] + [v.detach().float() for v in terms.values()])
    values = distributed.all_reduce_sum(shares, info)  # the global batch's losses
    finite = bool(torch.isfinite(values).all())
    # backward: DDP averages gradients over processes, the shares must add up: scale by world size
    optimizer.zero_grad(set_to_none=True)
    skipped = not finite
    if scaler is not None:
        scale = scaler.get_scale()
        scaler.scale(loss * info.world_size).backward()
        scaler.step(optimizer)  # skips the update when the gradients are not finite
        scaler.update()
        skipped = skipped or scaler.get_scale() < scale
        if not finite and buffers:  # the forward pass's running statistics are not finite either
            torch._foreach_copy_(buffers, before)
    elif finite:
        (loss * info.world_size).backward()
        optimizer.step()
    names = ["loss"] + [f"loss_{k}" for k in terms]
    return dict(zip(names, values.tolist())), skipped
