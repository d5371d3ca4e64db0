"""Evaluate a tokenizer (rFID, IS, PSNR, SSIM, codebook usage) and generated samples (gFID, IS).

  python -m titok_jax.evaluate --config=configs/titok_b64.py --workdir=runs/b64 \\
      --config.evaluate.inception_weights=pt_inception-2015-12-05-6726825d.pth --config.evaluate.allow_pickle=True
  python -m titok_jax.evaluate --config=configs/titok_b64.py --workdir=runs/b64 \\
      --config.evaluate.samples=out/samples/samples.npz --config.evaluate.reference=VIRTUAL_imagenet256_labeled.npz

Also the ``evaluate`` step of ``python -m titok_jax.main`` (``config.stages``). Protocol (official_titok.md
section 9): reconstructions of the eval split (resize shorter side + center crop) are clamped to [0, 1] and
turned into uint8 by truncation, like the originals; FID uses pool3 statistics accumulated in float64 and
the Frechet distance of ``titok_jax.evaluation.metrics``; IS uses the 1008-way ``logits_unbiased``.
The reference of rFID is the real images passed through the same network in the same run. gFID compares a
``samples.npz`` (``arr_0`` uint8, e.g. from ``python -m titok_jax.sample``) with an ADM reference batch
(openai/guided-diffusion ``evaluations``: its precomputed ``mu``/``sigma`` or its ``arr_0`` images).

The Inception network is pytorch-fid's FID Inception-v3; its weights (``pt_inception-2015-12-05-6726825d.pth``,
a pytorch-fid release asset) must be downloaded by the user: without ``evaluate.inception_weights`` only
PSNR / SSIM / codebook usage are computed (and the result says so). The network runs in float32 here
(the official evaluator uses float64; expect FID differences in the second decimal).

Multi-host: every process reconstructs a contiguous share of the eval split; Inception features, PSNR,
SSIM and ids are gathered, so every process computes the same numbers; process 0 writes
``WORKDIR/evaluate/results.json`` (atomically).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np


def _log(msg: str) -> None:
    print(f"[evaluate] {msg}", flush=True)


def default_section() -> Dict[str, Any]:
    """``config.evaluate`` keys."""
    return dict(
        tokenizer_checkpoint="",  # default: the run's latest finished tokenizer stage
        tokenizer_weights="",  # or an official weight file
        allow_pickle=False,
        split="eval",  # 'eval' (the data config's eval split) or 'train'
        max_images=0,  # 0 = the whole split
        batch_size=32,  # images per reconstruction / Inception call (per process)
        inception_weights="",  # pt_inception-2015-12-05-6726825d.pth (or a .safetensors copy)
        preprocess="tf1",  # 'tf1' (official evaluator / ADM) or 'pytorch_fid'
        samples="",  # samples.npz for gFID/IS ('auto': WORKDIR/sample/samples.npz)
        reference="",  # ADM reference batch for gFID
    )


# ---------------------------------------------------------------------------------------------- data
def _process_share(n: int) -> Tuple[int, int]:
    from titok_jax.evaluation.features import _process_slice

    share = _process_slice(n)
    return share.start, share.stop


def eval_image_batches(source, image_size: int, batch_size: int, max_images: int = 0) -> Iterator[np.ndarray]:
    """This process's contiguous share of ``source`` as float32 [b, S, S, 3] batches (eval transform;
    nothing dropped: the last batch may be smaller; unreadable images are skipped and reported). Every
    process yields the same number of batches (trailing ones may be empty) so gathers stay in step."""
    from titok_jax.data import transforms

    n = len(source) if not max_images else min(len(source), int(max_images))
    start, stop = _process_share(n)
    import jax

    per_process = -(-n // jax.process_count())
    steps = max(1, -(-per_process // batch_size))

    def read(i):
        try:
            return transforms.eval_transform(transforms.to_pil(source[i]["image"]), image_size)
        except Exception as e:  # a corrupt image is skipped, not fatal
            _log(f"skipping unreadable example {i}: {type(e).__name__}: {e}")
            return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for k in range(steps):
            lo, hi = min(start + k * batch_size, stop), min(start + (k + 1) * batch_size, stop)
            imgs = [x for x in pool.map(read, range(lo, hi)) if x is not None]
            yield np.stack(imgs) if imgs else np.zeros((0, image_size, image_size, 3), np.float32)


def _gather(x: np.ndarray) -> np.ndarray:
    """Concatenate every process's rows (one process: unchanged). Row counts may differ per process."""
    import jax

    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    n = np.asarray(multihost_utils.process_allgather(np.asarray([x.shape[0]])))
    pad = int(n.max()) - x.shape[0]
    padded = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    allx = np.asarray(multihost_utils.process_allgather(padded))
    return np.concatenate([allx[i, : int(n[i, 0])] for i in range(allx.shape[0])])


