"""``titok-bench-schedules``: the masking-schedule ablation (``titok_jax.benchmarks.mask_schedules``).

titok-bench-schedules --config=configs/demo.py --workdir=out/demo [--schedules=arccos,linear,cosine] [--steps=100]

Needs the run's pre-tokenized data (``WORKDIR/pretokenize``: run the demo, or the pretokenize step, first).
"""

from __future__ import annotations

import os

from absl import app, flags

from titok_jax.benchmarks import mask_schedules
from titok_jax.cli import common
from titok_jax.config.models import MASK_SCHEDULES

common.define_config()
common.define_workdir()
flags.DEFINE_list("schedules", list(MASK_SCHEDULES), f"Masking schedules to compare ({', '.join(MASK_SCHEDULES)}).")
flags.DEFINE_integer("steps", 100, "Generator training steps per schedule.")
FLAGS = flags.FLAGS


def main(argv) -> None:
    del argv
    common.require("workdir")
    bad = [s for s in FLAGS.schedules if s not in MASK_SCHEDULES]
    if bad:
        raise app.UsageError(f"unknown schedule(s) {bad}; known: {list(MASK_SCHEDULES)}")
    if FLAGS.steps < 1:
        raise app.UsageError("--steps must be >= 1")
    cfg = common.run_config()
    workdir = os.path.abspath(os.path.expanduser(FLAGS.workdir))
    rows = mask_schedules.ablation(cfg, workdir, FLAGS.schedules, FLAGS.steps)
    print(mask_schedules.format_table(rows), flush=True)


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
