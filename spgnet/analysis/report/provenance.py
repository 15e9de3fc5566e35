"""Whether each result comes from the run its profile describes (issue 20: the report trusted
whatever results it found).

A training run records what it trained with in ``train_metrics.json`` (``iterations`` done,
``schedule``: dataset, split, crop, batch size, planned iterations, device; ``data.synthetic``:
whether ``spgnet make-synthetic``'s manifest was in the data root). :func:`run_deviations` compares
that record with the profile's settings for the run, and the report marks every cell computed from
a run that differs, in the cell itself (``61.20 ≠ 6 of 80000 iterations, batch 2 not 8, cpu not
cuda, synthetic data``), so that a rehearsal's numbers, or a hand-made run's, never pass for the
profile's. A record that predates these keys is compared on what it holds.
"""

from __future__ import annotations

#: what the report writes before a cell's deviations (and alone in the per-class cells)
MARK = "≠"


def _device_type(device) -> str:
    return str(device or "").split(":")[0]


def run_deviations(recorded: dict, cfg, profile_synthetic: bool) -> list[str]:
    """How the run that wrote ``recorded`` (its ``train_metrics.json``) differs from ``cfg`` (the
    profile's :class:`spgnet.config.RunConfig` for that run), in short words; ``profile_synthetic``:
    whether the profile generates the run's data set. Empty when it is the run the profile
    describes."""
    t = cfg.train
    schedule = recorded.get("schedule") or {}
    found = []
    done = recorded.get("iterations")
    if done is not None and int(done) != t.iterations:
        found.append(f"{done} of {t.iterations} iterations")
    for key, label in (("dataset", "data set"), ("split", "split"), ("crop", "crop"), ("batch_size", "batch")):
        value = schedule.get(key)
        if value is not None and value != getattr(t, key):
            found.append(f"{label} {value} not {getattr(t, key)}")
    device = _device_type(recorded.get("device") or schedule.get("device"))
    if device and device != _device_type(t.device):
        found.append(f"{device} not {_device_type(t.device)}")
    synthetic = (recorded.get("data") or {}).get("synthetic")
    if synthetic is not None and bool(synthetic) != profile_synthetic:
        found.append("synthetic data" if synthetic else "real data, not the profile's synthetic set")
    return found


def marked(cell: str, deviations: list[str]) -> str:
    """``cell`` followed by the mark and the deviations (``cell`` alone when there are none)."""
    return f"{cell} {MARK} {', '.join(deviations)}" if deviations else cell
