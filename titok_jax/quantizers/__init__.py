"""Quantizers: the l2-normalised VQ of TiTok, the plain VQ of MaskGIT-VQGAN, and the diagonal-Gaussian VAE head."""

from titok_jax.quantizers.vae import DiagonalGaussian
from titok_jax.quantizers.vq import (
    VectorQuantizer,
    VQGANQuantizer,
    codebook_init,
    codebook_usage,
    l2_normalize,
    nearest_code,
)

__all__ = [
    "DiagonalGaussian",
    "VQGANQuantizer",
    "VectorQuantizer",
    "codebook_init",
    "codebook_usage",
    "l2_normalize",
    "nearest_code",
]
