"""Where a figure was measured: the CPU model, its vector/matrix flags and the thread count.

Every timing this project prints or writes names the machine it comes from, because the same
command runs several times faster or slower on another CPU: bfloat16 is native only with
``avx512_bf16`` or AMX and emulated (slow) elsewhere. Linux only reads ``/proc/cpuinfo``; other
systems fall back to :func:`platform.processor`.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

#: The flags that decide CPU speed for this project's work (oneDNN kernels).
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = "", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = frozenset(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine() or "unknown CPU", flags


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` shows it (e.g. ``"AMD EPYC"``)."""
    return _cpuinfo()[0]


def cpu_flags() -> dict[str, bool]:
    """``{flag: present}`` for :data:`RELEVANT_FLAGS`."""
    flags = _cpuinfo()[1]
    return {flag: flag in flags for flag in RELEVANT_FLAGS}


def num_threads() -> int:
    """Threads torch uses for intra-op work (``torch.get_num_threads()``; ``OMP_NUM_THREADS`` or
    the CPU count when torch is not imported)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


def describe() -> dict:
    """``{"cpu": model, "flags": {...}, "threads": n}``: what a timing was measured on."""
    return {"cpu": cpu_model(), "flags": cpu_flags(), "threads": num_threads()}


def describe_line(threads: int | None = None) -> str:
    """One line for benchmark output, e.g. ``"AMD EPYC (avx2 avx512f avx512_bf16; no amx), 2 threads"``."""
    flags = cpu_flags()
    present = [f for f in ("avx2", "avx512f", "avx512_bf16") if flags[f]]
    absent = [f for f in ("avx2", "avx512f", "avx512_bf16") if not flags[f]]
    amx = "amx" if flags["amx_bf16"] or flags["amx_tile"] else "no amx"
    parts = " ".join(present) or "no avx2"
    if absent:
        parts += "; no " + " no ".join(absent)
    count = num_threads() if threads is None else threads
    return f"{cpu_model()} ({parts}; {amx}), {count} thread{'s' if count != 1 else ''}"
