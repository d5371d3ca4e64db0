"""``titok-sample``: class-conditional generation, MaskGIT sampling and the tokenizer's decoder in one jit.

  titok-sample --config=configs/titok_b64.py --workdir=RUN --classes=1,2,3 --out=DIR
  titok-sample --config=configs/titok_b64.py --tokenizer_weights=tokenizer_titok_b64.bin \\
      --generator_weights=generator_titok_b64.bin --allow_pickle --classes=all --per_class=50 --out=DIR
  titok-sample --tokenizer_weights=hf:yucornetto/tokenizer_titok_l32_imagenet \\
      --generator_weights=hf:yucornetto/generator_titok_l32_imagenet --classes=207,360 --out=DIR

The generator and tokenizer come from a training run (``--workdir``: ``generator/final`` + its
finished tokenizer stage), from Orbax params directories (``--generator_checkpoint`` and
``--tokenizer_checkpoint``, e.g. from ``titok-port import``) or from official weights (files, hub
folders or hub names; without ``--config`` their ``config.json`` say which models they are). Output
files: ``titok_jax.steps.sample.write_outputs``. Sampling settings default to the config's
(``config.generator.sampling``: the official inference settings of the released models); flags override them.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from absl import app, flags

from titok_jax.api import Sampler
from titok_jax.cli import common
from titok_jax.config.models import GUIDANCE_DECAYS, MASK_SCHEDULES
from titok_jax.steps.sample import parse_classes, write_outputs

common.define_config()
common.define_workdir("Training run directory (its generator/final and finished tokenizer stage).")
flags.DEFINE_string("generator_checkpoint", None, "Orbax params of the generator.")
flags.DEFINE_string("tokenizer_checkpoint", None, "Orbax params of the tokenizer.")
flags.DEFINE_string("generator_weights", None, "Official generator weights (.safetensors / .bin / hub folder / "
                    "hub name hf:ORG/NAME).")  # fmt: skip
flags.DEFINE_string("tokenizer_weights", None, "Official tokenizer weights (.safetensors / .bin / hub folder / "
                    "hub name hf:ORG/NAME).")  # fmt: skip
flags.DEFINE_bool("allow_pickle", False, "Read PyTorch pickles via torch.load(weights_only=True).")
flags.DEFINE_string("classes", "all", "Comma-separated class ids, or 'all' (0..num_classes-1).")
flags.DEFINE_integer("per_class", 1, "Samples per listed class.")
flags.DEFINE_integer("seed", 0, "Random seed (the same seed gives the same samples).")
flags.DEFINE_integer("batch_size", 32, "Most samples per compiled call (min(this, the request), rounded up "
                     "to the device count).")  # fmt: skip
flags.DEFINE_integer("num_steps", None, "Override: sampling steps.")
flags.DEFINE_float("guidance_scale", None, "Override: classifier-free guidance scale.")
flags.DEFINE_enum("guidance_decay", None, list(GUIDANCE_DECAYS), "Override: guidance schedule.")
flags.DEFINE_float("guidance_scale_pow", None, "Override: exponent of the power-cosine schedule.")
flags.DEFINE_float("randomize_temperature", None, "Override: Gumbel temperature (0 = deterministic).")
flags.DEFINE_bool("softmax_temperature_annealing", None, "Override: anneal the softmax temperature.")
flags.DEFINE_enum("mask_schedule", None, list(MASK_SCHEDULES), "Override: re-masking schedule (official: arccos).")
flags.DEFINE_string("out", None, "Output directory.")
FLAGS = flags.FLAGS
log = logging.getLogger("titok_jax.cli.sample")
_OVERRIDES = ("num_steps", "guidance_scale", "guidance_decay", "guidance_scale_pow", "randomize_temperature",
              "softmax_temperature_annealing", "mask_schedule")  # fmt: skip


def main(argv) -> None:
    del argv
    common.require("out")
    from_weights = bool(FLAGS.generator_weights and FLAGS.tokenizer_weights) and not FLAGS.workdir
    cfg = common.run_config(FLAGS.tokenizer_weights, FLAGS.generator_weights) if from_weights else common.run_config()
    settings = cfg.sampling(**{k: FLAGS[k].value for k in _OVERRIDES})
    if FLAGS.workdir:
        sampler = Sampler.from_workdir(cfg, FLAGS.workdir, settings)
    elif FLAGS.generator_checkpoint and FLAGS.tokenizer_checkpoint:
        sampler = Sampler.from_checkpoints(cfg, FLAGS.generator_checkpoint, FLAGS.tokenizer_checkpoint, settings)
    elif FLAGS.generator_weights and FLAGS.tokenizer_weights:
        sampler = Sampler.from_weights(cfg, FLAGS.tokenizer_weights, FLAGS.generator_weights, settings,
                                       FLAGS.allow_pickle)  # fmt: skip
    else:
        raise app.UsageError("give --workdir=RUN, or --generator_checkpoint and --tokenizer_checkpoint, or "
                             "--generator_weights and --tokenizer_weights")  # fmt: skip
    labels = parse_classes(FLAGS.classes, sampler.gen_config.condition_num_classes, FLAGS.per_class)
    log.info("[sample] %d samples, settings %s", len(labels), dataclasses.asdict(settings))
    t0 = time.time()
    ids, images = sampler.sample(labels, seed=FLAGS.seed, batch_size=FLAGS.batch_size)
    dt = time.time() - t0
    paths = write_outputs(FLAGS.out, ids, images, labels)
    log.info(
        "[sample] done in %.1fs (%.2f samples/s incl. compile): %s", dt, len(labels) / dt, ", ".join(paths.values())
    )


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
