"""MaskGIT-VQGAN (f16, 1024 codes): the stage-1 proxy-code teacher and stage-2 pixel decoder.

Architecture of google-research/maskgit ``maskgit/nets/vqgan_tokenizer.py`` as ported to PyTorch in
bytedance/1d-tokenizer ``modeling/modules/maskgit_vqgan.py``: GroupNorm(32, eps 1e-6) + swish,
bias-free 3x3 convs inside res blocks, a 1x1 shortcut applied to the block *output* when the
channel count changes (a quirk of the original), 2x2 average-pool downsampling, nearest x2
upsampling + 3x3 conv (computed as four 2x2 convs of the low-resolution input), no attention.
Channels-last (NHWC), images in [0, 1].

Submodule names mirror the PyTorch module tree (``down_{i}_block_{j}``, ``mid_{j}``,
``up_{i}_block_{j}``, ``up_{i}_upsample_conv``, ``norm_out``, ``conv_out``) so the explicit name maps
in ``titok_jax.models.maskgit_vqgan_map`` read like the official state_dict.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from titok_jax.config.models import VQGANConfig
from titok_jax.quantizers.vq import VQGANQuantizer

Dtype = Any

GN_EPS = 1e-6


def _conv(features, kernel, name, dtype, param_dtype, use_bias=True):
    return nn.Conv(
        features,
        (kernel, kernel),
        padding="SAME",
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


def _pairwise_sum(x: jax.Array, axis: int) -> jax.Array:
    """Sum over ``axis`` by repeated halving: float32 error grows ~log(n) instead of ~n."""
    while x.shape[axis] > 1:
        n = x.shape[axis]
        half = n // 2
        a = jax.lax.slice_in_dim(x, 0, half, axis=axis)
        b = jax.lax.slice_in_dim(x, half, 2 * half, axis=axis)
        rest = jax.lax.slice_in_dim(x, 2 * half, n, axis=axis)
        x = a + b
        if rest.shape[axis]:
            x = jnp.concatenate([x, rest], axis=axis)
    return jnp.squeeze(x, axis)


def group_sums(x: jax.Array, num_groups: int) -> jax.Array:
    """Per-group sums of an NHWC float32 array: [B, H, W, C] -> [B, G].

    Summed over the width for each channel (XLA vectorises this over the contiguous channels), then
    pairwise over the rows (a log2(H)-deep tree on the small [B, H, C] array), then over the channels
    of each group. The normalised output of 256x256 maps stays within float32 rounding of a float64
    evaluation (tests/test_maskgit_vqgan_parity.py); it is ~3x faster on CPU than a pairwise tree over
    all H*W rows after summing each group's channels (which vectorises badly).
    """
    b, _, _, c = x.shape
    per_channel = _pairwise_sum(jnp.sum(x, axis=2), axis=1)  # [B, C]
    return jnp.sum(per_channel.reshape(b, num_groups, c // num_groups), axis=-1)


class GroupNorm(nn.Module):
    """GroupNorm over NHWC with float32 statistics from pairwise sums (``group_sums``).

    Same parameters (``scale``, ``bias``) and formula as ``nn.GroupNorm``: two passes (the mean, then
    the mean of squared deviations), so the variance does not suffer from cancellation. The accurate
    statistics keep the 1e-5 parity with the official decoder.
    """

    num_groups: int = 32
    epsilon: float = GN_EPS
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        g = self.num_groups
        if c % g:
            raise ValueError(f"GroupNorm: {c} channels are not divisible into {g} groups")
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        xf = x.astype(jnp.float32)
        n = h * w * (c // g)

        def per_channel(stat):  # [B, G] -> [B, 1, 1, C]
            return jnp.repeat(stat, c // g, axis=1)[:, None, None, :]

        centered = xf - per_channel(group_sums(xf, g) / n)
        var = group_sums(jnp.square(centered), g) / n
        y = centered * per_channel(jax.lax.rsqrt(var + self.epsilon))
        y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
        return y.astype(self.dtype)


def _norm(name, num_groups, dtype, param_dtype):
    return GroupNorm(num_groups=num_groups, epsilon=GN_EPS, dtype=dtype, param_dtype=param_dtype, name=name)


class ResBlock(nn.Module):
    out_channels: int
    num_groups: int = 32
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_channels = x.shape[-1]
        h = nn.swish(_norm("norm1", self.num_groups, self.dtype, self.param_dtype)(x))
        h = _conv(self.out_channels, 3, "conv1", self.dtype, self.param_dtype, use_bias=False)(h)
        h = nn.swish(_norm("norm2", self.num_groups, self.dtype, self.param_dtype)(h))
        h = _conv(self.out_channels, 3, "conv2", self.dtype, self.param_dtype, use_bias=False)(h)
        if in_channels != self.out_channels:
            # Faithful to the original: the shortcut transforms the block output, the input is dropped.
            residual = _conv(self.out_channels, 1, "nin_shortcut", self.dtype, self.param_dtype, use_bias=False)(h)
        else:
            residual = x
        return h + residual


def upsample_nearest2x(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


# Output phase a (row or column parity) of "nearest x2, then 3x3 SAME conv" reads the low-resolution
# input at offsets -1/0 (a = 0) or 0/+1 (a = 1); the 3x3 taps fold onto those two: a = 0 gets
# (k0, k1 + k2), a = 1 gets (k0 + k1, k2). Padding (before, after) of the low-resolution input per phase:
_PHASE_PAD = ((1, 0), (0, 1))


def _fold_taps(kernel: jax.Array, phase: int, axis: int) -> jax.Array:
    k0, k1, k2 = (jax.lax.index_in_dim(kernel, i, axis) for i in range(3))
    return jnp.concatenate([k0, k1 + k2] if phase == 0 else [k0 + k1, k2], axis=axis)


def upsample_conv(x: jax.Array, kernel: jax.Array, bias: Optional[jax.Array] = None) -> jax.Array:
    """``conv3x3_same(upsample_nearest2x(x))`` as four 2x2 convolutions of the low-resolution input.

    x [B, H, W, Cin], kernel [3, 3, Cin, Cout] (HWIO) -> [B, 2H, 2W, Cout]. Each output phase
    (row parity a, column parity b) is a 2x2 conv of ``x`` with the folded taps, and the four results
    are interleaved: 16 instead of 36 taps per low-resolution pixel (2.25x fewer FLOPs), and the 4x
    upsampled tensor is never built. Equal to the plain form up to float32 rounding (a few 1e-6 of
    the largest output; tests/test_maskgit_vqgan_parity.py), values and gradients.
    """
    b, h, w, _ = x.shape
    rows = []
    for a in (0, 1):
        ka = _fold_taps(kernel, a, 0)
        cols = []
        for c in (0, 1):
            k = _fold_taps(ka, c, 1)
            cols.append(jax.lax.conv_general_dilated(x, k, (1, 1), (_PHASE_PAD[a], _PHASE_PAD[c]),
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")))  # fmt: skip
        rows.append(jnp.stack(cols, axis=3))  # [B, H, W, 2, C]
    y = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, -1)  # [B, H, 2, W, 2, C] -> interleaved
    return y if bias is None else y + bias


class UpsampleConv(nn.Module):
    """Nearest x2 upsampling + 3x3 conv (with bias), computed by ``upsample_conv``.

    Parameters ``kernel`` [3, 3, Cin, Cout] and ``bias`` [Cout] with ``nn.Conv``'s initialisers and
    dtype promotion, so checkpoints and name maps are those of the plain ``nn.Conv``.
    """

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features),
                            self.param_dtype)  # fmt: skip
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return upsample_conv(x, kernel, bias)


class VQGANEncoder(nn.Module):
    config: VQGANConfig = VQGANConfig()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(num_groups=c.num_groups, dtype=self.dtype, param_dtype=self.param_dtype)
        x = _conv(c.hidden_channels, 3, "conv_in", self.dtype, self.param_dtype, use_bias=False)(x)
        for i, mult in enumerate(c.channel_mult):
            for j in range(c.num_res_blocks):
                x = ResBlock(c.hidden_channels * mult, name=f"down_{i}_block_{j}", **kw)(x)
            if i < len(c.channel_mult) - 1:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        for j in range(c.num_res_blocks):
            x = ResBlock(x.shape[-1], name=f"mid_{j}", **kw)(x)
        x = nn.swish(_norm("norm_out", c.num_groups, self.dtype, self.param_dtype)(x))
        return _conv(c.z_channels, 1, "conv_out", self.dtype, self.param_dtype)(x)


class VQGANDecoder(nn.Module):
    config: VQGANConfig = VQGANConfig()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        c = self.config
        kw = dict(num_groups=c.num_groups, dtype=self.dtype, param_dtype=self.param_dtype)
        levels = len(c.channel_mult)
        x = _conv(c.hidden_channels * c.channel_mult[-1], 3, "conv_in", self.dtype, self.param_dtype)(z)
        for j in range(c.num_res_blocks):
            x = ResBlock(x.shape[-1], name=f"mid_{j}", **kw)(x)
        # PyTorch builds up[0..L-1] but runs them from the last (coarsest) level to the first.
        for i in reversed(range(levels)):
            for j in range(c.num_res_blocks):
                x = ResBlock(c.hidden_channels * c.channel_mult[i], name=f"up_{i}_block_{j}", **kw)(x)
            if i > 0:
                x = UpsampleConv(x.shape[-1], self.dtype, self.param_dtype, name=f"up_{i}_upsample_conv")(x)
        x = nn.swish(_norm("norm_out", c.num_groups, self.dtype, self.param_dtype)(x))
        return _conv(3, 3, "conv_out", self.dtype, self.param_dtype)(x)


class MaskGITVQGAN(nn.Module):
    """The full MaskGIT-VQGAN, with the entry points every image tokenizer of the package has:

    * ``encode(images)`` -> (quantized latents [B, h, w, D] float32, ``{'ids': [B, h, w] int32}``);
    * ``decode(latents)`` -> pixels [B, H, W, 3] (unclamped);
    * ``decode_tokens(ids)`` -> pixels clamped to [0, 1] (ids [B, h, w], or [B, h*w] for square grids),
      like the official ``PretrainedTokenizer.decode_tokens``;
    * ``__call__(images)`` -> (pixels clamped to [0, 1], the ``encode`` result dict).
    """

    config: VQGANConfig = VQGANConfig()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.encoder = VQGANEncoder(c, self.dtype, self.param_dtype)
        self.decoder = VQGANDecoder(c, self.dtype, self.param_dtype)
        self.quantize = VQGANQuantizer(c.codebook_size, c.z_channels)

    def encode(self, images: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        """images [B, H, W, 3] in [0, 1] -> (quantized latents [B, h, w, D], {'ids': [B, h, w]})."""
        quantized, ids = self.quantize(self.encoder(images))
        return quantized, {"ids": ids}

    def decode(self, latents: jax.Array) -> jax.Array:
        return self.decoder(latents)

    def decode_tokens(self, ids: jax.Array) -> jax.Array:
        """ids [B, h, w] (or [B, h*w] for square grids) -> images [B, H, W, 3] clamped to [0, 1]."""
        if ids.ndim == 2:
            side = int(round(ids.shape[1] ** 0.5))
            if side * side != ids.shape[1]:
                raise ValueError(f"flat ids of length {ids.shape[1]} are not a square grid; pass [B, h, w]")
            ids = ids.reshape(ids.shape[0], side, side)
        latents = self.quantize.lookup(ids)
        return jnp.clip(self.decoder(latents), 0.0, 1.0)

    def __call__(self, images: jax.Array) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        quantized, result = self.encode(images)
        return jnp.clip(self.decoder(quantized), 0.0, 1.0), result


def init_params(config: VQGANConfig, rng: jax.Array, dtype=jnp.float32) -> dict:
    """Random-init parameters (float32; convolutional, so they do not depend on the image size)."""
    model = MaskGITVQGAN(config, dtype=dtype)
    size = config.downsample_factor
    return model.init(rng, jnp.zeros((1, size, size, 3), jnp.float32))["params"]


def abstract_params(config: VQGANConfig) -> dict:
    """Shapes/dtypes of the parameter tree without allocating it (``jax.eval_shape``)."""
    return jax.eval_shape(lambda r: init_params(config, r), jax.random.key(0))


def resolution_blocks(config: VQGANConfig) -> Sequence[int]:
    return [config.hidden_channels * m for m in config.channel_mult]
