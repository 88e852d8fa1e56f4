"""A progress line for long jobs, written one line at a time so cluster log files stay readable."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Prints `desc: done/total unit [####----] pct | elapsed | left ~ETA | extra`.

    A line is printed at most every `interval` seconds and always for the last item, so a
    user tailing a job's log sees how far it is and how long it has left.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0,
                 interval: float = 5.0, stream: TextIO | None = None, width: int = 20):
        self.total, self.desc, self.unit, self.width = total, desc, unit, width
        self.done = self.start_done = initial
        self.interval = interval
        self.stream = stream
        self.started = time.monotonic()
        self.last_print = -float("inf")

    def update(self, n: int = 1, **extra: object) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last_print >= self.interval or self.done >= self.total:
            self.last_print = now
            print(self.line(now, extra), file=self.stream or sys.stderr, flush=True)

    def line(self, now: float, extra: dict) -> str:
        elapsed = now - self.started
        fresh = self.done - self.start_done
        left = elapsed / fresh * (self.total - self.done) if fresh else float("nan")
        filled = int(self.width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        text = (f"{self.desc}: {self.done}/{self.total} {self.unit} [{bar}] {100 * self.done / max(self.total, 1):3.0f}%"
                f" | elapsed {_clock(elapsed)} | left ~{_clock(left) if fresh else '?'}")
        if extra:
            text += " | " + " ".join(f"{k} {v}" for k, v in extra.items())
        return text
