"""Round trip: images -> token ids -> images, with the official eval preprocessing.

  python -m titok_jax.reconstruct --config=configs/titok_b64.py (--checkpoint=CKPT_DIR | --weights=FILE)
      --images a.png b.jpg ... --out=DIR

Writes DIR/ids.npy (int32 [N, K]; VAE models: DIR/latents.npy), DIR/recon.npy (float32 [N, H, W, 3]
clamped to [0, 1]), DIR/grid.png (inputs on top, reconstructions below), DIR/<name>.png (input |
reconstruction) and prints per-image PSNR. ``--images skimage:all`` uses the photographs bundled with
scikit-image (offline). ``--random-init=SEED`` runs an untrained model (pipeline check only).
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Model config file, e.g. configs/titok_b64.py.", lock_config=True
)
flags.DEFINE_string("checkpoint", None, "titok_jax Orbax checkpoint directory (from `port import` or training).")
flags.DEFINE_string("weights", None, "Official weight file (.safetensors / hub folder; .bin with --allow-pickle).")
flags.DEFINE_integer("random-init", None, "Use untrained random weights with this seed (pipeline check).")
flags.DEFINE_bool("allow-pickle", False, "Allow reading PyTorch pickles via torch.load(weights_only=True).")
flags.DEFINE_multi_string(
    "images", None, "Image files or skimage:<name> / skimage:all (more may follow as positional args)."
)
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_integer("batch-size", 8, "Images per forward pass.")
FLAGS = flags.FLAGS


def _log(msg: str) -> None:
    print(f"[reconstruct] {msg}", flush=True)


def run(config, sources, out_dir, checkpoint=None, weights=None, random_init=None, allow_pickle=False, batch_size=8):
    import numpy as np

    from titok_jax import images as im
    from titok_jax.inference import Tokenizer

    given = [x is not None for x in (checkpoint, weights, random_init)]
    if sum(given) != 1:
        raise ValueError("give exactly one of --checkpoint, --weights or --random-init")
    t0 = time.time()
    if checkpoint is not None:
        _log(f"restoring {checkpoint}")
        tok = Tokenizer.from_checkpoint(config, checkpoint)
    elif weights is not None:
        tok = Tokenizer.from_weights(config, weights, allow_pickle=allow_pickle)
    else:
        _log(f"random initialisation (seed {random_init}): reconstructions will be noise")
        tok = Tokenizer.random_init(config, random_init)
    _log(f"model {tok.handle.name}: {tok.num_params:,} parameters, {tok.image_size}px ({time.time() - t0:.1f}s)")
    names, x = im.load_images(sources, tok.image_size)
    _log(f"{len(names)} image(s): {', '.join(names)}")
    os.makedirs(out_dir, exist_ok=True)
    tokens, recon = [], []
    for i in range(0, len(x), batch_size):
        t1 = time.time()
        t, r = tok.reconstruct(x[i : i + batch_size])
        tokens.append(t)
        recon.append(r)
        _log(f"batch {i // batch_size + 1}/{-(-len(x) // batch_size)}: {len(t)} image(s) in {time.time() - t1:.1f}s")
    tokens, recon = np.concatenate(tokens), np.concatenate(recon).astype(np.float32)
    is_ids = np.issubdtype(tokens.dtype, np.integer)
    np.save(
        os.path.join(out_dir, "ids.npy" if is_ids else "latents.npy"), tokens.astype(np.int32) if is_ids else tokens
    )
    np.save(os.path.join(out_dir, "recon.npy"), recon)
    im.save_png(im.grid([x, recon]), os.path.join(out_dir, "grid.png"))
    for name, a, b in zip(names, x, recon):
        im.save_png(im.grid([np.stack([a, b])]), os.path.join(out_dir, f"{name}.png"))
    psnrs = im.psnr(x, recon)
    for name, p in zip(names, psnrs):
        _log(f"  {name}: PSNR {p:.2f} dB")
    _log(f"mean PSNR {psnrs.mean():.2f} dB; tokens {tuple(tokens.shape)}; wrote {out_dir} in {time.time() - t0:.1f}s")
    return tokens, recon, psnrs


def main(argv):
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required (e.g. --config=configs/titok_b64.py)")
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    sources = list(FLAGS.images or []) + list(argv[1:])
    if not sources:
        raise app.UsageError("give --images FILE [FILE ...] (or --images skimage:all)")
    from titok_jax.checkpoint import CheckpointError
    from titok_jax.images import ImageError
    from titok_jax.porting.io import WeightFileError
    from titok_jax.porting.mapping import PortError

    try:
        run(config, sources, FLAGS.out, FLAGS.checkpoint, FLAGS.weights, FLAGS["random-init"].value,
            FLAGS["allow-pickle"].value, FLAGS["batch-size"].value)  # fmt: skip
    except (ImageError, WeightFileError, PortError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
