"""``titok-evaluate``: a tokenizer's rFID / IS / PSNR / SSIM / codebook usage, and gFID / IS of samples.

  titok-evaluate --config=configs/titok_b64.py --workdir=RUN \\
      --config.evaluate.inception_weights=pt_inception-2015-12-05-6726825d.pth --config.evaluate.allow_pickle=True
  titok-evaluate --config=configs/titok_b64.py --workdir=RUN \\
      --config.evaluate.samples=out/samples/samples.npz --config.evaluate.reference=VIRTUAL_imagenet256_labeled.npz

Settings: ``config.evaluate``; results in ``WORKDIR/evaluate/results.json`` (``titok_jax.steps.evaluate``).
"""

from __future__ import annotations

from absl import flags

from titok_jax.cli import common
from titok_jax.steps import evaluate

common.define_config()
common.define_workdir("Run directory (its finished tokenizer stage; outputs under WORKDIR/evaluate).")
common.define_distributed()
FLAGS = flags.FLAGS


def main(argv) -> None:
    del argv
    common.require("workdir")
    cfg = common.run_config()
    common.print_summary([evaluate.run(cfg, FLAGS.workdir)])


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