# ---------------------------------------------------------------------------------------------- metrics
def evaluate_tokenizer(tokenizer, batches, features=None, codebook_size: Optional[int] = None) -> Dict[str, Any]:
    """Reconstruct every batch (float images in [0, 1]) and measure rFID / IS (with ``features``, an
    ``InceptionFeatures``), PSNR, SSIM (on the uint8-truncated images, like the official evaluator) and
    codebook usage. ``tokenizer``: anything with ``reconstruct(images) -> (ids, recon)``, e.g.
    ``titok_jax.inference.Tokenizer``."""
    from titok_jax.evaluation import metrics

    real_stats, fake_stats = metrics.FeatureStats(), metrics.FeatureStats()
    psnr, ssim, ids_all, logits = [], [], [], []
    t0 = time.time()
    for x in batches:
        if x.shape[0]:
            ids, recon = tokenizer.reconstruct(x)
            real_u8, fake_u8 = metrics.to_uint8(x), metrics.to_uint8(np.clip(recon, 0.0, 1.0))
            psnr.append(metrics.psnr(real_u8 / 255.0, fake_u8 / 255.0))
            ssim.append(metrics.ssim(real_u8 / 255.0, fake_u8 / 255.0))
            ids_all.append(np.asarray(ids).reshape(len(x), -1))
        else:
            real_u8 = fake_u8 = np.zeros((0,) + x.shape[1:3] + (3,), np.uint8)
        if features is not None:  # collective with several processes: every process calls it
            fr, ff = features(real_u8), features(fake_u8)
            if fr["pool3"].shape[0]:
                real_stats.update(fr["pool3"])
                fake_stats.update(ff["pool3"])
                logits.append(ff["logits_unbiased"])
    psnr = _gather(np.concatenate(psnr) if psnr else np.zeros((0,)))
    ssim = _gather(np.concatenate(ssim) if ssim else np.zeros((0,)))
    if psnr.size == 0:
        raise ValueError("no images to evaluate: the eval split is empty or unreadable")
    out: Dict[str, Any] = {"num_images": int(psnr.size), "psnr": float(psnr.mean()), "ssim": float(ssim.mean())}
    ids = np.concatenate(ids_all) if ids_all else np.zeros((0, 1), np.int64)
    if np.issubdtype(ids.dtype, np.integer) and codebook_size:
        ids = _gather(ids)
        usage, entropy = metrics.codebook_usage(ids, codebook_size)
        out.update(codebook_usage=float(usage), codebook_entropy_bits=float(entropy))
    if features is not None:
        mu_r, s_r = real_stats.mean_cov()
        mu_f, s_f = fake_stats.mean_cov()
        out["rfid"] = float(metrics.frechet_distance(mu_r, s_r, mu_f, s_f))
        out["inception_score_recon"] = float(metrics.inception_score(np.concatenate(logits)))
    out["seconds"] = time.time() - t0
    return out


