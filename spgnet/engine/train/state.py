"""What the training loop carries between iterations and across ``--resume``, and its CSV log.

:class:`LoopState` is saved in every checkpoint (``"state"``, its log rows under ``"log"``), so a
resumed run continues the logging window, the elapsed time and the best validation score exactly;
:class:`TrainLog` is ``train_log.csv`` (rewritten from the checkpoint's rows on resume).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from spgnet.atomic import atomic_path


@dataclasses.dataclass
class LoopState:
    """What the loop carries from one iteration to the next and across ``--resume`` (saved in each
    checkpoint under ``"state"``, its rows under ``"log"``)."""

    iteration: int = 0
    rows: list = dataclasses.field(default_factory=list)  # train_log.csv so far
    window: dict | None = None  # sums of the losses since the last log row
    seconds: float = 0.0  # training time so far, over every segment
    segments: list = dataclasses.field(default_factory=list)  # iteration each (re)start began at
    saved: int = 0  # iteration of the last checkpoint
    last: dict | None = None  # the last step's losses
    skipped: int = 0  # steps skipped for a non-finite loss (gradient scaler)
    nonfinite_run: int = 0  # ... of them in a row, now
    best: dict | None = None  # {"val_miou", "iteration"} of best.pt

    def checkpoint_entries(self) -> dict:
        state = dataclasses.asdict(self)
        return {"log": state.pop("rows"), "state": state}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "LoopState":
        known = {f.name for f in dataclasses.fields(cls)}
        state = {k: v for k, v in (checkpoint.get("state") or {}).items() if k in known}
        state.update(iteration=int(checkpoint["iteration"]), rows=list(checkpoint.get("log") or []))
        return cls(**state)

    def add(self, values: dict) -> None:
        """Count one step's losses into the logging window."""
        self.last = values
        if self.window is None:
            self.window = {"count": 0, "sums": {}}
        self.window["count"] += 1
        for name, value in values.items():
            self.window["sums"][name] = self.window["sums"].get(name, 0.0) + value

    def close_window(self, lr: float, extra: dict | None = None) -> dict:
        """The log row of the window that ends at this iteration (the window restarts)."""
        count, sums = self.window["count"], self.window["sums"]
        row = {"step": self.iteration, "loss": sums["loss"] / count, "lr": lr}
        row.update({name: total / count for name, total in sums.items() if name != "loss"})
        row.update(extra or {})
        self.window = None
        self.rows.append(row)
        return row


class TrainLog:
    """``train_log.csv``: rewritten from the checkpoint's rows on resume, one row appended per window."""

    def __init__(self, path: Path, rows: list[dict], enabled: bool):
        self.path, self.enabled = path, enabled
        self.columns = list(rows[0]) if rows else None
        if enabled and rows:
            self._write(rows)
        elif enabled and path.exists():
            path.unlink()  # a fresh run replaces an old log

    def _write(self, rows: list[dict]) -> None:
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict) -> None:
        if not self.enabled:
            return
        if self.columns is None:
            self.columns = list(row)
            self._write([row])
            return
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(row)
