"""Keep freed tensor memory in the process instead of handing it back to the kernel (glibc).

Why: glibc's ``malloc`` serves every block above its mmap threshold (128 KiB, raised dynamically
to at most 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``. A segmentation network
allocates a new buffer of tens of MiB for almost every layer output at stride 4 (SPGNet R50x2
D=256 at 1024x2048: 128 MiB per 256-channel map), so each pass re-faults every 4 KiB page of
every such buffer and the kernel zeroes it first. On this project's 2-core CPU (512x1024 input,
channels-last, norms folded) that was over 200,000 page faults per pass of SPGNet R50x2 (none
once the heap has grown) and 9% of its inference time, 5% of deeplabv3_resnet101's
(``benchmarks/speed.py --height 512 --width 1024 --fuse on --malloc system`` against the default:
1.87 -> 1.70 s and 4.48 -> 4.27 s per image). PyTorch's CPU performance tuning guide recommends jemalloc or
TCMalloc for this reason; raising glibc's mmap and trim thresholds gets the same reuse with no
extra library: big blocks come from the heap and stay there for the next pass.

The cost is that the process keeps its peak heap until it exits, which is what a training or
evaluation process needs anyway. ``spgnet train``, ``evaluate`` and ``attention`` call
:func:`keep_freed_memory` at start; ``SPGNET_MALLOC=system`` leaves glibc's defaults alone.
Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: ``mallopt`` parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to 1 GiB come from the heap; the heap is trimmed only when 2 GiB at its top are free.
MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = (1 << 31) - 1
ENV = "SPGNET_MALLOC"
CHOICES = ("keep", "system")


def keep_freed_memory(choice: str | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); True if applied.
    ``choice`` (``keep`` / ``system``) defaults to ``$SPGNET_MALLOC``, else ``keep``."""
    choice = choice or os.environ.get(ENV, "keep")
    if choice not in CHOICES:
        from spgnet.errors import SpgnetError

        raise SpgnetError(f"{ENV}={choice!r}: unknown value (valid: {', '.join(CHOICES)})")
    if choice == "system" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