def evaluate_samples(samples_npz: str, features, reference: str = "") -> Dict[str, Any]:
    """gFID (with an ADM ``reference`` batch) and Inception Score of ``samples_npz`` (``arr_0`` uint8)."""
    from titok_jax.evaluation import metrics
    from titok_jax.evaluation.features import ref_stats_from_npz, stats_from_images

    with np.load(samples_npz) as f:
        if "arr_0" not in f:
            raise ValueError(f"{samples_npz} has no 'arr_0' (expected uint8 samples [N, H, W, 3])")
        images = f["arr_0"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{samples_npz}: arr_0 must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    start, stop = _process_share(len(images))
    bs = features.batch_size
    import jax

    per_process = -(-len(images) // jax.process_count())  # ceil: every process makes the same calls
    steps = max(1, -(-per_process // bs))
    mine = images[start:stop]
    stats, logits = stats_from_images((mine[i * bs : (i + 1) * bs] for i in range(steps)), features, True)
    out = {"num_samples": int(stats.n), "inception_score": float(metrics.inception_score(logits))}
    if reference:
        mu_r, s_r = ref_stats_from_npz(reference, features)
        mu_f, s_f = stats.mean_cov()
        out["gfid"] = float(metrics.frechet_distance(mu_r, s_r, mu_f, s_f))
    return out


# ---------------------------------------------------------------------------------------------- step
def _section(config) -> Dict[str, Any]:
    from titok_jax.presets import step_section

    return step_section(config, "evaluate", default_section())


def _features(sec, mesh=None):
    if not sec["inception_weights"]:
        return None
    from titok_jax.evaluation.features import InceptionFeatures

    path = os.path.expanduser(sec["inception_weights"])
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Inception weights {path} not found: download pytorch-fid's pt_inception-2015-12-05-6726825d.pth "
            "(a release asset of the pytorch-fid project) and pass its path (needs allow_pickle=True and torch), "
            "or a .safetensors copy of it"
        )
    return InceptionFeatures.from_file(
        path, allow_pickle=bool(sec["allow_pickle"]), preprocess=sec["preprocess"], batch_size=int(sec["batch_size"]),
        mesh=mesh,
    )  # fmt: skip


def run(config, workdir: str) -> Dict[str, Any]:
    """The ``evaluate`` step: tokenizer metrics on the eval split, plus sample metrics when configured."""
    import jax

    from titok_jax import data as data_lib
    from titok_jax.inference import Tokenizer
    from titok_jax.train.sharding import make_mesh
    from titok_jax.train.stages import tokenizer_checkpoint

    sec = _section(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    mesh = make_mesh((-1, 1)) if jax.process_count() > 1 else None
    features = _features(sec, mesh)
    if features is None:
        _log("no evaluate.inception_weights: computing PSNR / SSIM / codebook usage only (no FID / IS)")
    if sec["tokenizer_weights"]:
        tok = Tokenizer.from_weights(config, sec["tokenizer_weights"], allow_pickle=bool(sec["allow_pickle"]))
        source_name = sec["tokenizer_weights"]
    else:
        source_name = tokenizer_checkpoint(workdir, sec["tokenizer_checkpoint"], section="evaluate")
        tok = Tokenizer.from_checkpoint(config, source_name)
    source = data_lib.make_source(config.data, train=sec["split"] == "train")
    _log(f"tokenizer {tok.handle.name} from {source_name}; {source!r}")
    k = tok.handle.config.codebook_size if getattr(tok.handle.config, "quantize_mode", "vq") == "vq" else None
    batches = eval_image_batches(source, tok.image_size, int(sec["batch_size"]), int(sec["max_images"]))
    results: Dict[str, Any] = {"tokenizer": str(source_name), "split": sec["split"]}
    results.update(evaluate_tokenizer(tok, batches, features, k))
    samples = sec["samples"]
    if samples == "auto":
        samples = os.path.join(workdir, "sample", "samples.npz")
        samples = samples if os.path.exists(samples) else ""
    if samples:
        if features is None:
            _log(f"skipping {samples}: gFID / IS need evaluate.inception_weights")
        else:
            results["samples"] = evaluate_samples(os.path.expanduser(samples), features, sec["reference"])
    pretty = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}
    _log(json.dumps(pretty))
    if jax.process_index() == 0:
        out = os.path.join(workdir, "evaluate")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "results.json.tmp"), "w") as f:
            json.dump(results, f, indent=2)
        os.replace(os.path.join(out, "results.json.tmp"), os.path.join(out, "results.json"))
    return results


def main(argv) -> None:
    from absl import app, flags

    del argv
    config = _CONFIG.value
    if config is None or not flags.FLAGS.workdir:
        raise app.UsageError("--config and --workdir are required")
    from titok_jax import distributed
    from titok_jax.checkpoint import CheckpointError
    from titok_jax.porting.io import WeightFileError
    from titok_jax.porting.mapping import PortError

    distributed.initialize(flags.FLAGS)
    try:
        run(config, flags.FLAGS.workdir)
    except (ValueError, FileNotFoundError, CheckpointError, WeightFileError, PortError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


_CONFIG = None

if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/titok_b64.py.")
    flags.DEFINE_string("workdir", None, "Run directory (its tokenizer; results in WORKDIR/evaluate).")
    from titok_jax import distributed

    distributed.define_flags()
    app.run(main)
