"""Metric output at the edge of training: TensorBoard event files, console lines, JSON lines, and the
opt-in profiler window (``ProfileWindow``).

TensorBoard files are written with tensorboardX (no TensorFlow needed, so training also runs on
GPU hosts without TensorFlow; it writes ``gs://`` log directories itself); clu provides the parameter
overview. Only process 0 writes metrics; every process writes its own profiler trace (one file per host).
``metrics.jsonl`` is appended to on local filesystems only (object stores cannot append); a ``gs://`` run
keeps its scalars in the event files.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict, Mapping, Optional

import jax
import numpy as np
from tensorboardX import SummaryWriter

from titok_jax import workdir


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class MetricWriter:
    """Scalars/images to TensorBoard + ``metrics.jsonl``; progress lines with steps/s and ETA."""

    def __init__(self, logdir: str, enabled: bool = True, prefix: str = ""):
        self.enabled = enabled
        self.prefix = prefix
        self._tb = None
        self._jsonl = None
        if enabled:
            workdir.path(logdir).mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(logdir)
            if not workdir.is_url(logdir):
                self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: float(np.asarray(v)) for k, v in scalars.items()}
        for k, v in clean.items():
            self._tb.add_scalar(f"{self.prefix}{k}", v, step)
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
            self._jsonl.flush()

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        if not self.enabled:
            return
        for k, img in images.items():
            self._tb.add_image(f"{self.prefix}{k}", np.clip(np.asarray(img), 0, 1), step, dataformats="HWC")

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            if self._jsonl is not None:
                self._jsonl.close()


class Progress:
    """Steps/s and ETA over the steps run in this process (resume-aware)."""

    def __init__(self, start_step: int, total_steps: int):
        self.start_step, self.total = start_step, total_steps
        self.t0: Optional[float] = None
        self.first_step: Optional[int] = None

    def mark(self, step: int) -> Dict[str, float]:
        now = time.time()
        if self.t0 is None:  # first completed step includes compilation: start timing after it
            self.t0, self.first_step = now, step
            return {}
        done = step - self.first_step
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - step) / max(rate, 1e-9)
        return {"steps_per_sec": rate, "eta_seconds": eta}

    @staticmethod
    def line(stage: str, step: int, total: int, metrics: Mapping[str, Any], timing: Mapping[str, float]) -> str:
        keys = [
            k for k in ("loss", "ce", "mse", "perceptual", "g_adv", "d_loss", "quantizer_loss", "lr") if k in metrics
        ]
        parts = [f"{k} {float(np.asarray(metrics[k])):.4g}" for k in keys]
        if timing:
            parts.append(f"{timing['steps_per_sec']:.2f} steps/s")
            parts.append(f"ETA {_fmt_duration(timing['eta_seconds'])}")
        return f"[{stage}] step {step}/{total} " + ", ".join(parts)


class ProfileWindow:
    """A ``jax.profiler`` trace of steps ``[start, start + num_steps)`` into ``logdir`` (written under
    ``logdir/plugins/profile/``: TensorBoard's profile tab, or Perfetto / XProf). ``num_steps=0``: off.
    Call ``before_step(step, state)`` at the top of every step and ``close(state)`` after the loop; a run
    resumed inside the window traces from its first step."""

    def __init__(self, start: int, num_steps: int, logdir: str, name: str = ""):
        self.start, self.stop, self.logdir, self.name = int(start), int(start) + int(num_steps), logdir, name
        self.active = False
        self.done = num_steps <= 0

    def before_step(self, step: int, state: Any) -> None:
        if self.done:
            return
        if not self.active and self.start <= step < self.stop:
            workdir.path(self.logdir).mkdir(parents=True, exist_ok=True)  # gs:// too (epath)
            jax.profiler.start_trace(self.logdir)
            self.active = True
            logging.getLogger(__name__).info("[%s] profiling steps %d..%d into %s", self.name, step, self.stop - 1,
                                             self.logdir)  # fmt: skip
        elif self.active and step >= self.stop:
            self.close(state)

    def close(self, state: Any = None) -> None:
        if self.active:
            jax.block_until_ready(state)  # the traced steps' device work belongs in the trace
            jax.profiler.stop_trace()
            logging.getLogger(__name__).info("[%s] profiler trace written under %s", self.name,
                                             os.path.join(self.logdir, "plugins", "profile"))  # fmt: skip
        self.active, self.done = False, True
