"""Flax models, each with its explicit PyTorch name map beside it (``*_map.py``).

Image tokenizers (``TiTok``, ``MaskGITVQGAN``) share one set of entry points: ``encode(images) ->
(latents, result)`` (``result['ids']`` for VQ models), ``decode(latents)``, ``decode_tokens(ids)``,
``__call__(images) -> (pixels, result)``. Every model module has ``init_params(config, rng, dtype)``
and ``abstract_params(config)``. ``registry.ModelHandle`` bundles a module, its init and its maps.
"""

from titok_jax.config.models import GeneratorConfig, TiTokConfig, VQGANConfig
from titok_jax.models.generator import ImageBert, UViTBert
from titok_jax.models.maskgit_vqgan import MaskGITVQGAN
from titok_jax.models.titok import TiTok

__all__ = ["GeneratorConfig", "ImageBert", "MaskGITVQGAN", "TiTok", "TiTokConfig", "UViTBert", "VQGANConfig"]
