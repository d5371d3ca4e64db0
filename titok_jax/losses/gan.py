"""Stage-2 adversarial losses of bytedance/1d-tokenizer (``modeling/modules/losses.py``), as pure functions.

official_titok.md section 6:

* discriminator: hinge ``0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat))))``;
* generator: ``-mean(D(x_hat))`` (weighted by a constant 0.01 in the stage-2 total, no adaptive weight);
* LeCam regulariser on **batch-mean** logits with EMA buffers that start at 0:
  ``relu(mean D(x) - ema_fake)^2 + relu(ema_real - mean D(x_hat))^2``, computed with the EMAs from
  *before* this step; then ``ema <- decay * ema + (1 - decay) * mean(logits)`` (decay 0.999) with the
  logits' gradient stopped;
* ``L_D = f_D * hinge + lecam_weight * LeCam`` (lecam_weight 0.001; f_D = 1 after
  ``discriminator_start``, else 0 -- the LeCam term and the EMA update are not gated by f_D).

The EMA buffers (official ``ema_real_logits_mean`` / ``ema_fake_logits_mean``, shape [1]) are a plain
dict pytree ``{"ema_real", "ema_fake"}`` of float32 scalars here (``init_lecam_state``).
"""

from __future__ import annotations

from typing import Dict, Tuple

import jax
import jax.numpy as jnp

LECAM_EMA_DECAY = 0.999
LECAM_WEIGHT = 0.001


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """``0.5 * (mean(relu(1 - logits_real)) + mean(relu(1 + logits_fake)))``."""
    loss_real = jnp.mean(jax.nn.relu(1.0 - logits_real))
    loss_fake = jnp.mean(jax.nn.relu(1.0 + logits_fake))
    return 0.5 * (loss_real + loss_fake)


def generator_adversarial_loss(logits_fake: jax.Array) -> jax.Array:
    """``-mean(D(x_hat))``."""
    return -jnp.mean(logits_fake)


def init_lecam_state(dtype=jnp.float32) -> Dict[str, jax.Array]:
    """The two LeCam EMA buffers, starting at 0: ``{"ema_real": 0., "ema_fake": 0.}`` (scalars)."""
    return {"ema_real": jnp.zeros((), dtype), "ema_fake": jnp.zeros((), dtype)}


def lecam_loss(logits_real: jax.Array, logits_fake: jax.Array, ema_real: jax.Array, ema_fake: jax.Array) -> jax.Array:
    """``relu(mean(logits_real) - ema_fake)^2 + relu(ema_real - mean(logits_fake))^2`` (unweighted).

    The means are over the whole batch of patch logits (official ``compute_lecam_loss`` is called
    with ``torch.mean(logits)``); ``ema_*`` are the buffers from before this step.
    """
    real_mean, fake_mean = jnp.mean(logits_real), jnp.mean(logits_fake)
    return jnp.mean(jnp.square(jax.nn.relu(real_mean - ema_fake))) + jnp.mean(
        jnp.square(jax.nn.relu(ema_real - fake_mean))
    )


def lecam_ema_update(
    state: Dict[str, jax.Array], mean_real: jax.Array, mean_fake: jax.Array, decay: float = LECAM_EMA_DECAY
) -> Dict[str, jax.Array]:
    """``ema <- decay * ema + (1 - decay) * mean`` for both buffers; ``mean_*`` are the batch-mean
    logits (detached here, as officially)."""
    mean_real = jax.lax.stop_gradient(mean_real)
    mean_fake = jax.lax.stop_gradient(mean_fake)
    return {
        "ema_real": state["ema_real"] * decay + mean_real * (1.0 - decay),
        "ema_fake": state["ema_fake"] * decay + mean_fake * (1.0 - decay),
    }


def discriminator_loss(
    logits_real: jax.Array,
    logits_fake: jax.Array,
    state: Dict[str, jax.Array],
    discriminator_factor: float = 1.0,
    lecam_weight: float = LECAM_WEIGHT,
    decay: float = LECAM_EMA_DECAY,
) -> Tuple[jax.Array, Dict[str, jax.Array], Dict[str, jax.Array]]:
    """The official discriminator objective for one step -> (loss, new LeCam state, metrics).

    ``logits_fake`` should come from detached reconstructions. With ``lecam_weight <= 0`` there is
    no LeCam term and the state is returned unchanged (the official module then has no buffers).
    """
    hinge = hinge_d_loss(logits_real, logits_fake)
    loss = discriminator_factor * hinge
    lecam = jnp.zeros((), loss.dtype)
    if lecam_weight > 0.0:
        lecam = lecam_loss(logits_real, logits_fake, state["ema_real"], state["ema_fake"]) * lecam_weight
        state = lecam_ema_update(state, jnp.mean(logits_real), jnp.mean(logits_fake), decay)
    metrics = {
        "discriminator_loss": jax.lax.stop_gradient(loss + lecam),
        "logits_real": jax.lax.stop_gradient(jnp.mean(logits_real)),
        "logits_fake": jax.lax.stop_gradient(jnp.mean(logits_fake)),
        "lecam_loss": jax.lax.stop_gradient(lecam),
    }
    return loss + lecam, state, metrics
