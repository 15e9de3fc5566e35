"""Multi-process training under ``torchrun``: process group, sharding, InPlaceABNSync on CPU.

``torchrun --nproc_per_node=G -m spgnet train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU, so CI can
run two CPU processes) and picks the device. Without those variables it is one process.

Each iteration's global batch of ``train.batch_size`` samples is split between the ranks
(``batch[rank::world_size]``, see :func:`shard`; shares may differ by one crop), so the global
batch and the sample order are the same whatever the number of processes.

``InPlaceABNSync`` reduces its batch statistics with a CUDA-only kernel; :func:`enable_cpu_sync_bn`
replaces that reduction with the same count-weighted merge in Python (gloo all-gathers the
per-process mean, variance and count), and :func:`convert_inplace_abn_sync` turns the
``InPlaceABN`` layers a CPU build falls back to into ``InPlaceABNSync`` layers with the same
parameters, so a CPU DDP run synchronises batch statistics like the paper's GPUs do. The layers
are :class:`spgnet.models.norm.InPlaceABNSync`, which also train on one crop per process (the
global-average-pooling branch's 1x1 map then has one value per channel in each process, and at
least 2 over the group).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from spgnet.errors import SpgnetError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``train.device`` as a torch device; a clear error when CUDA is asked for but missing."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpgnetError(
                f"train.device is '{name}' but CUDA is not available here "
                "(use a CPU profile such as --profile mini, or a machine with a GPU)"
            )
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def die_with_launcher() -> bool:
    """Under ``torchrun`` on Linux: ask the kernel to SIGKILL this rank when its launcher dies.

    torchrun starts each rank in a session of its own (``start_new_session``), so a ``kill -9`` of
    torchrun, or of the job's process group, leaves the ranks training on and writing to the run
    folder, where a rerun (``--unlock``, ``--rerun-incomplete``) then races them. SLURM's cgroup
    ends them; a local machine does not. ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` does: the signal
    comes when the thread that started the rank ends (torch's elastic agent starts them from its
    main thread). A rank already handed to init (its launcher gone before the request) exits at
    once. Returns whether it was set (False outside torchrun or Linux)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() == 1:  # the launcher ended before the request: nothing would signal us
        os._exit(1)
    return True


def setup(device_name: str, timeout_s: float = 600.0) -> DistInfo:
    """Join the torchrun process group if there is one; return rank, world size and device. Each
    rank ends with its launcher (:func:`die_with_launcher`)."""
    die_with_launcher()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size <= 1:
        return DistInfo(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    if device.type == "cpu":
        enable_cpu_sync_bn()
    return DistInfo(rank, world_size, local_rank, device, backend)


def cleanup() -> None:
    """Leave the process group (a barrier first: tearing gloo down mid-flight aborts)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def shard(batch: list, rank: int, world_size: int) -> list:
    """This rank's part of a global batch: ``batch[rank::world_size]``. The parts may differ by one
    crop (28 on 8 processes: 4, 4, 4, 4, 3, 3, 3, 3); the losses weigh every pixel of the global
    batch alike (:mod:`spgnet.engine.train.losses`). Every process needs at least one crop."""
    if len(batch) < world_size:
        raise SpgnetError(f"train.batch_size {len(batch)} is smaller than the {world_size} processes "
                          "(each needs at least one crop)")
    return batch[rank::world_size]


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``values`` over the ranks (a detached copy; ``values`` itself for one process)."""
    values = values.detach().clone()
    if info.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def broadcast_object(obj, info: DistInfo):
    if not info.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


# --------------------------------------------------------------------------------------------
# InPlaceABNSync on CPU
# --------------------------------------------------------------------------------------------


def merge_statistics(all_mean: torch.Tensor, all_var: torch.Tensor, all_count: torch.Tensor):
    """Merge per-process (mean, biased var, count) into the statistics of the union.

    ``all_mean``/``all_var``: ``[world, C]``; ``all_count``: ``[world]`` or ``[world, 1]``.
    Returns ``(mean [C], var [C], count)`` with ``count`` shaped like one process's count.
    """
    count = all_count.reshape(all_count.shape[0], -1)[:, :1].to(all_mean.dtype)  # [world, 1]
    total = count.sum(0)  # [1]
    mean = (count * all_mean).sum(0) / total
    var = (count * (all_var + (all_mean - mean) ** 2)).sum(0) / total
    return mean, var, all_count.sum(0)


def _python_reduce_forward(mean, var, count, group, world_size):
    from inplace_abn.functions import InPlaceABN

    if mean.is_cuda:
        return _cuda_reduce_forward(mean, var, count, group, world_size)
    all_mean, all_var, all_count = InPlaceABN._gather_values(mean, var, count, group=group, world_size=world_size)
    return merge_statistics(all_mean, all_var, all_count)


_cuda_reduce_forward = None


def enable_cpu_sync_bn() -> bool:
    """Let ``InPlaceABNSync`` reduce statistics of CPU tensors (CUDA keeps the native kernel)."""
    global _cuda_reduce_forward
    try:
        from inplace_abn.functions import InPlaceABN
    except ImportError:  # pragma: no cover - inplace-abn is a dependency
        return False
    current = InPlaceABN.__dict__["_reduce_forward"]
    if getattr(current, "__func__", None) is _python_reduce_forward:
        return True
    _cuda_reduce_forward = current.__func__
    InPlaceABN._reduce_forward = staticmethod(_python_reduce_forward)
    return True


def convert_inplace_abn_sync(module: nn.Module) -> nn.Module:
    """Replace every ``InPlaceABN`` (not already synchronised) by an ``InPlaceABNSync`` sharing
    its parameters and buffers (an ``input_sign`` included), like
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``."""
    from inplace_abn import InPlaceABN

    from spgnet.models.norm import InPlaceABNSync  # inplace-abn's, allowing 1 value per process
    from spgnet.models.norm import add_input_sign, has_input_sign

    converted = module
    if type(module) is InPlaceABN:
        converted = InPlaceABNSync(module.num_features, eps=module.eps, momentum=module.momentum,
                                   affine=module.affine, track_running_stats=module.track_running_stats,
                                   activation=module.activation, activation_param=module.activation_param)
        # inplace-abn's default group is dist.group.WORLD as it was at import time (often None,
        # i.e. no synchronisation): name the group explicitly, now that it exists.
        converted.set_group(dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
        with torch.no_grad():
            if module.affine:
                converted.weight = module.weight
                converted.bias = module.bias
            if module.track_running_stats:
                converted.running_mean = module.running_mean
                converted.running_var = module.running_var
                converted.num_batches_tracked = module.num_batches_tracked
        if has_input_sign(module):  # DenseNet's pre-activation norms (spgnet.models.norm.add_input_sign)
            add_input_sign(converted).input_sign = module.input_sign
        converted.train(module.training)
    for name, child in module.named_children():
        new_child = convert_inplace_abn_sync(child)
        if new_child is not child:
            converted.add_module(name, new_child)
    return converted


def detached_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` that holds no process group: every synchronised norm's ``group``
    is None in the copy (in eval mode a synchronised norm computes what its one-process twin
    does). ``copy.deepcopy`` of a network trained under ``torchrun`` otherwise fails on the group
    (``cannot pickle 'ProcessGroup' object``), as MLflow's model logging did."""
    import copy

    groups = {id(m.group): None for m in module.modules() if getattr(m, "group", None) is not None}
    return copy.deepcopy(module, memo=groups)


def set_sync_groups(module: nn.Module) -> int:
    """Point every ``InPlaceABNSync`` at the current WORLD group; returns how many there are.

    inplace-abn binds its default group when the package is imported; imported before
    ``init_process_group`` that default is None and the layer silently stops synchronising.
    """
    try:
        from inplace_abn import InPlaceABNSync
    except ImportError:  # pragma: no cover
        return 0
    group = dist.group.WORLD if dist.is_available() and dist.is_initialized() else None
    layers = [m for m in module.modules() if isinstance(m, InPlaceABNSync)]
    for layer in layers:
        layer.set_group(group)
    return len(layers)
