"""Flax models: TiTok tokenizers and the MaskGIT-VQGAN, each with its PyTorch name map beside it."""

from titok_jax.models.maskgit_vqgan import MaskGITVQGAN, VQGANConfig
from titok_jax.models.titok import TiTok, TiTokConfig

__all__ = ["TiTok", "TiTokConfig", "MaskGITVQGAN", "VQGANConfig"]
