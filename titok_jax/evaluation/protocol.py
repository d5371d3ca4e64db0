"""The evaluation protocol over a tokenizer or a set of samples (official_titok.md section 9).

* ``evaluate_tokenizer``: reconstructions of every image are clamped to [0, 1] and turned into uint8 by
  truncation, like the originals; PSNR and SSIM on those uint8 images, computed on the device inside
  the same jitted program as the reconstruction (``titok_jax.evaluation.pixel``; the float64 NumPy
  versions in ``metrics`` are the test oracle); codebook usage of the ids; with an
  ``InceptionFeatures``, rFID (the reference is the real images through the same network in the same
  run) and the Inception Score of the reconstructions (1008-way ``logits_unbiased``).
* ``evaluate_samples``: gFID against an ADM reference batch and the Inception Score of a ``samples.npz``.

Multi-host: every process passes its own share of the images; per-image metrics, ids and features are
gathered, so every process computes the same numbers.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import numpy as np

from titok_jax import logs, parallel
from titok_jax.errors import InputError
from titok_jax.evaluation import metrics, pixel
from titok_jax.evaluation.features import ref_stats_from_npz, stats_from_images
from titok_jax.images import to_uint8


def reconstruction_metrics_fn(tokenizer, batch_size: int, with_images: bool):
    """``x float32 [batch_size, S, S, 3] -> (tokens, psnr [B], ssim [B][, real_u8, fake_u8])``: the
    tokenizer's reconstruction, the uint8 truncation and PSNR/SSIM in one jitted program, data-parallel
    over this process's local devices (``parallel.data_parallel``)."""
    reconstruct = tokenizer.reconstruct_fn()

    def fn(params, x):
        tokens, recon = reconstruct(params, x)
        real_u8, fake_u8 = to_uint8(x), to_uint8(recon)
        out = (tokens, pixel.psnr_u8(real_u8, fake_u8), pixel.ssim_u8(real_u8, fake_u8))
        return out + (real_u8, fake_u8) if with_images else out

    size = tokenizer.image_size
    return parallel.data_parallel(fn, tokenizer.params, batch_size, item_shape=(size, size, 3),
                                  what="evaluate.batch_size")  # fmt: skip


def evaluate_tokenizer(tokenizer, batches, features=None, codebook_size: Optional[int] = None, *,
                       batch_size: int = 32, total: Optional[int] = None) -> Dict[str, Any]:  # fmt: skip
    """Reconstruct every batch (float images in [0, 1], at most ``batch_size`` each) and measure rFID /
    IS (with ``features``, an ``InceptionFeatures``), PSNR, SSIM (on the uint8-truncated images, like the
    official evaluator; on the device) and codebook usage. ``tokenizer``: a ``titok_jax.api.Tokenizer``
    (``reconstruct_fn``, ``params``, ``image_size``); ``total``: images to expect (progress display)."""
    real_stats, fake_stats = metrics.FeatureStats(), metrics.FeatureStats()
    psnr, ssim, ids_all, logits = [], [], [], []
    t0 = time.time()
    run = reconstruction_metrics_fn(tokenizer, batch_size, with_images=features is not None)
    bar = logs.progress(total, "evaluate", "img")
    for x in batches:
        n = x.shape[0]
        if n:
            padded = np.zeros((batch_size,) + x.shape[1:], np.float32)
            padded[:n] = x
            out = [np.asarray(o)[:n] for o in run(padded)]
            ids, p, s = out[:3]
            psnr.append(p.astype(np.float64))
            ssim.append(s.astype(np.float64))
            ids_all.append(ids.reshape(n, -1))
            real_u8, fake_u8 = (out[3], out[4]) if features is not None else (None, None)
        else:
            real_u8 = fake_u8 = np.zeros((0,) + x.shape[1:3] + (3,), np.uint8)
        if features is not None:  # collective with several processes: every process calls it
            fr, ff = features(real_u8), features(fake_u8)
            if fr["pool3"].shape[0]:
                real_stats.update(fr["pool3"])
                fake_stats.update(ff["pool3"])
                logits.append(ff["logits_unbiased"])
        bar.update(n)
    bar.close()
    psnr = parallel.gather_rows(np.concatenate(psnr) if psnr else np.zeros((0,)))
    ssim = parallel.gather_rows(np.concatenate(ssim) if ssim else np.zeros((0,)))
    if psnr.size == 0:
        raise InputError("no images to evaluate: the eval split is empty or unreadable")
    out: Dict[str, Any] = {"num_images": int(psnr.size), "psnr": float(psnr.mean()), "ssim": float(ssim.mean())}
    ids = np.concatenate(ids_all) if ids_all else np.zeros((0, 1), np.int64)
    if np.issubdtype(ids.dtype, np.integer) and codebook_size:
        ids = parallel.gather_rows(ids)
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
    with np.load(samples_npz) as f:
        if "arr_0" not in f:
            raise InputError(f"{samples_npz} has no 'arr_0' (expected uint8 samples [N, H, W, 3])")
        images = f["arr_0"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"{samples_npz}: arr_0 must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    bs = features.batch_size
    steps = parallel.steps_for_share(len(images), bs)  # every process makes the same calls
    mine = images[parallel.process_share(len(images))]
    bar = logs.progress(len(mine), "evaluate samples", "img")

    def chunks():
        for i in range(steps):
            chunk = mine[i * bs : (i + 1) * bs]
            yield chunk
            bar.update(len(chunk))

    with bar:
        stats, logits = stats_from_images(chunks(), features, True)
    out = {"num_samples": int(stats.n), "inception_score": float(metrics.inception_score(logits))}
    if reference:
        mu_r, s_r = ref_stats_from_npz(reference, features)
        mu_f, s_f = stats.mean_cov()
        out["gfid"] = float(metrics.frechet_distance(mu_r, s_r, mu_f, s_f))
    return out
