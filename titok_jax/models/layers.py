"""Transformer building blocks shared by the TiTok encoder and decoder.

Numerics follow the official OpenCLIP-style ``ResidualAttentionBlock`` of
bytedance/1d-tokenizer (``modeling/modules/blocks.py``): pre-LayerNorm with
eps 1e-5, fused q/k/v projection, softmax attention scaled by 1/sqrt(head_dim),
MLP with the exact (erf) GELU.

Parameter names mirror the PyTorch module names so that the explicit name maps
in ``titok_jax.models.titok_map`` stay readable:

    ln_1, attn/in_proj (Dense W->3W), attn/out_proj, ln_2, mlp/c_fc, mlp/c_proj

The q/k/v projection is one 2-D ``nn.Dense`` (the layout of PyTorch's packed
``in_proj_weight``) rather than ``nn.MultiHeadDotProductAttention``: it is one
matmul instead of three, and 2-D kernels shard cleanly by the FSDP rule of
``titok_jax.parallel`` (largest divisible dimension).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Compute dtypes by name (parameters are always float32).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# PyTorch nn.LayerNorm default; Flax defaults to 1e-6.
TORCH_LN_EPS = 1e-5


def dense_init(std: float = 0.02):
    """Official TiTok init for Linear/Conv weights: N(0, std^2) (trunc at +-2 abs)."""
    return nn.initializers.truncated_normal(stddev=std, lower=-2.0 / std, upper=2.0 / std)


class Attention(nn.Module):
    """Multi-head self-attention with a packed q/k/v projection (no mask, no dropout)."""

    width: int
    num_heads: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        b, t, _ = x.shape
        head_dim = self.width // self.num_heads
        qkv = nn.Dense(
            3 * self.width,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.zeros,
            name="in_proj",
        )(x)
        # Row order of PyTorch's in_proj_weight is [q; k; v], heads contiguous inside each.
        qkv = qkv.reshape(b, t, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = jax.nn.dot_product_attention(q, k, v)
        out = out.reshape(b, t, self.width)
        return nn.Dense(
            self.width,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=dense_init(),
            bias_init=nn.initializers.zeros,
            name="out_proj",
        )(out)


class Mlp(nn.Module):
    width: int
    hidden: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(
            self.hidden,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=dense_init(),
            bias_init=nn.initializers.zeros,
            name="c_fc",
        )(x)
        x = nn.gelu(x, approximate=False)
        return nn.Dense(
            self.width,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=dense_init(),
            bias_init=nn.initializers.zeros,
            name="c_proj",
        )(x)


def layer_norm(name: str, dtype: Dtype, param_dtype: Dtype, eps: float = TORCH_LN_EPS) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=eps,
        use_fast_variance=False,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.initializers.ones,
        bias_init=nn.initializers.zeros,
        name=name,
    )


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    width: int
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = layer_norm("ln_1", self.dtype, self.param_dtype)(x)
        x = x + Attention(self.width, self.num_heads, self.dtype, self.param_dtype, name="attn")(h)
        h = layer_norm("ln_2", self.dtype, self.param_dtype)(x)
        x = x + Mlp(self.width, int(self.width * self.mlp_ratio), self.dtype, self.param_dtype, name="mlp")(h)
        return x


class Transformer(nn.Module):
    """A stack of ``ResidualAttentionBlock`` named ``transformer_{i}``.

    ``remat`` recomputes each block's activations in the backward pass
    (``nn.remat``), trading compute for memory in training.
    """

    width: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        block_cls = nn.remat(ResidualAttentionBlock) if self.remat else ResidualAttentionBlock
        for i in range(self.depth):
            x = block_cls(
                self.width, self.num_heads, self.mlp_ratio, self.dtype, self.param_dtype, name=f"transformer_{i}"
            )(x)
        return x


def embedding_init(width: int):
    """Official init of class/positional embeddings and learned tokens: width^-0.5 * N(0, 1)."""
    return nn.initializers.normal(stddev=width**-0.5)
