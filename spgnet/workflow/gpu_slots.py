"""Each local GPU job gets GPUs of its own: ``python -m spgnet.workflow.gpu_slots --gpus N -- CMD ...``.

Snakemake counts a ``gpu`` resource (``--resources gpu=8``) so that the GPUs its running jobs ask
for never add up to more than the machine has, but it does not say *which* GPUs a job may use:
without help every job lands on ``cuda:0``. This wrapper takes ``N`` free GPU slots, sets
``CUDA_VISIBLE_DEVICES`` to them and replaces itself with ``CMD`` (``os.execvpe``), so ``CMD``'s
exit status, signals and output are its own.

A slot is an exclusive ``fcntl.flock`` on ``<lock dir>/gpu-<id>.lock`` (lock dir:
``$SPGNET_GPU_LOCK_DIR``, default ``/tmp/spgnet-gpu-slots``, shared by every user and workflow of
the machine). The lock's file descriptors are inherited through the ``exec``, so ``CMD`` holds its
slots until it ends, however it ends: the kernel drops a ``flock`` when the last descriptor of the
lock closes, on a crash or ``SIGKILL`` too. A wrapper that finds fewer than ``N`` slots free takes
none (no partial holdings, so two jobs cannot each hold half of what the other needs), says once on
stderr which slots are busy and by which process, and tries again every second (``--timeout``
seconds at most, default: no limit).

The GPUs to share out are, first found:

1. ``CUDA_VISIBLE_DEVICES`` when set (indices or UUIDs, as CUDA reads it): restrict a workflow to
   some GPUs with ``CUDA_VISIBLE_DEVICES=2,3 snakemake ...``; tests fake a GPU count this way;
2. ``nvidia-smi -L`` (the driver's list; no CUDA context, no ``import torch``);
3. ``torch.cuda.device_count()`` where ``nvidia-smi`` is missing.

Under SLURM (``SLURM_JOB_ID`` set) the scheduler has already given the job its GPUs
(``CUDA_VISIBLE_DEVICES`` of the job step): ``CMD`` runs with them as they are, without locks;
the wrapper only checks that there are at least ``N`` when the variable is set.

:func:`launcher` writes the command prefix the Snakemake rules put in front of a ``spgnet`` verb:
plain ``spgnet`` without GPUs (``torchrun`` without the wrapper for a CPU job of several processes),
the wrapper for one GPU, the wrapper and ``torchrun --standalone --nproc_per_node N`` (one process
per GPU, DDP; ``spgnet.engine.train.distributed``) for several.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spgnet.errors import SpgnetError

#: Environment variable naming the machine-wide folder of slot locks.
LOCK_DIR_ENV = "SPGNET_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = Path("/tmp/spgnet-gpu-slots")
#: Seconds between two attempts when too few slots are free.
POLL_S = 1.0

_NO_DEVICE = ("", "-1", "NoDevFiles")


def lock_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The folder of slot locks: ``$SPGNET_GPU_LOCK_DIR`` or ``/tmp/spgnet-gpu-slots``."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


def parse_visible_devices(value: str) -> list[str]:
    """The device ids of a ``CUDA_VISIBLE_DEVICES`` value, in order (CUDA stops at ``-1``)."""
    ids = []
    for item in value.split(","):
        item = item.strip()
        if item in _NO_DEVICE:
            break
        ids.append(item)
    return ids


def _nvidia_smi_ids() -> list[str] | None:
    """GPU indices from ``nvidia-smi -L`` ("GPU 0: NVIDIA H200 (UUID: ...)"); None without it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        listing = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return re.findall(r"^GPU (\d+):", listing, re.M)


def _torch_ids() -> list[str]:
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def machine_gpus(environ: Mapping[str, str] | None = None) -> tuple[list[str], str]:
    """``(ids, source)``: the GPU ids this machine shares out and where they were found
    (``CUDA_VISIBLE_DEVICES``, ``nvidia-smi -L`` or ``torch.cuda.device_count()``)."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return parse_visible_devices(environ["CUDA_VISIBLE_DEVICES"]), "CUDA_VISIBLE_DEVICES"
    ids = _nvidia_smi_ids()
    if ids is not None:
        return ids, "nvidia-smi -L"
    return _torch_ids(), "torch.cuda.device_count()"


def _slot_path(folder: Path, gpu: str) -> Path:
    return folder / f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', gpu)}.lock"


def _open_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:  # other users' workflows lock the same files
        os.fchmod(fd, 0o666)
    except PermissionError:
        pass
    return fd


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


@dataclass
class SlotLease:
    """GPU slots held by this process: ``ids`` (for ``CUDA_VISIBLE_DEVICES``) and their lock files'
    descriptors; :meth:`release` (or leaving a ``with`` block, or the process ending) frees them."""

    ids: list[str]
    fds: list[int] = field(default_factory=list)

    @property
    def visible_devices(self) -> str:
        return ",".join(self.ids)

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)  # closing the last descriptor drops the flock
        self.fds = []

    def __enter__(self) -> SlotLease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_acquire(count: int, gpus: Sequence[str], folder: Path) -> tuple[SlotLease | None, dict[str, str]]:
    """Take ``count`` free slots of ``gpus`` (lowest first) or none: ``(lease, {})`` or
    ``(None, {busy id: holder pid})``."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(folder, 0o1777)  # machine-wide, like /tmp
    except PermissionError:
        pass
    lease, busy = SlotLease([]), {}
    for gpu in gpus:
        if len(lease.ids) == count:
            break
        path = _slot_path(folder, gpu)
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            busy[gpu] = _holder(path)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        lease.ids.append(gpu)
        lease.fds.append(fd)
    if len(lease.ids) < count:
        lease.release()
        return None, busy
    return lease, {}


