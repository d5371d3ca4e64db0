"""ConvNeXt (torchvision ``convnext_small``), channels-last, inference mode.

The network of TiTok's stage-2 perceptual loss (``PerceptualLoss('convnext_s')``: torchvision
``convnext_small(IMAGENET1K_V1).eval()``; official_titok.md section 6). Eval mode means stochastic
depth is the identity, so it is left out.

    features.0      stem: Conv(3 -> 96, k4, s4) + LayerNorm2d
    features.1/3/5/7  stages of CNBlocks: depthwise Conv 7x7 (pad 3) -> LayerNorm -> Linear(C, 4C)
                    -> exact GELU -> Linear(4C, C) -> * layer_scale -> + input
    features.2/4/6  downsample: LayerNorm2d + Conv(k2, s2)
    avgpool, classifier: global mean -> LayerNorm2d -> Flatten -> Linear(768, 1000)

All LayerNorms use eps 1e-6 and normalise over channels (LayerNorm2d on NCHW == LayerNorm over the
last axis here). Flax names: ``stem_conv``, ``stem_norm``, ``stage_{s}_block_{j}/{dwconv, norm,
pwconv1, pwconv2, layer_scale}`` (s = 0..3), ``downsample_{s}_norm``, ``downsample_{s}_conv``
(s = 1..3), ``head_norm``, ``head_fc``; ``titok_jax.models.convnext_map`` links them to
torchvision's ``features.{i}`` / ``classifier.{0,2}`` keys.
"""

from __future__ import annotations

from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from titok_jax.config.models import CONVNEXT_SMALL, ConvNeXtConfig
from titok_jax.models.layers import dense_init

Dtype = Any

LN_EPS = 1e-6


def _layer_norm(name: str, dtype, param_dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype, name=name)


def _conv(features, kernel, stride, padding, name, dtype, param_dtype, groups=1) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        feature_group_count=groups,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=dense_init(0.02),
        name=name,
    )


class CNBlock(nn.Module):
    dim: int
    kernel_size: int = 7
    mlp_ratio: int = 4
    layer_scale_init: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.kernel_size // 2
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=dense_init(0.02))
        h = _conv(self.dim, self.kernel_size, 1, ((p, p), (p, p)), "dwconv", self.dtype, self.param_dtype,
                  groups=self.dim)(x)  # fmt: skip
        h = _layer_norm("norm", self.dtype, self.param_dtype)(h)
        h = nn.Dense(self.mlp_ratio * self.dim, name="pwconv1", **dense)(h)
        h = jax.nn.gelu(h, approximate=False)
        h = nn.Dense(self.dim, name="pwconv2", **dense)(h)
        gamma = self.param("layer_scale", nn.initializers.constant(self.layer_scale_init), (self.dim,),
                           self.param_dtype)  # fmt: skip
        return x + h * gamma.astype(h.dtype)


class ConvNeXt(nn.Module):
    """images [B, H, W, 3] (already ImageNet-normalised) -> logits [B, num_classes].

    With ``return_features=True`` also returns ``{"features.{i}": [B, h, w, C] (NHWC), "avgpool":
    [B, C], "classifier_ln": [B, C]}``: the outputs of torchvision's ``features[i]``, ``avgpool``
    (flattened) and ``classifier[0:2]``.
    """

    config: ConvNeXtConfig = CONVNEXT_SMALL
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, return_features: bool = False):
        c = self.config
        if x.ndim != 4 or x.shape[-1] != c.in_channels:
            raise ValueError(f"expected images [B, H, W, {c.in_channels}], got shape {tuple(x.shape)}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feats: Dict[str, jax.Array] = {}
        x = _conv(c.dims[0], c.patch_size, c.patch_size, "VALID", "stem_conv", **kw)(x)
        x = _layer_norm("stem_norm", **kw)(x)
        feats["features.0"] = x
        for s, (depth, dim) in enumerate(zip(c.depths, c.dims)):
            if s > 0:
                x = _layer_norm(f"downsample_{s}_norm", **kw)(x)
                x = _conv(dim, 2, 2, "VALID", f"downsample_{s}_conv", **kw)(x)
                feats[f"features.{2 * s}"] = x
            for j in range(depth):
                x = CNBlock(dim, c.kernel_size, c.mlp_ratio, c.layer_scale_init, name=f"stage_{s}_block_{j}", **kw)(x)
            feats[f"features.{2 * s + 1}"] = x
        pooled = jnp.mean(x, axis=(1, 2))
        feats["avgpool"] = pooled
        h = _layer_norm("head_norm", **kw)(pooled)
        feats["classifier_ln"] = h
        logits = nn.Dense(c.num_classes, name="head_fc", kernel_init=dense_init(0.02), **kw)(h)
        return (logits, feats) if return_features else logits


def init_params(config: ConvNeXtConfig, rng: jax.Array, dtype=jnp.float32) -> dict:
    """Random-init parameters (float32; they do not depend on the image size)."""
    model = ConvNeXt(config, dtype=dtype)
    size = config.patch_size * 2 ** (len(config.depths) - 1)
    return model.init(rng, jnp.zeros((1, size, size, config.in_channels), jnp.float32))["params"]


def abstract_params(config: ConvNeXtConfig = CONVNEXT_SMALL) -> dict:
    """Parameter shapes/dtypes without allocating anything."""
    return jax.eval_shape(lambda r: init_params(config, r), jax.random.key(0))
