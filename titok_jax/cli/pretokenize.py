"""``titok-pretokenize``: a dataset -> sharded token ids + ``manifest.json`` (the generator's data).

  titok-pretokenize --config=configs/titok_b64.py --workdir=RUN [--out=DIR] \\
      [--config.pretokenize.tokenizer_weights=tokenizer_titok_b64.bin --config.pretokenize.allow_pickle=True]

Settings: ``config.pretokenize``; output ``--out`` or ``WORKDIR/pretokenize`` (``titok_jax.steps.pretokenize``).
"""

from __future__ import annotations

from absl import flags

from titok_jax.cli import common
from titok_jax.config import with_changes
from titok_jax.steps import pretokenize

common.define_config()
common.define_workdir("Run directory (its finished tokenizer stage; outputs under WORKDIR/pretokenize).")
common.define_distributed()
flags.DEFINE_string("out", None, "Output directory (overrides config.pretokenize.out_dir).")
FLAGS = flags.FLAGS


def main(argv) -> None:
    del argv
    common.require("workdir")
    cfg = common.run_config()
    if FLAGS.out:
        cfg = with_changes(cfg, pretokenize={"out_dir": FLAGS.out})
    common.print_summary([pretokenize.run(cfg, FLAGS.workdir)])


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
