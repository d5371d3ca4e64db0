"""Port weights between titok_jax and the official code.

  python -m titok_jax.port import --config=configs/titok_b64.py --weights=FILE --out=CKPT_DIR
  python -m titok_jax.port export --config=configs/titok_b64.py (--checkpoint=CKPT_DIR | --random-init=SEED) --out=DIR

import: an official PyTorch state_dict (``.safetensors``; ``.bin`` with --allow-pickle and torch
installed; or a hub folder with model.safetensors + config.json), or for the MaskGIT-VQGAN the
original MaskGIT Flax checkpoint (``tokenizer_imagenet256_checkpoint``), -> an Orbax checkpoint that
every other command and the training stages start from.

export: titok_jax params -> ``DIR/model.safetensors`` with exactly the official key names and
shapes, plus ``DIR/config.json`` for ``TiTok.from_pretrained(DIR)``.

--generator: the same for the config's MaskGIT generator (ImageBert / UViTBert; ``config.generator``,
or the preset's generator when the config has no such section):

  python -m titok_jax.port import --config=configs/titok_b64.py --generator \\
      --weights=generator_titok_b64.safetensors --out=GEN_CKPT_DIR
  python -m titok_jax.port export --config=configs/titok_b64.py --generator --checkpoint=GEN_CKPT_DIR --out=DIR

The generator export always writes ``DIR/config.json`` (the official config dict: ``model.generator``
with the sampling settings, ``model.vq_model``); transformers' ``position_ids`` buffer, present in
some ImageBert checkpoints, is ignored on import and not exported.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Model config file, e.g. configs/titok_b64.py.", lock_config=True
)
flags.DEFINE_string(
    "weights", None, "import: weight file (.safetensors, .bin, hub folder, or MaskGIT Flax checkpoint)."
)
flags.DEFINE_string("checkpoint", None, "export: titok_jax Orbax checkpoint directory.")
flags.DEFINE_integer("random-init", None, "export: use a random initialisation with this seed instead of a checkpoint.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_enum("format", "auto", ["auto", "torch", "maskgit_jax"], "import: source format (auto: by file name).")
flags.DEFINE_bool(
    "allow-pickle", False, "import: allow reading PyTorch pickles (.bin/.pt) via torch.load(weights_only=True)."
)
flags.DEFINE_bool(
    "generator", False, "Port the config's MaskGIT generator (ImageBert/UViTBert) instead of the tokenizer."
)
FLAGS = flags.FLAGS

USAGE = __doc__


def _log(msg: str) -> None:
    print(f"[port] {msg}", flush=True)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) != 2 or argv[1] not in ("import", "export"):
        raise app.UsageError("expected a command: import or export\n" + USAGE)
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required (e.g. --config=configs/titok_b64.py)")
    out = FLAGS.out
    if not out:
        raise app.UsageError("--out is required")
    t0 = time.time()
    from titok_jax import checkpoint
    from titok_jax.porting import api
    from titok_jax.porting.io import WeightFileError
    from titok_jax.porting.mapping import PortError

    try:
        if argv[1] == "import":
            if not FLAGS.weights:
                raise app.UsageError("import needs --weights=FILE")
            handle, params, meta = api.import_weights(
                config, FLAGS.weights, FLAGS.format, FLAGS["allow-pickle"].value, generator=FLAGS.generator
            )
            _log(f"writing Orbax checkpoint to {out}")
            step_dir = checkpoint.save_params(out, params, meta)
            _log(f"done in {time.time() - t0:.1f}s: {step_dir}")
        else:
            seed = FLAGS["random-init"].value
            if (FLAGS.checkpoint is None) == (seed is None):
                raise app.UsageError("export needs exactly one of --checkpoint=DIR or --random-init=SEED")
            import jax

            from titok_jax.models import registry

            handle = registry.from_config(config, generator=FLAGS.generator)
            if seed is not None:
                _log(f"random initialisation of {handle.name} with seed {seed}")
                params = handle.init(jax.random.key(seed))
            else:
                _log(f"restoring {FLAGS.checkpoint}")
                params = checkpoint.load_params(FLAGS.checkpoint, handle.abstract())
            state, paths = api.export_weights(config, params, out, generator=FLAGS.generator)
            _log(f"wrote {len(state)} tensors: " + ", ".join(paths.values()))
            _log(f"done in {time.time() - t0:.1f}s")
    except (PortError, WeightFileError, checkpoint.CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
