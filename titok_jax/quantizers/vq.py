"""Vector quantizers: TiTok's (optionally l2-normalised) and the MaskGIT-VQGAN's plain one.

``VectorQuantizer`` mirrors ``VectorQuantizer`` of bytedance/1d-tokenizer (``modeling/quantizer/quantizer.py``):

* runs in float32 whatever the compute dtype of the surrounding model;
* ``use_l2_norm``: ``x / max(||x||, 1e-12)`` on both the latents and the codebook rows;
* distance ``sum(z^2) + sum(e^2) - 2 z.e``, first index on ties;
* ``commitment_loss = beta * mean((sg(z_q) - z)^2)``, ``codebook_loss = mean((z_q - sg(z))^2)``;
* straight-through output ``z + sg(z_q - z)``.

Tokens are channels-last: latents [B, L, C], ids [B, L] (the official code uses
[B, C, 1, L] and [B, 1, L]).

``VQGANQuantizer`` is the nearest-neighbour codebook of the MaskGIT-VQGAN (not normalised): its
``__call__`` is the inference path (exact codebook rows), ``with_losses`` the training path of the
``teacher`` stage (codebook + commitment loss, straight-through output).
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """``torch.nn.functional.normalize``: x / max(||x||_2, eps)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


def nearest_code(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """Index of the nearest codebook row for every vector in ``z`` [..., C] (float32)."""
    flat = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
    cb = codebook.astype(jnp.float32)
    d = (
        jnp.sum(flat**2, axis=1, keepdims=True)
        + jnp.sum(cb**2, axis=1)[None, :]
        - 2.0 * jnp.dot(flat, cb.T, precision=_HIGHEST)
    )
    return jnp.argmin(d, axis=1).reshape(z.shape[:-1]).astype(jnp.int32)


def codebook_usage(ids: jax.Array, codebook_size: int) -> Dict[str, jax.Array]:
    """Monitoring statistics of a batch of ids: fraction of codes used, perplexity, entropy (bits)."""
    counts = jnp.bincount(ids.reshape(-1), length=codebook_size).astype(jnp.float32)
    p = counts / jnp.maximum(counts.sum(), 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return {
        "codebook_usage": jnp.mean((counts > 0).astype(jnp.float32)),
        "codebook_perplexity": jnp.exp(entropy),
        "codebook_entropy_bits": entropy / jnp.log(2.0),
    }


def restart_dead_codes(
    codebook: jax.Array, dead: jax.Array, latents: jax.Array, rng: jax.Array, noise: float = 0.01
) -> jax.Array:
    """Dead-code restart (an option, not part of the official recipes): every row of ``codebook`` [K, D]
    with ``dead`` [K] set becomes a vector drawn uniformly (with replacement) from ``latents`` [..., D],
    plus Gaussian noise of ``noise`` x the latents' RMS so that codes restarted on one latent differ.
    Live rows are returned unchanged."""
    flat = latents.reshape(-1, latents.shape[-1]).astype(jnp.float32)
    r_pick, r_noise = jax.random.split(rng)
    picked = flat[jax.random.randint(r_pick, (codebook.shape[0],), 0, flat.shape[0])]
    rms = jnp.sqrt(jnp.mean(jnp.square(flat)))
    fresh = picked + noise * rms * jax.random.normal(r_noise, picked.shape, jnp.float32)
    return jnp.where(dead[:, None], fresh.astype(codebook.dtype), codebook)


def codebook_init(codebook_size: int):
    """The official codebook init of TiTok and the MaskGIT-VQGAN: U(-1/K, 1/K)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -1.0 / codebook_size, 1.0 / codebook_size)

    return init


class VectorQuantizer(nn.Module):
    """``embedding`` [K, C] codebook (stored un-normalised, like the official one)."""

    codebook_size: int
    token_size: int
    commitment_cost: float = 0.25
    use_l2_norm: bool = True

    def setup(self):
        self.embedding = self.param(
            "embedding", codebook_init(self.codebook_size), (self.codebook_size, self.token_size), jnp.float32
        )

    def codebook(self) -> jax.Array:
        cb = jnp.asarray(self.embedding, jnp.float32)
        return l2_normalize(cb) if self.use_l2_norm else cb

    def __call__(self, z: jax.Array) -> tuple[jax.Array, Dict[str, Any]]:
        """z [B, L, C] -> (straight-through z_q [B, L, C] float32, result dict with ``ids`` [B, L])."""
        z = z.astype(jnp.float32)
        if self.use_l2_norm:
            z = l2_normalize(z)
        cb = self.codebook()
        ids = nearest_code(z, cb)
        z_q = jnp.take(cb, ids, axis=0)
        commitment = self.commitment_cost * jnp.mean(jnp.square(jax.lax.stop_gradient(z_q) - z))
        codebook_loss = jnp.mean(jnp.square(z_q - jax.lax.stop_gradient(z)))
        z_st = z + jax.lax.stop_gradient(z_q - z)
        result = {
            "quantizer_loss": commitment + codebook_loss,
            "commitment_loss": commitment,
            "codebook_loss": codebook_loss,
            "ids": ids,
            **codebook_usage(ids, self.codebook_size),
        }
        return z_st, result

    def lookup(self, ids: jax.Array) -> jax.Array:
        """ids [...] -> codebook rows [..., C] (l2-normalised when enabled); the official get_codebook_entry."""
        return jnp.take(self.codebook(), ids, axis=0)


class VQGANQuantizer(nn.Module):
    """Plain (not normalised) nearest-neighbour codebook, ``embedding`` [K, dim]."""

    codebook_size: int = 1024
    dim: int = 256

    def setup(self):
        self.embedding = self.param("embedding", codebook_init(self.codebook_size), (self.codebook_size, self.dim),
                                    jnp.float32)  # fmt: skip

    def __call__(self, z: jax.Array) -> Tuple[jax.Array, jax.Array]:
        """z [..., D] -> (nearest codebook rows [..., D] float32, ids [...] int32)."""
        ids = nearest_code(z.astype(jnp.float32), self.embedding)
        return self.lookup(ids), ids

    def with_losses(self, z: jax.Array, commitment_cost: float) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        """Training path: (straight-through z_q float32, {'quantizer_loss', 'codebook_loss', 'commitment_loss',
        'ids', usage stats}); ``quantizer_loss = codebook_loss + commitment_cost * commitment_loss``."""
        z = z.astype(jnp.float32)
        z_q, ids = self(z)
        codebook_loss = jnp.mean(jnp.square(z_q - jax.lax.stop_gradient(z)))
        commitment = jnp.mean(jnp.square(jax.lax.stop_gradient(z_q) - z))
        result = {
            "quantizer_loss": codebook_loss + commitment_cost * commitment,
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment,
            "ids": ids,
            **codebook_usage(ids, self.codebook_size),
        }
        return z + jax.lax.stop_gradient(z_q - z), result

    def lookup(self, ids: jax.Array) -> jax.Array:
        return jnp.take(jnp.asarray(self.embedding, jnp.float32), ids, axis=0)
