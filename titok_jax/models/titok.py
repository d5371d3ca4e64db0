"""TiTok 1-D image tokenizer (bytedance/1d-tokenizer ``modeling/titok.py``), channels-last Flax.

One module covers every official variant:

* legacy VQ (titok_s128 / b64 / l32): the encoder's 1x1 projection to token space runs on a
  *reshaped* (not transposed) [L, W] token matrix (official_titok.md section 1.3), the decoder
  predicts 1024-way logits over MaskGIT-VQGAN proxy codes; with ``finetune_decoder`` (released
  and stage-2 models) ``decode`` maps softmax(logits) x VQGAN codebook through the VQGAN pixel decoder;
* non-legacy VQ (bl64/bl128/sl256_vq8k) and VAE (ll32/bl64/bl128_vae_c16): per-token projection
  and a pixel head (Dense to p*p*3, depth-to-space, 3x3 conv).

Layouts: images [B, H, W, 3] float in [0, 1]; latents [B, L, C]; token ids [B, L] int32.
(The official code uses NCHW images, latents [B, C, 1, L] and ids [B, 1, L].)
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from titok_jax.config.models import PROXY_CODEBOOK_SIZE, TiTokConfig
from titok_jax.models.layers import Transformer, dense_init, embedding_init, layer_norm
from titok_jax.models.maskgit_vqgan import VQGANDecoder
from titok_jax.quantizers.vae import DiagonalGaussian
from titok_jax.quantizers.vq import VectorQuantizer, codebook_init

Dtype = Any

# The parameter subtrees ``encode`` reads (a stage-1 checkpoint has no pixel decoder; none is needed) ...
ENCODE_PARTS = ("latent_tokens", "encoder", "quantize")
# ... and those ``decode_tokens`` reads (``latent_tokens`` is a top-level param that setup binds).
DECODE_PARTS = ("latent_tokens", "quantize", "decoder", "pixel_quantize", "pixel_decoder")


def check_images(images: jax.Array, image_size: int) -> None:
    """Static (trace-time) checks of an image batch; raises ValueError saying what to change."""
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise ValueError(f"images must be a batch [B, H, W, 3]; got shape {shape}")
    if shape[-1] != 3:
        hint = " (this looks like NCHW: transpose with x.transpose(0, 2, 3, 1))" if shape[1] == 3 else ""
        raise ValueError(f"images must be NHWC with 3 channels; got shape {shape}{hint}")
    if shape[1] != image_size or shape[2] != image_size:
        raise ValueError(
            f"images must be {image_size}x{image_size} for this model; got {shape[1]}x{shape[2]} "
            "(resize + center crop first, e.g. titok_jax.images.load_image)"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images must be float in [0, 1]; got dtype {images.dtype} (divide uint8 images by 255)")


class TiTokEncoder(nn.Module):
    image_size: int
    patch_size: int
    width: int
    depth: int
    num_heads: int
    num_latent_tokens: int
    out_channels: int
    is_legacy: bool
    mlp_ratio: float = 4.0
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, latent_tokens: jax.Array) -> jax.Array:
        b = images.shape[0]
        w, grid = self.width, self.image_size // self.patch_size
        x = nn.Conv(
            w,
            (self.patch_size, self.patch_size),
            strides=(self.patch_size, self.patch_size),
            padding="VALID",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=dense_init(),
            bias_init=nn.initializers.zeros,
            name="patch_embed",
        )(images)
        x = x.reshape(b, grid * grid, w)  # row-major patches, as torch's flatten(2)
        cls = self.param("class_embedding", embedding_init(w), (1, w), self.param_dtype)
        pos = self.param("positional_embedding", embedding_init(w), (grid * grid + 1, w), self.param_dtype)
        lat_pos = self.param(
            "latent_token_positional_embedding",
            embedding_init(w),
            (self.num_latent_tokens, w),
            self.param_dtype,
        )
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, w)), x], axis=1)
        x = x + pos.astype(x.dtype)
        lat = jnp.broadcast_to((latent_tokens + lat_pos).astype(x.dtype), (b, self.num_latent_tokens, w))
        x = jnp.concatenate([x, lat], axis=1)
        x = layer_norm("ln_pre", self.dtype, self.param_dtype)(x)
        x = Transformer(
            w, self.depth, self.num_heads, self.mlp_ratio, self.remat, self.dtype, self.param_dtype, name="transformer"
        )(x)
        x = x[:, 1 + grid * grid :]
        x = layer_norm("ln_post", self.dtype, self.param_dtype)(x)
        if self.is_legacy:
            # Official legacy layout: [B, L, W] *reshaped* to [B, W, L] before the 1x1 conv.
            x = jnp.swapaxes(x.reshape(b, w, self.num_latent_tokens), 1, 2)
        return nn.Dense(
            self.out_channels,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=dense_init(),
            bias_init=nn.initializers.zeros,
            name="conv_out",
        )(x)


class TiTokDecoder(nn.Module):
    image_size: int
    patch_size: int
    width: int
    depth: int
    num_heads: int
    num_latent_tokens: int
    is_legacy: bool
    proxy_codebook_size: int = PROXY_CODEBOOK_SIZE
    mlp_ratio: float = 4.0
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        """z [B, L, C] -> legacy: logits [B, g, g, 1024]; non-legacy: pixels [B, H, W, 3]."""
        b, n, _ = z.shape
        w, grid, p = self.width, self.image_size // self.patch_size, self.patch_size
        if n > self.num_latent_tokens:
            raise ValueError(f"got {n} latent tokens, the decoder was built for at most {self.num_latent_tokens}")
        x = nn.Dense(
            w,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=dense_init(),
            bias_init=nn.initializers.zeros,
            name="decoder_embed",
        )(z)
        cls = self.param("class_embedding", embedding_init(w), (1, w), self.param_dtype)
        pos = self.param("positional_embedding", embedding_init(w), (grid * grid + 1, w), self.param_dtype)
        mask = self.param("mask_token", embedding_init(w), (1, 1, w), self.param_dtype)
        lat_pos = self.param(
            "latent_token_positional_embedding",
            embedding_init(w),
            (self.num_latent_tokens, w),
            self.param_dtype,
        )
        masks = jnp.broadcast_to(mask.astype(x.dtype), (b, grid * grid, w))
        masks = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, w)), masks], axis=1)
        masks = masks + pos.astype(x.dtype)
        x = x + lat_pos[:n].astype(x.dtype)
        x = jnp.concatenate([masks, x], axis=1)  # official order: [cls | mask tokens | latents]
        x = layer_norm("ln_pre", self.dtype, self.param_dtype)(x)
        x = Transformer(
            w, self.depth, self.num_heads, self.mlp_ratio, self.remat, self.dtype, self.param_dtype, name="transformer"
        )(x)
        x = x[:, 1 : 1 + grid * grid]
        x = layer_norm("ln_post", self.dtype, self.param_dtype)(x)
        x = x.reshape(b, grid, grid, w)
        dense = lambda feats, name: nn.Dense(  # noqa: E731
            feats,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=dense_init(),
            bias_init=nn.initializers.zeros,
            name=name,
        )
        if self.is_legacy:
            x = jnp.tanh(dense(2 * w, "ffn_0")(x))
            return dense(self.proxy_codebook_size, "ffn_2")(x).astype(jnp.float32)
        x = dense(p * p * 3, "ffn")(x)
        x = einops.rearrange(x, "b h w (p1 p2 c) -> b (h p1) (w p2) c", p1=p, p2=p, c=3)
        x = nn.Conv(
            3,
            (3, 3),
            padding=((1, 1), (1, 1)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=dense_init(),
            name="conv_out",
        )(x)
        return x.astype(jnp.float32)


class TiTok(nn.Module):
    """The tokenizer. Entry points (use with ``apply(..., method=...)``):

    * ``encode(images)`` -> (latents [B, L, C] float32, result dict: VQ: ``ids`` [B, L] int32, the
      quantizer losses and codebook usage; VAE: ``posterior_mean``/``posterior_logvar``/``kl``/``kl_loss``);
    * ``decode(latents)`` -> pixels [B, H, W, 3] (unclamped), or for a stage-1 legacy model the
      1024-way proxy-code logits [B, g, g, 1024];
    * ``decode_logits(latents)`` -> raw ViT decoder output;
    * ``decode_tokens(ids)`` -> pixels (the released path; VAE: takes continuous latents);
    * ``__call__(images)`` -> (decode(encode(images)), result dict).
    """

    config: TiTokConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False

    def setup(self):
        c = self.config
        ew, ed, eh = c.encoder_vit
        dw, dd, dh = c.decoder_vit
        self.latent_tokens = self.param(
            "latent_tokens", embedding_init(ew), (c.num_latent_tokens, ew), self.param_dtype
        )
        self.encoder = TiTokEncoder(
            c.image_size, c.patch_size, ew, ed, eh, c.num_latent_tokens, c.encoder_out_channels, c.is_legacy,
            c.mlp_ratio, self.remat, self.dtype, self.param_dtype,
        )  # fmt: skip
        self.decoder = TiTokDecoder(
            c.image_size, c.decoder_patch_size, dw, dd, dh, c.num_latent_tokens, c.is_legacy,
            c.proxy_codebook_size, c.mlp_ratio, self.remat, self.dtype, self.param_dtype,
        )  # fmt: skip
        if c.quantize_mode == "vq":
            self.quantize = VectorQuantizer(c.codebook_size, c.token_size, c.commitment_cost, c.use_l2_norm)
        if c.finetune_decoder:
            pc = c.pixel_decoder
            self.pixel_quantize = PixelCodebook(pc.codebook_size, pc.z_channels)
            self.pixel_decoder = VQGANDecoder(pc, self.dtype, self.param_dtype)

    # -- encoder side ---------------------------------------------------------------------------
    def encode_continuous(self, images: jax.Array) -> jax.Array:
        """Encoder output before quantization: [B, L, C] (VAE: [B, L, 2C] moments)."""
        check_images(images, self.config.image_size)
        return self.encoder(images.astype(self.dtype), self.latent_tokens).astype(jnp.float32)

    def encode(
        self, images: jax.Array, sample_posterior: bool = False, eps: Optional[jax.Array] = None
    ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        z = self.encode_continuous(images)
        if self.config.quantize_mode == "vq":
            return self.quantize(z)
        posterior = DiagonalGaussian.from_moments(z)
        if eps is not None:
            latents = posterior.sample(eps=eps)
        elif sample_posterior:
            latents = posterior.sample(rng=self.make_rng("sample"))
        else:
            latents = posterior.mode()
        result = {
            "posterior_mean": posterior.mean,
            "posterior_logvar": posterior.logvar,
            "kl": posterior.kl(),
            "kl_loss": jnp.mean(jnp.sum(posterior.kl(), axis=-1)),
        }
        return latents, result

    # -- decoder side ---------------------------------------------------------------------------
    def decode_logits(self, latents: jax.Array) -> jax.Array:
        return self.decoder(latents.astype(self.dtype))

    def decode(self, latents: jax.Array) -> jax.Array:
        out = self.decode_logits(latents)
        if not self.config.finetune_decoder:
            return out
        return self.decode_proxy_logits(out)

    def decode_proxy_logits(self, logits: jax.Array) -> jax.Array:
        """softmax(logits) x pixel codebook -> VQGAN pixel decoder (official ``TiTok.decode``)."""
        soft = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        q = jnp.einsum("bhwk,kd->bhwd", soft, self.pixel_quantize.embedding, precision=jax.lax.Precision.HIGHEST)
        return self.pixel_decoder(q.astype(self.dtype)).astype(jnp.float32)

    def lookup_tokens(self, ids: jax.Array) -> jax.Array:
        """ids [B, L] (or the official [B, 1, L]) -> l2-normalised codebook rows [B, L, C]."""
        if self.config.quantize_mode != "vq":
            raise ValueError("lookup_tokens needs a VQ model; VAE tokens are the continuous latents")
        if ids.ndim == 3 and ids.shape[1] == 1:
            ids = ids[:, 0]
        if ids.ndim != 2:
            raise ValueError(f"token ids must be [B, L] (or [B, 1, L]); got shape {tuple(ids.shape)}")
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"token ids must be integers; got dtype {ids.dtype}")
        return self.quantize.lookup(ids)

    def decode_tokens(self, tokens: jax.Array) -> jax.Array:
        if self.config.quantize_mode == "vq":
            return self.decode(self.lookup_tokens(tokens))
        return self.decode(tokens)

    def __call__(self, images: jax.Array, sample_posterior: bool = False):
        latents, result = self.encode(images, sample_posterior=sample_posterior)
        return self.decode(latents), result


class PixelCodebook(nn.Module):
    """The VQGAN codebook that stage-2/released TiTok models carry as ``pixel_quantize``."""

    codebook_size: int = 1024
    dim: int = 256

    def setup(self):
        self.embedding = self.param("embedding", codebook_init(self.codebook_size), (self.codebook_size, self.dim),
                                    jnp.float32)  # fmt: skip

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding, ids, axis=0)


def init_method(module: TiTok, images: jax.Array):
    """Init entry point that touches every submodule (encode + decode + pixel path)."""
    latents, _ = module.encode(images)
    return module.decode(latents)


def init_params(config: TiTokConfig, rng: jax.Array, dtype=jnp.float32) -> dict:
    """Random-init parameters (unboxed plain arrays)."""
    model = TiTok(config, dtype=dtype)
    x = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
    return model.init(rng, x, method=init_method)["params"]


def abstract_params(config: TiTokConfig) -> dict:
    """Shapes/dtypes of the parameter tree without allocating it (``jax.eval_shape``)."""
    return jax.eval_shape(lambda r: init_params(config, r), jax.random.key(0))
