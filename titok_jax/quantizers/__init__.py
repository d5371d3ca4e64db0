"""Quantizers: the l2-normalised VQ of TiTok, the plain VQ of MaskGIT-VQGAN, and the diagonal-Gaussian VAE head."""

from titok_jax.quantizers.vae import DiagonalGaussian
from titok_jax.quantizers.vq import VectorQuantizer, codebook_usage, l2_normalize, nearest_code

__all__ = ["VectorQuantizer", "DiagonalGaussian", "codebook_usage", "l2_normalize", "nearest_code"]
