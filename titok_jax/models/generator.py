"""MaskGIT generators of TiTok (bytedance/1d-tokenizer ``modeling/maskgit.py``), channels-last Flax.

Two class-conditional masked-token transformers share one call signature
``module.apply(v, input_ids [B, L], labels [B], drop [B]) -> logits float32 [B, L, K]``:

* ``ImageBert`` (titok_l32 / titok_b64): a Hugging Face ``BertModel`` without pooler, post-LN
  (LayerNorm eps 1e-12), exact erf GELU, dropout 0.1 on embeddings / attention probabilities /
  both residual branches (active only with ``deterministic=False``, rng stream ``'dropout'``),
  token-type row 0 added to every position, and an untied ``lm_head`` Linear(H -> K) applied to the
  last hidden states [:, 1:] (official_titok.md section 7.2);
* ``UViTBert`` (titok_s128): token embedding + ``pos_embed``, ``num_hidden_layers // 2`` pre-LN
  ``in_blocks`` whose outputs are pushed on a stack, a ``mid_block``, as many ``out_blocks`` that
  first fuse ``skip_linear(concat([x, skips.pop()]))`` (LIFO), final ``norm`` then ``lm_head``;
  q/k/v without bias, attention computed in float32, no dropout at all (section 7.3).

Vocabulary (section 7.1): ids ``0..K-1`` are image tokens, ``K`` is the mask token, class ``c`` is
the token ``K + 1 + c`` and the dropped/null class is ``K + 1 + num_classes``; the class token is
prepended, so sequences are ``L + 1`` long. The module takes *raw* class ids ``0..C-1`` and a
``drop`` flag per sample (True -> null class) and does the shift itself.

dtype: ``dtype`` is the compute dtype of the matmuls; parameters stay float32, the residual stream,
LayerNorms and softmax run in float32 and the logits are returned as float32 (the official
models ran under bf16 autocast the same way; the UViT attention is float32 even then).

Parameter names follow the PyTorch modules (``generator_map`` holds the explicit key map):

    ImageBert: word_embeddings, position_embeddings, token_type_embeddings, embeddings_ln,
               layer_{i}/{query,key,value,attention_output,attention_ln,intermediate,output,output_ln},
               lm_head
    UViTBert:  pos_embed, embeddings, in_blocks_{i}, mid_block, out_blocks_{i}
               (each {norm1, attn/{qkv,proj}, norm2, mlp/{fc1,fc2}} + skip_linear on out blocks), norm, lm_head
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from titok_jax.config.models import GeneratorConfig
from titok_jax.models.layers import TORCH_LN_EPS, dense_init

Dtype = Any

BERT_LN_EPS = 1e-12


def check_inputs(config: GeneratorConfig, input_ids, labels, drop) -> None:
    """Static (trace-time) checks; raise ValueError saying what was wrong."""
    if input_ids.ndim != 2 or input_ids.shape[1] != config.image_seq_len:
        raise ValueError(
            f"input_ids must be [B, {config.image_seq_len}] (image_seq_len); got shape {tuple(input_ids.shape)}"
        )
    if not jnp.issubdtype(input_ids.dtype, jnp.integer) or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"input_ids and labels must be integers; got {input_ids.dtype} and {labels.dtype}")
    b = input_ids.shape[0]
    if tuple(labels.shape) != (b,) or tuple(jnp.shape(drop)) != (b,):
        raise ValueError(
            f"labels and drop must be [B] = [{b}] (raw class ids and a null-class flag per sample); "
            f"got {tuple(labels.shape)} and {tuple(jnp.shape(drop))}"
        )


def class_tokens(config: GeneratorConfig, labels: jax.Array, drop: jax.Array) -> jax.Array:
    """Raw class ids [B] + drop flags [B] -> class token ids K+1+c, or the null class where dropped."""
    cls = labels.astype(jnp.int32) + config.codebook_size + 1
    return jnp.where(jnp.asarray(drop).astype(bool), config.null_class_id, cls)


def _softmax_attention(q, k, v, dtype, probs_fn=None):
    """q, k, v [B, T, H, D]; scores and softmax in float32, probabilities x v in ``dtype``."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
    probs = jax.nn.softmax(scores, axis=-1)
    if probs_fn is not None:
        probs = probs_fn(probs)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(dtype), v.astype(dtype))


