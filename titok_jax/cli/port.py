"""``titok-port``: move weights between titok_jax and the official code.

  titok-port import --config=configs/titok_b64.py --weights=FILE --out=CKPT_DIR
  titok-port import --weights=hf:yucornetto/tokenizer_titok_l32_imagenet --out=CKPT_DIR
  titok-port export --config=configs/titok_b64.py (--checkpoint=CKPT_DIR | --random_init=SEED) --out=DIR

import: an official PyTorch state_dict (``.safetensors``; ``.bin`` with --allow_pickle and torch
installed; or a hub folder with model.safetensors + config.json, or a Hugging Face hub name -- then
``--config`` may be left out: config.json says which model it is), or for the MaskGIT-VQGAN the
original MaskGIT Flax checkpoint (``tokenizer_imagenet256_checkpoint``), -> an Orbax checkpoint that
every other command and the training stages start from.

export: titok_jax params -> ``DIR/model.safetensors`` with exactly the official key names and
shapes, plus ``DIR/config.json`` for ``TiTok.from_pretrained(DIR)``; for the MaskGIT-VQGAN
``--format=maskgit_jax`` writes ``DIR/tokenizer_checkpoint`` in the original MaskGIT Flax format instead.

--generator: the same for the config's MaskGIT generator (ImageBert / UViTBert; ``config.generator``).
The generator export always writes ``DIR/config.json`` (the official config dict: ``model.generator``
with the sampling settings, ``model.vq_model``); transformers' ``position_ids`` buffer, present in
some ImageBert checkpoints, is ignored on import and not exported.
"""

from __future__ import annotations

import logging
import time

import jax
from absl import app, flags

from titok_jax import checkpoint
from titok_jax.api import weights as weights_lib
from titok_jax.cli import common
from titok_jax.models import registry

common.define_config()
flags.DEFINE_string(
    "weights",
    None,
    "import: weight file (.safetensors, .bin, hub folder, hub name hf:ORG/NAME, or MaskGIT Flax checkpoint).",
)
flags.DEFINE_string("checkpoint", None, "export: titok_jax Orbax params directory.")
flags.DEFINE_integer("random_init", None, "export: a random initialisation with this seed instead of a checkpoint.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_enum(
    "format",
    "auto",
    ["auto", "torch", "maskgit_jax"],
    "import: source format (auto: by file name); export: torch (auto) or maskgit_jax (MaskGIT-VQGAN).",
)
flags.DEFINE_bool("allow_pickle", False, "import: read PyTorch pickles (.bin/.pt) via torch.load(weights_only=True).")
flags.DEFINE_bool(
    "generator", False, "Port the config's MaskGIT generator (ImageBert/UViTBert) instead of the tokenizer."
)
FLAGS = flags.FLAGS
log = logging.getLogger("titok_jax.cli.port")


def main(argv) -> None:
    if len(argv) != 2 or argv[1] not in ("import", "export"):
        raise app.UsageError("expected a command: import or export\n" + __doc__)
    common.require("out")
    t0 = time.time()
    if argv[1] == "import":
        common.require("weights")
        cfg = common.run_config(**{("generator_weights" if FLAGS.generator else "tokenizer_weights"): FLAGS.weights})
        handle, params, meta = weights_lib.import_weights(cfg, FLAGS.weights, FLAGS.format, FLAGS.allow_pickle,
                                                          generator=FLAGS.generator)  # fmt: skip
        log.info("[port] writing Orbax checkpoint to %s", FLAGS.out)
        step_dir = checkpoint.save_params(FLAGS.out, params, meta)
        log.info("[port] done in %.1fs: %s", time.time() - t0, step_dir)
        return
    source = common.one_of("checkpoint", "random_init")
    cfg = common.run_config()
    handle = registry.handle(cfg, FLAGS.generator)
    if source == "random_init":
        log.info("[port] random initialisation of %s with seed %d", handle.name, FLAGS.random_init)
        params = handle.init(jax.random.key(FLAGS.random_init))
    else:
        log.info("[port] restoring %s", FLAGS.checkpoint)
        params = handle.load(FLAGS.checkpoint)
    fmt = "torch" if FLAGS.format == "auto" else FLAGS.format
    state, paths = weights_lib.export_weights(cfg, params, FLAGS.out, generator=FLAGS.generator, fmt=fmt)
    log.info("[port] wrote %d tensors: %s", len(state), ", ".join(paths.values()))
    log.info("[port] done in %.1fs", time.time() - t0)


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
