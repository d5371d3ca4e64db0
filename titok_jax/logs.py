"""Console logging for the command lines: one handler on the ``titok_jax`` logger, process 0 talks.

Every module logs through ``logging.getLogger(__name__)``. ``setup()`` (called by every command
line; call it yourself in a notebook to see progress) prints INFO and above to stdout as the plain
message (warnings prefixed ``warning:``). With several processes only process 0 prints INFO, unless a
record is marked per-process with ``extra=EVERY_PROCESS`` (e.g. "process 1/2: wrote shard 3").
Library chatter (absl, orbax, jax) stays at WARNING.

``progress(total, desc)`` is the one progress display of every long job (sample, evaluate, pretokenize,
reconstruct, linear_probe), on process 0 only: a tqdm bar with rate and ETA on a terminal; elsewhere
(log files, notebooks, CI) the same numbers as a log line every ``interval`` seconds and at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional

import jax
import tqdm

EVERY_PROCESS = {"every_process": True}


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        return msg


class _ProcessFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or getattr(record, "every_process", False):
            return True
        return jax.process_index() == 0


def setup(level: int = logging.INFO) -> None:
    """Send ``titok_jax`` messages to stdout (idempotent)."""
    logger = logging.getLogger("titok_jax")
    logger.setLevel(level)
    logger.propagate = False
    if not any(getattr(h, "_titok", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler._titok = True
        handler.setFormatter(_Format())
        handler.addFilter(_ProcessFilter())
        logger.addHandler(handler)
    for name in ("absl", "orbax", "jax", "grain"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


# ---------------------------------------------------------------------------------------------- progress
PROGRESS_INTERVAL = 30.0  # seconds between two progress lines when no terminal shows a bar


def _clock() -> float:
    return time.monotonic()


def _terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class Progress:
    """``update(n)`` after each piece of work; ``close()`` (or a ``with`` block) at the end."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "img", interval: float = PROGRESS_INTERVAL,
                 enabled: Optional[bool] = None):  # fmt: skip
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.n = 0
        self._t0 = _clock()
        self._first: Optional[tuple] = None  # (time, n) after the first update: rates leave compilation out
        self._last_line = 0.0
        self._bar = None
        if self.enabled and _terminal():
            self._bar = tqdm.tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(int(n))
            return
        now = _clock()
        if self._first is None:
            self._first = (now, self.n)
            self._log(now)
        elif now - self._last_line >= self.interval:
            self._log(now)

    def line(self, now: Optional[float] = None) -> str:
        """'[desc] n/total unit (p%), r unit/s, elapsed t, ETA e' (the rate after the first update)."""
        now = _clock() if now is None else now
        elapsed = now - self._t0
        rate = None
        if self._first is not None and now > self._first[0] and self.n > self._first[1]:
            rate = (self.n - self._first[1]) / (now - self._first[0])
        total = f"/{self.total:,}" if self.total else ""
        pct = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        text = f"[{self.desc}] {self.n:,}{total} {self.unit}{pct}, elapsed {tqdm.tqdm.format_interval(elapsed)}"
        if rate:
            text += f", {rate:.3g} {self.unit}/s"
            if self.total and self.n < self.total:
                text += f", ETA {tqdm.tqdm.format_interval((self.total - self.n) / rate)}"
        return text

    def _log(self, now: float) -> None:
        self._last_line = now
        logging.getLogger("titok_jax.progress").info("%s", self.line(now))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._first is not None:
            self._log(_clock())
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total: Optional[int], desc: str, unit: str = "img", interval: float = PROGRESS_INTERVAL,
             enabled: Optional[bool] = None) -> Progress:  # fmt: skip
    """The progress display of a job of ``total`` ``unit``s (module docstring); a no-op off process 0."""
    return Progress(total, desc, unit, interval, enabled)
