"""PSNR and SSIM of uint8 image batches on the device (jnp, float32), for use inside ``jax.jit``.

The same definitions as the float64 NumPy oracle ``titok_jax.evaluation.metrics.psnr`` / ``ssim``
(11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, "valid" positions, mean over positions and
then channels) on images scaled to [0, 1]; tests/test_metrics.py checks the agreement. Inputs are the
uint8 images of the official evaluator (``titok_jax.images.to_uint8``: truncation).

Precision: squared differences of uint8 values are summed exactly in int32 per image row, then in
float32 over rows, so PSNR agrees with the float64 oracle to ~1e-5 dB; SSIM's local moments are
float32 (agreement ~1e-6 per image).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from titok_jax.evaluation.metrics import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, gaussian_window


def psnr_u8(a, b) -> jnp.ndarray:
    """Per-image PSNR (dB, float32) of uint8 batches [N, H, W, C] with values scaled to [0, 1]; +inf for
    identical images."""
    d = a.astype(jnp.int32) - b.astype(jnp.int32)
    row_sums = jnp.sum(d * d, axis=(2, 3))  # int32: at most W * C * 255^2 per row
    mse = jnp.sum(row_sums.astype(jnp.float32), axis=1) / (float(np.prod(a.shape[1:])) * 255.0**2)
    return 10.0 * jnp.log10(1.0 / mse)


def _filter_valid(x, w):
    k = w.shape[0]
    h, wd = x.shape[1] - k + 1, x.shape[2] - k + 1
    y = sum(float(w[i]) * x[:, i : i + h] for i in range(k))
    return sum(float(w[j]) * y[:, :, j : j + wd] for j in range(k))


def ssim_u8(a, b) -> jnp.ndarray:
    """Per-image SSIM (float32) of uint8 batches [N, H, W, C] scaled to [0, 1] (H, W >= 11)."""
    if min(a.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {a.shape[1:3]}")
    x, y = a.astype(jnp.float32) / 255.0, b.astype(jnp.float32) / 255.0
    w = gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
    var_x = _filter_valid(x * x, w) - mu_x**2
    var_y = _filter_valid(y * y, w) - mu_y**2
    cov = _filter_valid(x * y, w) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(axis=(1, 2)).mean(axis=-1)