# -------------------------------------------------------------------------------------------------
# ImageBert (HF BERT, post-LN)
def _bert_dense(features: int, name: str, dtype) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=dtype,
        kernel_init=nn.initializers.normal(0.02),
        bias_init=nn.initializers.zeros,
        name=name,
    )


def _ln(name: str, eps: float) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=eps,
        use_fast_variance=False,
        dtype=jnp.float32,
        scale_init=nn.initializers.ones,
        bias_init=nn.initializers.zeros,
        name=name,
    )


class BertLayer(nn.Module):
    """attention -> dense -> dropout -> LN(. + x); intermediate -> GELU -> output -> dropout -> LN(. + h)."""

    config: GeneratorConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        c, dt = self.config, self.dtype
        b, t, w = x.shape
        nh, hd = c.num_attention_heads, c.head_dim
        q = _bert_dense(w, "query", dt)(x).reshape(b, t, nh, hd)
        k = _bert_dense(w, "key", dt)(x).reshape(b, t, nh, hd)
        v = _bert_dense(w, "value", dt)(x).reshape(b, t, nh, hd)
        attn_drop = nn.Dropout(c.attn_drop)
        a = _softmax_attention(q, k, v, dt, lambda p: attn_drop(p, deterministic=deterministic))
        a = _bert_dense(w, "attention_output", dt)(a.reshape(b, t, w))
        a = nn.Dropout(c.dropout)(a, deterministic=deterministic)
        h = _ln("attention_ln", BERT_LN_EPS)(a.astype(jnp.float32) + x)
        m = _bert_dense(c.intermediate_size, "intermediate", dt)(h)
        m = nn.gelu(m, approximate=False)
        m = _bert_dense(w, "output", dt)(m)
        m = nn.Dropout(c.dropout)(m, deterministic=deterministic)
        return _ln("output_ln", BERT_LN_EPS)(m.astype(jnp.float32) + h)


class ImageBert(nn.Module):
    """The official ``ImageBert`` (BERT encoder + ``lm_head``); see the module docstring."""

    config: GeneratorConfig
    dtype: Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, input_ids, labels, drop, deterministic: bool = True) -> jax.Array:
        c = self.config
        check_inputs(c, input_ids, labels, drop)
        ids = jnp.concatenate([class_tokens(c, labels, drop)[:, None], input_ids.astype(jnp.int32)], axis=1)
        emb_init = nn.initializers.normal(0.02)
        word = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=emb_init, name="word_embeddings")
        pos = nn.Embed(c.image_seq_len + 1, c.hidden_size, embedding_init=emb_init, name="position_embeddings")
        tok_type = nn.Embed(2, c.hidden_size, embedding_init=emb_init, name="token_type_embeddings")
        x = word(ids) + pos.embedding[None, : ids.shape[1]] + tok_type.embedding[0]
        x = _ln("embeddings_ln", BERT_LN_EPS)(x)
        x = nn.Dropout(c.dropout)(x, deterministic=deterministic)
        layer_cls = nn.remat(BertLayer, static_argnums=(2,)) if self.remat else BertLayer
        for i in range(c.num_hidden_layers):
            x = layer_cls(c, self.dtype, name=f"layer_{i}")(x, deterministic)
        logits = nn.Dense(
            c.codebook_size,
            dtype=self.dtype,
            kernel_init=nn.initializers.normal(0.02),
            bias_init=nn.initializers.zeros,
            name="lm_head",
        )(x[:, 1:])
        return logits.astype(jnp.float32)


# -------------------------------------------------------------------------------------------------
# UViTBert (pre-LN U-ViT blocks with long skips)
def _uvit_dense(features: int, name: str, dtype, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        kernel_init=dense_init(0.02),
        bias_init=nn.initializers.zeros,
        name=name,
    )


