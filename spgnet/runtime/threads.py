"""The CPU threads of a training or evaluation process: from its profile, applied by ``spgnet``.

A CPU kernel's sum runs in another order with another thread count, and 30 bfloat16 iterations from
random weights amplify the difference: the mini profile's ``t3-1stage`` ended at loss 1.50131 under
Snakemake (one thread, from the profile) and at 1.50088 under ``dvc repro`` (torch's default of two
on a 2-core machine), and its report cells differed by up to a point of mIoU (issue 22, case 10).
So a run's thread count is a setting of its profile, ``resources.<kind>.threads`` shared by the
job's processes (one per GPU, or ``resources.train.processes`` on the CPU), applied by ``spgnet
train`` / ``spgnet evaluate`` themselves (:func:`apply_profile_threads`) whoever launches them, and
recorded with the run (``train_metrics.json``'s ``threads``, the evaluation JSON's ``threads``, the
MLflow runs' parameters). ``SPGNET_THREADS=N`` overrides it for one command (e.g. a benchmark).
"""

from __future__ import annotations

import os

#: Overrides the profile's count for one command.
THREADS_ENV = "SPGNET_THREADS"


def profile_threads(profile, kind: str, processes: int = 1) -> int:
    """OpenMP threads of each of the ``processes`` processes of a ``kind`` job (``"train"`` or
    ``"evaluate"``) under ``profile`` (a :class:`spgnet.config.Profile`): its
    ``resources.<kind>.threads`` (default 1) divided among them, at least one each."""
    spec = profile.resources.get(kind)
    threads = spec.threads if spec is not None else 1
    return max(1, threads // max(1, processes))


def apply_profile_threads(profile, kind: str, processes: int = 1) -> int:
    """Set this process's intra-op thread count (``torch.set_num_threads``) to
    :func:`profile_threads` (or ``SPGNET_THREADS``) and ``OMP_NUM_THREADS`` for the processes it
    starts; returns the count. Call before the first tensor operation."""
    import torch

    from spgnet.errors import SpgnetError

    override = os.environ.get(THREADS_ENV, "").strip()
    if override and not (override.isdigit() and int(override) > 0):
        raise SpgnetError(f"{THREADS_ENV}={override!r}: expected a positive number of threads")
    threads = int(override) if override else profile_threads(profile, kind, processes)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
