"""Same-run comparison with the official PyTorch code (``titok-bench --compare_official=PATH``).

The official side runs in a child process (``official_worker.py`` under ``--official_python``, a Python
with torch and what the official models import), with as many torch threads as this process has CPUs;
the child inherits this process's CPU affinity (``--threads`` pins both). For every row both sides
are set up and warmed up (our compilation and first call, the official first call: none of them is
timed), then the timed calls alternate -- ours, official, ours, official, ... -- so that both see the
same machine load, and each side reports the median of its calls.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Dict, List, Optional

from titok_jax.benchmarks import common
from titok_jax.benchmarks.inference import Task

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "official_worker.py")


class OfficialError(RuntimeError):
    pass


class Official:
    """The official models in a child process, one JSON request per line."""

    def __init__(self, src: str, python: str, threads: int):
        if not os.path.isdir(os.path.join(src, "modeling")):
            raise ValueError(f"--compare_official={src} is not a checkout of bytedance/1d-tokenizer (no modeling/)")
        cmd = [python, "-W", "ignore::FutureWarning", WORKER, f"--src={src}", f"--threads={threads}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self._read()

    def _read(self) -> Dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise OfficialError(f"the official worker exited (code {self.proc.poll()}); its messages are above")
        msg = json.loads(line)
        if "error" in msg:
            raise OfficialError(f"official side: {msg['error']}")
        return msg

    def request(self, **msg) -> Dict[str, Any]:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def load(self, model: str, rows, batch: Dict[str, int], sampling) -> None:
        s = dict(num_steps=sampling.num_steps, guidance_scale=sampling.guidance_scale,
                 guidance_decay=sampling.guidance_decay, guidance_scale_pow=sampling.guidance_scale_pow,
                 randomize_temperature=sampling.randomize_temperature,
                 softmax_temperature_annealing=sampling.softmax_temperature_annealing)  # fmt: skip
        self.request(op="load", model=model, rows=list(rows), batch=batch, sampling=s)

    def call(self, row: str) -> float:
        return float(self.request(op="call", row=row)["seconds"])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()


def time_both(task: Task, official: Official, iters: int) -> Dict[str, List[float]]:
    """Warm-up of both sides (not counted), then ``iters`` alternating timed calls of each."""
    task.call()
    official.call(task.task)
    ours, theirs = [], []
    for _ in range(iters):
        ours.append(common.time_call(task.call))
        theirs.append(official.call(task.task))
    return {"ours": ours, "official": theirs}


def result(task: Task, times: Dict[str, List[float]]) -> Dict[str, Any]:
    o, t = common.median(times["ours"]), common.median(times["official"])
    return dict(model=task.model, task=task.task, batch=task.batch, dtype=task.dtype, ours_s=o, official_s=t,
                ours_images_per_s=task.batch / o, official_images_per_s=task.batch / t, ratio=t / o,
                ours_times_s=times["ours"], official_times_s=times["official"], compile_s=task.compile_s,
                load=common.load_average())  # fmt: skip


COLUMNS = ("model", "task", "batch", "ours img/s", "official img/s", "ours / official", "ours s/batch",
           "official s/batch", "load average after the row")  # fmt: skip


def table_head(official_info: Optional[Dict[str, Any]] = None) -> str:
    lines = []
    if official_info:
        lines.append(f"official: bytedance/1d-tokenizer, torch {official_info.get('torch')}, "
                     f"{official_info.get('threads')} threads")  # fmt: skip
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    return "\n".join(lines)


def table_row(r: Dict[str, Any]) -> str:
    load = r["load"].replace("load average ", "")
    return (f"| {r['model']} | {r['task']} | {r['batch']} | {r['ours_images_per_s']:.3f} | "
            f"{r['official_images_per_s']:.3f} | {r['ratio']:.2f}x | {r['ours_s']:.2f} | {r['official_s']:.2f} | "
            f"{load} |")  # fmt: skip
