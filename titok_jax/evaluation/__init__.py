"""Evaluation: FID-Inception features (``features``), float64 metrics (``metrics``: FID, IS, PSNR,
SSIM, codebook usage), the evaluation protocol (``protocol``) and linear probing (``linear_probe``).
``metrics`` needs only numpy/scipy; the others add JAX/Flax. None imports TensorFlow."""

from titok_jax.evaluation.metrics import (
    FeatureStats,
    codebook_usage,
    frechet_distance,
    inception_score,
    load_mu_sigma,
    psnr,
    ssim,
)

__all__ = ["FeatureStats", "codebook_usage", "frechet_distance", "inception_score", "load_mu_sigma", "psnr", "ssim"]