def acquire(count: int, gpus: Sequence[str], folder: Path, timeout: float | None = None,
            poll_s: float = POLL_S, say=None) -> SlotLease:
    """Wait until ``count`` slots of ``gpus`` are free and take them.

    Raises :class:`SpgnetError` when ``count`` exceeds ``len(gpus)`` or after ``timeout`` seconds.
    ``say(line)`` is called once, when the first attempt finds too few free slots.
    """
    if count < 1:
        raise SpgnetError(f"--gpus must be at least 1, got {count}")
    if count > len(gpus):
        raise SpgnetError(f"this job needs {count} GPUs; the machine shares out {len(gpus)} "
                          f"({', '.join(gpus) or 'none'})")
    deadline = None if timeout is None else time.monotonic() + timeout
    waited = False
    while True:
        lease, busy = try_acquire(count, gpus, folder)
        if lease is not None:
            return lease
        if deadline is not None and time.monotonic() >= deadline:
            raise SpgnetError(f"no {count} free GPU slots after {timeout:g} s (busy: {_busy_text(busy)}; locks in {folder})")
        if not waited and say is not None:
            say(f"waiting for {count} free GPU slots (busy: {_busy_text(busy)}; locks in {folder})")
        waited = True
        time.sleep(poll_s)


def _busy_text(busy: Mapping[str, str]) -> str:
    return ", ".join(f"GPU {gpu} held by pid {pid}" for gpu, pid in busy.items())


def launcher(gpus: int, gpus_field: str = "{resources.gpu}", processes: int = 1) -> str:
    """The words a Snakemake rule puts where ``spgnet`` would stand, for a job of ``gpus`` GPUs.

    ``0``: ``spgnet`` (CPU profiles keep their plain command lines), or with ``processes`` N > 1
    (a profile's ``resources.train.processes``: the paper path rehearsed on a CPU)
    ``torchrun --standalone --nproc_per_node N -m spgnet`` without the slot wrapper (gloo, no GPU to
    hand out); ``1``: the slot wrapper around ``spgnet``; more: the wrapper around ``torchrun
    --standalone --nproc_per_node N -m spgnet``, one process per GPU. ``gpus_field`` is written in
    place of the number (by default Snakemake's ``{resources.gpu}``, so ``--resources gpu=K``
    below the profile's count gives ``K`` processes and the rule's code, hence Snakemake's rerun
    trigger, does not depend on ``K``).
    """
    if gpus <= 0:
        if processes > 1:
            return f"torchrun --standalone --nproc_per_node {processes} -m spgnet"
        return "spgnet"
    wrap = f"python -m spgnet.workflow.gpu_slots --gpus {gpus_field} --"
    if gpus == 1:
        return f"{wrap} spgnet"
    return f"{wrap} torchrun --standalone --nproc_per_node {gpus_field} -m spgnet"


def _exec(command: Sequence[str], env: Mapping[str, str], keep_fds: Sequence[int] = ()) -> None:
    for fd in keep_fds:
        os.set_inheritable(fd, True)
    try:
        os.execvpe(command[0], list(command), dict(env))
    except OSError as err:
        raise SpgnetError(f"cannot run {command[0]!r}: {err.strerror}") from None


def run(count: int, command: Sequence[str], environ: Mapping[str, str] | None = None,
        timeout: float | None = None) -> None:
    """Take ``count`` GPU slots and ``exec`` ``command`` with ``CUDA_VISIBLE_DEVICES`` set to them
    (under SLURM: with the job's own GPUs). Does not return; raises :class:`SpgnetError`."""
    env = dict(os.environ if environ is None else environ)
    if not command:
        raise SpgnetError("no command after '--'")
    if count < 1:
        raise SpgnetError(f"--gpus must be at least 1, got {count} (a GPU job left none by --resources gpu=0?)")
    if env.get("SLURM_JOB_ID"):
        if "CUDA_VISIBLE_DEVICES" in env:
            given = parse_visible_devices(env["CUDA_VISIBLE_DEVICES"])
            if len(given) < count:
                raise SpgnetError(f"this job needs {count} GPUs; SLURM job {env['SLURM_JOB_ID']} has "
                                  f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r}")
        _exec(command, env)
    gpus, source = machine_gpus(env)
    if count > len(gpus):
        raise SpgnetError(f"this job needs {count} GPUs; {source} gives {len(gpus)}"
                          f"{' (' + ', '.join(gpus) + ')' if gpus else ''}: lower --resources gpu=K")
    lease = acquire(count, gpus, lock_dir(env), timeout=timeout, say=_say)
    env["CUDA_VISIBLE_DEVICES"] = lease.visible_devices
    _say(f"CUDA_VISIBLE_DEVICES={lease.visible_devices}")
    _exec(command, env, keep_fds=lease.fds)


def _say(line: str) -> None:
    sys.stderr.write(f"spgnet gpu_slots: {line}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spgnet.workflow.gpu_slots", description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, required=True, help="GPU slots the command needs")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (default: wait)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        run(args.gpus, command, timeout=args.timeout)
    except SpgnetError as err:
        _say(str(err))
        return 2
    return 0  # not reached: run() replaces this process


if __name__ == "__main__":
    sys.exit(main())
