"""Progress of a training run: a tqdm bar on a terminal, plain periodic log lines otherwise.

``Progress(total, start, log_every, label)`` is updated once per iteration with the loss and
learning rate. On a TTY (stderr) it draws a bar showing loss, lr and speed; in a pipeline (logs
redirected to a file) it prints one line every ``log_every`` iterations::

    [t3-spg-sigmoid] it 50/150 loss 1.9342 lr 0.007065 2.41 it/s eta 0:00:41

``SPGNET_PROGRESS=bar|lines|off`` forces a mode. Only rank 0 shows anything.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta


def _mode(enabled: bool) -> str:
    if not enabled:
        return "off"
    forced = os.environ.get("SPGNET_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    stream = sys.stderr
    return "bar" if hasattr(stream, "isatty") and stream.isatty() else "lines"


class Progress:
    def __init__(self, total: int, start: int = 0, log_every: int = 50, label: str = "",
                 enabled: bool = True, stream=None):
        self.total = int(total)
        self.done = int(start)
        self.start = int(start)
        self.log_every = max(1, int(log_every))
        self.label = label
        self.mode = _mode(enabled)
        self.stream = stream or sys.stderr
        self._t0 = time.perf_counter()
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.start, desc=label or "train",
                             unit="it", dynamic_ncols=True, file=self.stream)

    @property
    def speed(self) -> float:
        elapsed = time.perf_counter() - self._t0
        return (self.done - self.start) / elapsed if elapsed > 0 else 0.0

    def update(self, loss: float, lr: float, extra: dict | None = None) -> None:
        self.done += 1
        if self.mode == "bar":
            self._bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            self._bar.update(1)
        elif self.mode == "lines" and (self.done % self.log_every == 0 or self.done == self.total):
            speed = self.speed
            eta = timedelta(seconds=int((self.total - self.done) / speed)) if speed > 0 else "?"
            tag = f"[{self.label}] " if self.label else ""
            more = "".join(f" {k} {v:.4f}" for k, v in (extra or {}).items())
            print(f"{tag}it {self.done}/{self.total} loss {loss:.4f} lr {lr:.6f}{more} "
                  f"{speed:.2f} it/s eta {eta}", file=self.stream, flush=True)

    def write(self, message: str) -> None:
        if self.mode == "off":
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
