"""Which precision a training run uses: ``train.amp`` (``"auto"``, ``true`` or ``false``) per device.

Mixed precision only where it is faster (issue 12):

========  ==================================================  =========================================
device    ``auto`` (the default of every profile)             ``true``
========  ==================================================  =========================================
CPU       bfloat16 autocast when the CPU runs bfloat16         bfloat16 autocast; when the CPU has no
          natively (:func:`native_bf16`), else float32         native bfloat16 a warning says it is
                                                              emulated (several times slower)
CUDA      float16 autocast with a ``GradScaler`` (inplace-abn's kernels refuse bfloat16)
other     float32 (no autocast policy for that device type)   float32, with the reason
========  ==================================================  =========================================

``false`` is float32 everywhere. A network with inplace-abn's in-place layers (``InPlaceABN``,
``InPlaceABNSync``: the paper profile's norm) trains in float32 on a CPU whatever ``train.amp``
says, with the reason logged: inplace-abn's kernels have no bfloat16 (the first step would stop
with ``weight is not compatible with x``); on CUDA they take float16. oneDNN runs bfloat16 convolutions natively only with AVX-512 BF16
(``avx512_bf16``) or AMX (``amx_bf16``); on other x86 CPUs it converts every operand (on an AVX2
EPYC: ``t3-1stage`` 4 iterations 24.2 s in bfloat16 against 7.7 s in float32, issue 12).
``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` alone is not enough: it only asks for AVX-512
(BW/VL/DQ), which Skylake-class CPUs have without bfloat16 arithmetic, so on x86 the CPU's flags
(:mod:`spgnet.runtime.hardware`) decide; elsewhere (ARM) torch's check does.

Evaluation (``spgnet evaluate``, :mod:`spgnet.engine.evaluation.inference`, the attention figures) never
uses autocast: it runs in float32 on every CPU.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass

import torch

from spgnet.config import ConfigError

#: Autocast dtype of mixed precision per device type (float16 + GradScaler on CUDA).
AUTOCAST_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}

_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


@dataclass(frozen=True)
class Precision:
    """The precision a run uses.

    ``dtype``: the autocast dtype (``torch.bfloat16`` / ``torch.float16``), or None for float32
    (autocast off); ``use_grad_scaler``: wrap the loss in ``torch.amp.GradScaler`` (float16 on
    CUDA); ``reason``: why, in words; ``emulated``: bfloat16 on a CPU without native bfloat16.
    """

    dtype: torch.dtype | None
    use_grad_scaler: bool
    reason: str
    emulated: bool = False

    @property
    def enabled(self) -> bool:
        """Whether autocast is on (pass as ``torch.autocast(..., enabled=...)``)."""
        return self.dtype is not None

    @property
    def name(self) -> str:
        """``"bfloat16"``, ``"float16"`` or ``"float32"`` (what the run records)."""
        return str(self.dtype or torch.float32).replace("torch.", "")

    def line(self, prefix: str = "spgnet train") -> str:
        """One line for stderr: the precision and why (``warning:`` when emulated)."""
        kind = "warning: " if self.emulated else ""
        return f"{prefix}: {kind}precision {self.name}: {self.reason}"

    def log(self, prefix: str = "spgnet train") -> None:
        print(self.line(prefix), file=sys.stderr, flush=True)


def native_bf16() -> bool:
    """True when this CPU runs bfloat16 arithmetic in hardware (``avx512_bf16`` or ``amx_bf16`` on
    x86, torch's oneDNN check elsewhere)."""
    from spgnet.runtime import hardware

    if platform.machine().lower() in _X86:
        flags = hardware.cpu_flags()
        if any(flags.values()):  # the flags were readable (Linux /proc/cpuinfo)
            return bool(flags["avx512_bf16"] or flags["amx_bf16"])
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def parse_amp(amp) -> str | bool:
    """``train.amp`` as ``"auto"``, True or False (accepts the strings ``"true"``/``"false"``);
    raises :class:`ConfigError` naming the value otherwise."""
    if isinstance(amp, bool):
        return amp
    text = str(amp).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"train.amp: '{amp}' is not one of auto, true, false")


def resolve_precision(amp, device: torch.device | str, *, inplace_abn: bool = False) -> Precision:
    """The :class:`Precision` of ``train.amp`` = ``amp`` on ``device`` for a network with
    (``inplace_abn``) or without inplace-abn's in-place layers (see the module docstring;
    :func:`uses_inplace_abn` tells which).

    Raises :class:`ConfigError` for an ``amp`` other than ``"auto"``/True/False.
    """
    amp = parse_amp(amp)
    kind = torch.device(device).type
    if amp is False:
        return Precision(None, False, "train.amp is false")
    if kind == "cpu" and inplace_abn:
        return Precision(None, False, f"train.amp is {amp} but the network's InPlaceABN layers have no bfloat16 "
                         "kernels on CPU (inplace-abn): float32")
    if kind == "cuda":
        return Precision(torch.float16, True, f"train.amp is {amp} on CUDA: float16 autocast with a "
                         "gradient scaler (inplace-abn's kernels refuse bfloat16)")
    if kind != "cpu":
        return Precision(None, False, f"train.amp is {amp} but {kind} has no autocast policy here: float32")
    from spgnet.runtime.hardware import cpu_model

    if native_bf16():
        return Precision(torch.bfloat16, False, f"train.amp is {amp} and {cpu_model()} runs bfloat16 "
                         "natively (avx512_bf16/amx)")
    if amp == "auto":
        return Precision(None, False, f"train.amp is auto and {cpu_model()} has no native bfloat16 "
                         "(no avx512_bf16/amx): float32 is faster")
    return Precision(torch.bfloat16, False, f"train.amp is true but {cpu_model()} has no native bfloat16 "
                     "(no avx512_bf16/amx): bfloat16 is emulated, several times slower than float32 "
                     "(train.amp: auto picks float32 here)", emulated=True)


def uses_inplace_abn(model: torch.nn.Module) -> bool:
    """Whether ``model`` holds a layer that runs inplace-abn's kernels (``InPlaceABN``,
    ``InPlaceABNSync``), whose precision choice differs on CPU (:func:`resolve_precision`)."""
    from spgnet.models.norm import scales_by_abs_weight

    return any(scales_by_abs_weight(m) for m in model.modules())
