"""Stage-2 patch discriminator: NHWC port of the official ``NLayerDiscriminator``.

bytedance/1d-tokenizer ``modeling/modules/discriminator.py`` (official_titok.md sections 4.4 and 6):

    block_in   Conv2dSame(num_channels -> C, k5) + LeakyReLU(0.1)
    blocks.j   Conv2dSame(k3) -> downsample x2 -> GroupNorm(32, eps 1e-5) -> LeakyReLU(0.1),
               channels C * (1, 2, 4, ...)[j] -> C * (2, 4, 8, ...)[j] ... i.e. C -> C -> 2C -> 4C
    pool       AdaptiveMaxPool2d((16, 16))
    to_logits  Conv2dSame(1x1) -> LeakyReLU(0.1) -> Conv2dSame(-> 1, k5)

The downsample is the ``BlurBlock`` (a fixed depthwise ``outer(k, k) / sum`` kernel, stride 2) or,
with ``blur_resample=False``, a 2x2 average pool. The blur kernel is a constant here, not a
parameter; the PyTorch buffer ``blocks.{j}.1.kernel`` is checked and re-emitted by the name map
(``titok_jax.models.discriminator_map``). Quirk kept from the original: the BlurBlock pads as if the
kernel were 4x4 (TF-SAME for k=4, s=2) whatever ``blur_kernel_size`` is.

Conv2dSame at stride 1 with odd kernels is symmetric ``k // 2`` padding, i.e. Flax ``"SAME"``.
Channels-last; images in [0, 1]; output patch logits ``[B, 16, 16, 1]``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from titok_jax.config.models import DiscriminatorConfig
from titok_jax.models.maskgit_vqgan import GroupNorm

Dtype = Any

GN_EPS = 1e-5  # torch.nn.GroupNorm default (the VQGAN uses 1e-6)
LEAKY_SLOPE = 0.1
BLUR_TAPS = {3: (1, 2, 1), 4: (1, 3, 3, 1), 5: (1, 4, 6, 4, 1)}


def blur_kernel(size: int = 4) -> np.ndarray:
    """The BlurBlock kernel ``outer(taps, taps) / sum`` as float32 ``[size, size]`` (exact dyadic values)."""
    taps = np.asarray(BLUR_TAPS[size], np.float32)
    k = taps[None, :] * taps[:, None]
    return k / k.sum()


def _torch_default_kernel_init():
    # PyTorch Conv2d default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_default_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _conv(features: int, kernel: int, in_features: int, name: str, dtype, param_dtype) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel, kernel),
        padding="SAME",
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=_torch_default_kernel_init(),
        bias_init=_torch_default_bias_init(in_features * kernel * kernel),
        name=name,
    )


def _same_pad_k4_s2(n: int) -> Tuple[int, int]:
    total = max((math.ceil(n / 2) - 1) * 2 + 4 - n, 0)
    return total // 2, total - total // 2


def blur_downsample(x: jax.Array, size: int = 4) -> jax.Array:
    """BlurBlock: depthwise blur, stride 2, padded TF-SAME for a 4x4 kernel (NHWC)."""
    c = x.shape[-1]
    kernel = jnp.asarray(np.broadcast_to(blur_kernel(size)[:, :, None, None], (size, size, 1, c)), x.dtype)
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(2, 2),
        padding=(_same_pad_k4_s2(x.shape[1]), _same_pad_k4_s2(x.shape[2])),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
        precision=jax.lax.Precision.HIGHEST,
    )


def _adaptive_max_1d(x: jax.Array, axis: int, out: int) -> jax.Array:
    n = x.shape[axis]
    if n % out == 0:
        r = n // out
        shape = x.shape[:axis] + (out, r) + x.shape[axis + 1 :]
        return jnp.max(x.reshape(shape), axis=axis + 1)
    # torch adaptive pooling: window i covers [floor(i * n / out), ceil((i + 1) * n / out)).
    pieces = [
        jnp.max(jax.lax.slice_in_dim(x, (i * n) // out, -((-(i + 1) * n) // out), axis=axis), axis=axis, keepdims=True)
        for i in range(out)
    ]
    return jnp.concatenate(pieces, axis=axis)


def adaptive_max_pool2d(x: jax.Array, output_size: Union[int, Tuple[int, int]]) -> jax.Array:
    """``torch.nn.AdaptiveMaxPool2d`` on NHWC for any input size (max is separable, so H then W)."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    return _adaptive_max_1d(_adaptive_max_1d(x, 1, oh), 2, ow)


def _act(x: jax.Array) -> jax.Array:
    return jax.nn.leaky_relu(x, LEAKY_SLOPE)


class DiscriminatorStage(nn.Module):
    """``blocks.{j}``: conv (``.0``) -> downsample (``.1``, no params) -> norm (``.2``) -> LeakyReLU."""

    in_channels: int
    out_channels: int
    config: DiscriminatorConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        x = _conv(self.out_channels, 3, self.in_channels, "conv", self.dtype, self.param_dtype)(x)
        if c.blur_resample:
            x = blur_downsample(x, c.blur_kernel_size)
        else:
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = GroupNorm(c.num_groups, GN_EPS, self.dtype, self.param_dtype, name="norm")(x)
        return _act(x)


class NLayerDiscriminator(nn.Module):
    """images [B, H, W, num_channels] -> patch logits [B, pool_size, pool_size, 1].

    With ``return_features=True`` also returns ``{"blocks.{j}": ..., "pool": ...}`` (NHWC), the
    activations the official fixture records with forward hooks.
    """

    config: DiscriminatorConfig = DiscriminatorConfig()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, return_features: bool = False):
        c = self.config
        if x.ndim != 4 or x.shape[-1] != c.num_channels:
            raise ValueError(f"expected images [B, H, W, {c.num_channels}], got shape {tuple(x.shape)}")
        feats: Dict[str, jax.Array] = {}
        h = _act(_conv(c.hidden_channels, 5, c.num_channels, "block_in", self.dtype, self.param_dtype)(x))
        for j in range(c.num_stages):
            cin, cout = c.stage_channels(j)
            h = DiscriminatorStage(cin, cout, c, self.dtype, self.param_dtype, name=f"blocks_{j}")(h)
            feats[f"blocks.{j}"] = h
        h = adaptive_max_pool2d(h, c.pool_size)
        feats["pool"] = h
        ch = h.shape[-1]
        h = _act(_conv(ch, 1, ch, "to_logits_0", self.dtype, self.param_dtype)(h))
        logits = _conv(1, 5, ch, "to_logits_2", self.dtype, self.param_dtype)(h)
        return (logits, feats) if return_features else logits


def init_params(config: DiscriminatorConfig, rng: jax.Array, dtype=jnp.float32) -> dict:
    """Random-init parameters (float32; convolutional, so they do not depend on the image size)."""
    model = NLayerDiscriminator(config, dtype=dtype)
    size = config.pool_size * 2**config.num_stages
    return model.init(rng, jnp.zeros((1, size, size, config.num_channels), jnp.float32))["params"]


def abstract_params(config: DiscriminatorConfig) -> dict:
    """Parameter shapes/dtypes without allocating anything."""
    return jax.eval_shape(lambda r: init_params(config, r), jax.random.key(0))
