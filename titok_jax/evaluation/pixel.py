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

import jax
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


def _band(n: int, w: np.ndarray) -> jnp.ndarray:
    """[n - k + 1, n] matrix whose row i holds the window at columns i..i+k-1: 'valid' filtering as a matmul."""
    k = w.shape[0]
    m = np.zeros((n - k + 1, n), np.float32)
    for i in range(n - k + 1):
        m[i, i : i + k] = w
    return jnp.asarray(m)


def ssim_u8(a, b) -> jnp.ndarray:
    """Per-image SSIM (float32) of uint8 batches [N, H, W, C] scaled to [0, 1] (H, W >= 11).

    The separable Gaussian filtering of the five local-moment maps runs as two banded matmuls (at full
    float32 precision, also on TPUs and TF32-capable GPUs): dense matmuls beat 11 shifted slices on
    every backend measured (CPU here), and keep accelerators on their matmul units."""
    if min(a.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {a.shape[1:3]}")
    x, y = a.astype(jnp.float32) / 255.0, b.astype(jnp.float32) / 255.0
    w = gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    gh, gw = _band(a.shape[1], w), _band(a.shape[2], w)
    maps = jnp.stack([x, y, x * x, y * y, x * y])  # [5, N, H, W, C]
    hp = jax.lax.Precision.HIGHEST
    f = jnp.einsum("oh,mnhwc->mnowc", gh, maps, precision=hp)
    mu_x, mu_y, xx, yy, xy = jnp.einsum("pw,mnowc->mnopc", gw, f, precision=hp)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(axis=(1, 2)).mean(axis=-1)
