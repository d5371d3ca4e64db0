"""PSNR + SSIM cost per batch: the float64 NumPy oracle on the host vs the jitted jnp versions on the device.

``measure`` times both on the same uint8 batches (smooth random images and a noisy copy, at the size of
an evaluation batch) and extrapolates to a 50,000-image evaluation. The device timing starts from
images already on the device, as inside the evaluation's jitted program (the reconstruction is there);
it blocks until the per-image values are ready.
"""

from __future__ import annotations

import time
from typing import Dict

import jax
import numpy as np

from titok_jax.evaluation import metrics, pixel


def image_pairs(batch_size: int, image_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(rng.uniform(-6, 6, (batch_size, image_size, image_size, 3)), axis=1) % 256
    a = smooth.astype(np.uint8)
    b = np.clip(a + rng.normal(0, 8.0, a.shape), 0, 255).astype(np.uint8)
    return a, b


def _device_name(dev) -> str:
    kind = getattr(dev, "device_kind", "")
    return dev.platform if kind in ("", dev.platform) else f"{dev.platform} {kind}"


def measure(batches: int = 3, batch_size: int = 32, image_size: int = 256, num_images: int = 50_000) -> Dict:
    """Seconds per batch of ``batch_size`` for both paths (mean over ``batches`` timed batches after a
    warm-up batch) and the extrapolation to ``num_images``."""
    a, b = image_pairs(batch_size, image_size)
    fn = jax.jit(lambda x, y: (pixel.psnr_u8(x, y), pixel.ssim_u8(x, y)))
    da, db = jax.device_put(a), jax.device_put(b)
    jax.block_until_ready(fn(da, db))  # compile
    t0 = time.perf_counter()
    for _ in range(batches):
        dev = jax.block_until_ready(fn(da, db))
    t_dev = (time.perf_counter() - t0) / batches
    x, y = a / 255.0, b / 255.0
    metrics.psnr(x, y), metrics.ssim(x[:1], y[:1])  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        host = (metrics.psnr(x, y), metrics.ssim(x, y))
    t_host = (time.perf_counter() - t0) / batches
    per = num_images / batch_size
    return {
        "device": _device_name(jax.devices()[0]),
        "batch": [batch_size, image_size, image_size, 3], "timed_batches": batches,
        "host_float64_s_per_batch": t_host, "device_jit_s_per_batch": t_dev, "speedup": t_host / t_dev,
        f"host_s_per_{num_images}": t_host * per, f"device_s_per_{num_images}": t_dev * per,
        "max_abs_diff_psnr_db": float(np.max(np.abs(np.asarray(dev[0]) - host[0]))),
        "max_abs_diff_ssim": float(np.max(np.abs(np.asarray(dev[1]) - host[1]))),
    }  # fmt: skip
