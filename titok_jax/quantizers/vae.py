"""Diagonal Gaussian posterior of the TiTok VAE variants (``quantize_mode: vae``).

Mirrors ``DiagonalGaussianDistribution`` of bytedance/1d-tokenizer: mean = channels [0, C),
logvar = channels [C, 2C) clamped to [-30, 20], std = exp(logvar / 2); KL summed over the
channel axis only (shape [B, L]). Not a module: it has no parameters.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class DiagonalGaussian:
    mean: jax.Array
    logvar: jax.Array

    @classmethod
    def from_moments(cls, moments: jax.Array) -> "DiagonalGaussian":
        """moments [B, L, 2C] -> distribution over [B, L, C] latents (float32)."""
        moments = moments.astype(jnp.float32)
        if moments.shape[-1] % 2:
            raise ValueError(f"VAE moments need an even channel count, got {moments.shape[-1]}")
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean=mean, logvar=jnp.clip(logvar, -30.0, 20.0))

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    @property
    def var(self) -> jax.Array:
        return jnp.exp(self.logvar)

    def sample(self, rng: jax.Array = None, eps: jax.Array = None) -> jax.Array:
        """mean + std * eps, with eps ~ N(0, 1) drawn from ``rng`` unless given."""
        if eps is None:
            if rng is None:
                raise ValueError("DiagonalGaussian.sample needs an rng key or an explicit eps")
            eps = jax.random.normal(rng, self.mean.shape, self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> jax.Array:
        return self.mean

    def kl(self) -> jax.Array:
        """KL(q || N(0, I)) per token: [B, L]."""
        return 0.5 * jnp.sum(jnp.square(self.mean) + self.var - 1.0 - self.logvar, axis=-1)
