"""Progress a person can follow: counts, rate and ETA for long stages (LLM requests, embedding, annotation).

One library (tqdm): a bar on a terminal; otherwise (logs, CI, Airflow) a log line at most every ``every_s``
seconds and one at the end. Nothing shows when the logger is quieter than INFO (``conceptkit -q``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

logger = logging.getLogger("conceptkit.progress")


class Progress:
    """``update(n)`` as work completes; reaching ``total`` or ``close()`` (or leaving the ``with`` block) prints
    the last line."""

    def __init__(self, total: int, desc: str, *, unit: str = "item", every_s: float = 10.0) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.unit = unit
        self.every_s = every_s
        self.done = 0
        self._started = time.monotonic()
        self._last_log = self._started
        self._closed = False
        self._bar: Any = None
        self._enabled = logger.isEnabledFor(logging.INFO)
        if self._enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total or None, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        if n <= 0 or self._closed:
            return
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        if self.total and self.done >= self.total:
            self.close()  # the final line as soon as the work is done, not when the worker tears down
            return
        if self._bar is not None:
            return
        now = time.monotonic()
        if self._enabled and now - self._last_log >= self.every_s and self.done < self.total:
            self._last_log = now
            logger.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """``desc: done/total unit (pct), rate/s, ETA`` as of ``now``."""
        elapsed = max((now or time.monotonic()) - self._started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}s"
        if self.total:
            text += f" ({100 * self.done / self.total:.0f}%)"
        text += f", {rate:.1f}/s"
        if self.total and self.done < self.total and rate > 0:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        elif self.done >= self.total:
            text += f", done in {_duration(elapsed)}"
        return text

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        if self._enabled and self.done:
            logger.info("%s", self.line())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