class UViTAttention(nn.Module):
    """qkv Linear (no bias), (3, heads, head_dim) split, float32 softmax attention, proj Linear."""

    config: GeneratorConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        b, t, w = x.shape
        qkv = _uvit_dense(3 * w, "qkv", self.dtype, use_bias=False)(x)
        qkv = qkv.reshape(b, t, 3, c.num_attention_heads, c.head_dim).astype(jnp.float32)
        out = _softmax_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], jnp.float32)
        return _uvit_dense(w, "proj", self.dtype)(out.reshape(b, t, w))


class UViTMlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    config: GeneratorConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        x = _uvit_dense(c.intermediate_size, "fc1", self.dtype)(x)
        x = nn.gelu(x, approximate=False)
        return _uvit_dense(c.hidden_size, "fc2", self.dtype)(x)


class UViTBlock(nn.Module):
    """[x = skip_linear(concat([x, skip]))]; x += attn(norm1(x)); x += mlp(norm2(x))."""

    config: GeneratorConfig
    skip: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, skip=None) -> jax.Array:
        c, dt = self.config, self.dtype
        if self.skip:
            x = _uvit_dense(c.hidden_size, "skip_linear", dt)(jnp.concatenate([x, skip], -1))
            x = x.astype(jnp.float32)
        x = x + UViTAttention(c, dt, name="attn")(_ln("norm1", TORCH_LN_EPS)(x))
        h = _ln("norm2", TORCH_LN_EPS)(x)
        return x + UViTMlp(c, dt, name="mlp")(h)


class UViTBert(nn.Module):
    """The official ``UViTBert``; see the module docstring."""

    config: GeneratorConfig
    dtype: Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, input_ids, labels, drop, deterministic: bool = True) -> jax.Array:
        del deterministic  # the official UViT has no dropout
        c = self.config
        check_inputs(c, input_ids, labels, drop)
        ids = jnp.concatenate([class_tokens(c, labels, drop)[:, None], input_ids.astype(jnp.int32)], axis=1)
        emb_init = dense_init(0.02)
        x = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=emb_init, name="embeddings")(ids)
        pos = self.param("pos_embed", dense_init(0.02), (1, c.image_seq_len + 1, c.hidden_size))
        x = x + pos[:, : ids.shape[1]]
        block_cls = nn.remat(UViTBlock) if self.remat else UViTBlock
        skips = []
        for i in range(c.num_hidden_layers // 2):
            x = block_cls(c, False, self.dtype, name=f"in_blocks_{i}")(x)
            skips.append(x)
        x = block_cls(c, False, self.dtype, name="mid_block")(x)
        for i in range(c.num_hidden_layers // 2):
            x = block_cls(c, True, self.dtype, name=f"out_blocks_{i}")(x, skips.pop())
        x = _ln("norm", TORCH_LN_EPS)(x)
        logits = _uvit_dense(c.codebook_size, "lm_head", self.dtype)(x[:, 1:])
        return logits.astype(jnp.float32)


def build(config: GeneratorConfig, dtype=jnp.float32, remat: bool = False) -> nn.Module:
    """The Flax module of ``config.model_type`` ("ViT" -> ImageBert, "UViT" -> UViTBert)."""
    cls = ImageBert if config.model_type == "ViT" else UViTBert
    return cls(config, dtype=dtype, remat=remat)


def init_params(config: GeneratorConfig, rng: jax.Array, dtype=jnp.float32) -> dict:
    """Random-init parameters as officially initialised (unboxed float32 arrays; jit-friendly)."""
    model = build(config, dtype)
    ids = jnp.full((1, config.image_seq_len), config.mask_token_id, jnp.int32)
    labels = jnp.zeros((1,), jnp.int32)
    return model.init(rng, ids, labels, jnp.zeros((1,), bool))["params"]


def abstract_params(config: GeneratorConfig) -> dict:
    """Shapes/dtypes of the parameter tree, nothing allocated (``jax.eval_shape``)."""
    return jax.eval_shape(lambda r: init_params(config, r), jax.random.key(0))
