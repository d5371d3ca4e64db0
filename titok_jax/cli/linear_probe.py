"""``titok-linear-probe``: a linear classifier on frozen tokenizer features.

  titok-linear-probe --config=configs/titok_b64.py --workdir=RUN \\
      --config.data.source=folder --config.data.path=/data/train --config.data.eval_path=/data/val

Settings: ``config.linear_probe``; results in ``WORKDIR/linear_probe/results.json`` (``titok_jax.steps.linear_probe``).
"""

from __future__ import annotations

from absl import flags

from titok_jax.cli import common
from titok_jax.steps import linear_probe

common.define_config()
common.define_workdir("Run directory (its finished tokenizer stage; outputs under WORKDIR/linear_probe).")
common.define_distributed()
FLAGS = flags.FLAGS


def main(argv) -> None:
    del argv
    common.require("workdir")
    cfg = common.run_config()
    common.print_summary([linear_probe.run(cfg, FLAGS.workdir)])


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
