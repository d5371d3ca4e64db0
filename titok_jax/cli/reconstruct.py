"""``titok-reconstruct``: images -> token ids -> images, with the official eval preprocessing.

  titok-reconstruct --config=configs/titok_b64.py (--checkpoint=CKPT_DIR | --weights=FILE | --random_init=SEED)
      --images=a.png --images=b.jpg ... --out=DIR
  titok-reconstruct --weights=hf:yucornetto/tokenizer_titok_l32_imagenet --images=skimage:all --out=DIR

``--weights`` takes a file, a hub folder or a Hugging Face hub name; ``--config`` is optional when the
weights' ``config.json`` says which model they are.

Writes DIR/ids.npy (int32 [N, K]; VAE models: DIR/latents.npy), DIR/recon.npy (float32 [N, H, W, 3]
clamped to [0, 1]), DIR/grid.png (inputs on top, reconstructions below), DIR/<name>.png (input |
reconstruction; names made unique: ``a/x.png`` and ``b/x.png`` -> ``a_x.png``, ``b_x.png``, an input
named ``grid`` -> ``<folder>_grid.png``) and prints per-image PSNR. ``--images=skimage:all`` uses the
photographs bundled with scikit-image (offline). ``--random_init=SEED`` runs an untrained model (pipeline check only).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
from absl import app, flags

from titok_jax import images as im
from titok_jax import logs
from titok_jax.api import Tokenizer
from titok_jax.cli import common
from titok_jax.evaluation.metrics import psnr

common.define_config()
flags.DEFINE_string("checkpoint", None, "titok_jax Orbax params directory (from `titok-port import` or training).")
flags.DEFINE_string("weights", None, "Official weights: .safetensors / hub folder / hub name (hf:ORG/NAME); .bin with "
                    "--allow_pickle.")  # fmt: skip
flags.DEFINE_integer("random_init", None, "Use untrained random weights with this seed (pipeline check).")
flags.DEFINE_bool("allow_pickle", False, "Read PyTorch pickles via torch.load(weights_only=True).")
flags.DEFINE_multi_string("images", None, "Image files or skimage:<name> / skimage:all (more may follow as arguments).")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
FLAGS = flags.FLAGS
log = logging.getLogger("titok_jax.cli.reconstruct")


def reconstruct(tok: Tokenizer, sources, out_dir: str, batch_size: int = 8):
    """Reconstruct ``sources`` (paths or ``skimage:<name>``) with ``tok``; write the outputs (see above)."""
    t0 = time.time()
    names, x = im.load_images(sources, tok.image_size, reserved=("grid",))  # DIR/grid.png is the overview
    log.info("[reconstruct] %d image(s): %s", len(names), ", ".join(names))
    os.makedirs(out_dir, exist_ok=True)
    tokens, recon = [], []
    with logs.progress(len(x), "reconstruct", "img") as bar:
        for i in range(0, len(x), batch_size):
            t, r = tok.reconstruct(x[i : i + batch_size])
            tokens.append(t)
            recon.append(r)
            bar.update(len(t))
    tokens, recon = np.concatenate(tokens), np.concatenate(recon).astype(np.float32)
    is_ids = np.issubdtype(tokens.dtype, np.integer)
    np.save(
        os.path.join(out_dir, "ids.npy" if is_ids else "latents.npy"), tokens.astype(np.int32) if is_ids else tokens
    )
    np.save(os.path.join(out_dir, "recon.npy"), recon)
    im.save_png(im.grid([x, recon]), os.path.join(out_dir, "grid.png"))
    for name, a, b in zip(names, x, recon):
        im.save_png(im.grid([np.stack([a, b])]), os.path.join(out_dir, f"{name}.png"))
    psnrs = psnr(x, recon)
    for name, p in zip(names, psnrs):
        log.info("[reconstruct]   %s: PSNR %.2f dB", name, p)
    log.info("[reconstruct] mean PSNR %.2f dB; tokens %s; wrote %s in %.1fs", psnrs.mean(), tuple(tokens.shape),
             out_dir, time.time() - t0)  # fmt: skip
    return tokens, recon, psnrs


def main(argv) -> None:
    common.require("out")
    sources = list(FLAGS.images or []) + list(argv[1:])
    if not sources:
        raise app.UsageError("give --images=FILE (repeatable) or --images=skimage:all")
    source = common.one_of("checkpoint", "weights", "random_init")
    cfg = common.run_config(tokenizer_weights=FLAGS.weights if source == "weights" else None)
    t0 = time.time()
    if source == "checkpoint":
        tok = Tokenizer.from_checkpoint(cfg, FLAGS.checkpoint)
    elif source == "weights":
        tok = Tokenizer.from_weights(cfg, FLAGS.weights, allow_pickle=FLAGS.allow_pickle)
    else:
        log.info("[reconstruct] random initialisation (seed %d): reconstructions will be noise", FLAGS.random_init)
        tok = Tokenizer.random_init(cfg, FLAGS.random_init)
    log.info("[reconstruct] model %s: %s parameters, %dpx (%.1fs)", tok.handle.name, f"{tok.num_params:,}",
             tok.image_size, time.time() - t0)  # fmt: skip
    reconstruct(tok, sources, FLAGS.out, FLAGS.batch_size)


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
