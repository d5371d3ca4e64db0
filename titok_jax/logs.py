"""Console logging for the command lines: one handler on the ``titok_jax`` logger, process 0 talks.

Every module logs through ``logging.getLogger(__name__)``. ``setup()`` (called by every command
line; call it yourself in a notebook to see progress) prints INFO and above to stdout as the plain
message (warnings prefixed ``warning:``). With several processes only process 0 prints INFO, unless a
record is marked per-process with ``extra=EVERY_PROCESS`` (e.g. "process 1/2: wrote shard 3").
Library chatter (absl, orbax, jax) stays at WARNING.
"""

from __future__ import annotations

import logging
import sys

import jax

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
