"""``titok-train`` (also ``python -m titok_jax.main``): run the stages and steps a config lists.

  titok-train --config=configs/demo.py --workdir=out/demo
  titok-train --config=configs/titok_b64.py --workdir=runs/b64 \\
      --config.data.data_dir=~/tensorflow_datasets --config.teacher.checkpoint=ckpt/maskgit_vqgan

Training stages (one loop, ``titok_jax.train``): ``teacher``, ``stage1``, ``stage2``, ``single_stage``,
``generator``; other steps (``titok_jax.steps``): ``pretokenize``, ``sample``, ``evaluate``,
``linear_probe``. Re-running the same command resumes wherever it stopped and skips what is done; a
resume refuses changed training settings unless ``--allow_config_change`` is given. One run per
``--workdir`` at a time (``WORKDIR/RUN.lock``).
Multi-host: one process per host through JAX's distributed runtime (``--coordinator_address`` /
``--num_processes`` / ``--process_id``, or ``--distributed`` on TPU pods and SLURM).
"""

from __future__ import annotations

import jax
from absl import flags

from titok_jax.cli import common
from titok_jax.steps import pipeline, report

common.define_config()
common.define_workdir()
common.define_distributed()
flags.DEFINE_integer("max_steps", None, "Stop each stage after this many steps in this invocation (smoke tests).")
flags.DEFINE_bool("allow_config_change", False, "Resume although training-relevant config fields differ from "
                  "WORKDIR/config.json (e.g. a lower learning rate after a NaN stop).")  # fmt: skip
FLAGS = flags.FLAGS


def main(argv) -> None:
    del argv
    common.require("workdir")
    summaries = pipeline.run_all(common.run_config(), FLAGS.workdir, FLAGS.max_steps, FLAGS.allow_config_change)
    common.print_summary(summaries)
    text = report.format_report(summaries)
    if text and jax.process_index() == 0:
        print(text, flush=True)


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
