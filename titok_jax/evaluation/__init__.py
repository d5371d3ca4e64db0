"""Evaluation: FID-Inception features (``features``) and float64 metrics (``metrics``): rFID, gFID, IS,
PSNR, SSIM, codebook usage. ``metrics`` needs only numpy/scipy; ``features`` adds JAX/Flax. Neither
imports TensorFlow."""

from titok_jax.evaluation.metrics import (
    FeatureStats,
    codebook_usage,
    frechet_distance,
    inception_score,
    load_mu_sigma,
    psnr,
    ssim,
    to_uint8,
)

__all__ = [
    "FeatureStats",
    "codebook_usage",
    "frechet_distance",
    "inception_score",
    "load_mu_sigma",
    "psnr",
    "ssim",
    "to_uint8",
]
