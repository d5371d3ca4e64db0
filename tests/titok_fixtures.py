"""Configs of the official tiny fixtures (sizes from each fixture's config.json / README)."""

from titok_jax.config.presets import MODELS
from titok_jax.models.maskgit_vqgan import VQGANConfig
from titok_jax.models.titok import TiTokConfig

TITOK_TINY = MODELS["titok_tiny"]  # == tests/fixtures/official/tiny/titok_tiny
VQGAN_TINY = MODELS["maskgit_vqgan_tiny"]  # == tiny/maskgit_vqgan_tiny
VQGAN_JAX_TINY = VQGANConfig(hidden_channels=32, channel_mult=(1, 1, 2), z_channels=32, codebook_size=64)
_NONLEGACY = dict(
    image_size=64, encoder_size="base", decoder_size="large", encoder_width=32, encoder_depth=2, encoder_heads=2,
    decoder_width=64, decoder_depth=2, decoder_heads=2, num_latent_tokens=8, is_legacy=False, finetune_decoder=False,
)  # fmt: skip
TITOK_VQ8K_TINY = TiTokConfig(token_size=16, codebook_size=256, use_l2_norm=False, **_NONLEGACY)
TITOK_VAE_TINY = TiTokConfig(token_size=8, quantize_mode="vae", **_NONLEGACY)
