"""Stage-2 adversarial losses (hinge, generator, LeCam + EMA) on hand-computed cases.

All the hand values below are dyadic (exact in float32), so most checks are exact equalities.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from titok_jax.losses.gan import (
    LECAM_EMA_DECAY,
    LECAM_WEIGHT,
    discriminator_loss,
    generator_adversarial_loss,
    hinge_d_loss,
    init_lecam_state,
    lecam_ema_update,
    lecam_loss,
)

# Patch logits shaped like the discriminator's output [B, h, w, 1] (B=2, 1x2 patches).
REAL = jnp.asarray([2.0, 0.5, -1.0, 0.0], jnp.float32).reshape(2, 1, 2, 1)  # mean 0.375
FAKE = jnp.asarray([-2.0, 0.5, -0.5, 1.0], jnp.float32).reshape(2, 1, 2, 1)  # mean -0.25


def test_hinge_d_loss_by_hand():
    # relu(1 - real) = [0, .5, 2, 1] -> mean .875; relu(1 + fake) = [0, 1.5, .5, 2] -> mean 1.0
    assert float(hinge_d_loss(REAL, FAKE)) == 0.5 * (0.875 + 1.0) == 0.9375
    # Saturated: confident D -> 0.
    assert float(hinge_d_loss(jnp.full((2, 4), 3.0), jnp.full((2, 4), -3.0))) == 0.0
    # Gradient: -0.5/N on real logits below 1, +0.5/N on fake logits above -1, 0 elsewhere.
    g_real, g_fake = jax.grad(hinge_d_loss, argnums=(0, 1))(REAL, FAKE)
    np.testing.assert_array_equal(np.ravel(g_real), [0.0, -0.125, -0.125, -0.125])
    np.testing.assert_array_equal(np.ravel(g_fake), [0.0, 0.125, 0.125, 0.125])


def test_generator_adversarial_loss_by_hand():
    assert float(generator_adversarial_loss(FAKE)) == -(-2.0 + 0.5 - 0.5 + 1.0) / 4 == 0.25
    np.testing.assert_array_equal(np.ravel(jax.grad(generator_adversarial_loss)(FAKE)), [-0.25] * 4)


def test_lecam_from_zero_buffers():
    state = init_lecam_state()
    assert set(state) == {"ema_real", "ema_fake"}
    assert state["ema_real"].shape == state["ema_fake"].shape == () and float(state["ema_real"]) == 0.0
    # relu(0.375 - 0)^2 + relu(0 - (-0.25))^2
    assert float(lecam_loss(REAL, FAKE, state["ema_real"], state["ema_fake"])) == 0.375**2 + 0.25**2 == 0.203125
    # Official [1]-shaped buffers give the same scalar.
    assert float(lecam_loss(REAL, FAKE, jnp.zeros((1,)), jnp.zeros((1,)))) == 0.203125


def test_lecam_relus_and_batch_mean():
    # relu(0.375 - 0.5) = 0; relu(1.0 - (-0.25))^2 = 1.5625
    assert float(lecam_loss(REAL, FAKE, jnp.float32(1.0), jnp.float32(0.5))) == 1.5625
    # Batch-mean logits, not per-sample: [3, -2] per-sample means -> mean 0.5; relu(0.5 - 0)^2 = 0.25
    # (a per-sample version would give (9 + 0) / 2 = 4.5).
    real = jnp.asarray([[3.0, 3.0], [-2.0, -2.0]])
    assert float(lecam_loss(real, jnp.zeros((2, 2)), 0.0, 0.0)) == 0.25


def test_lecam_ema_update():
    assert LECAM_EMA_DECAY == 0.999 and LECAM_WEIGHT == 0.001
    mr, mf = jnp.mean(REAL), jnp.mean(FAKE)
    s1 = lecam_ema_update(init_lecam_state(), mr, mf)
    np.testing.assert_allclose(float(s1["ema_real"]), 0.001 * 0.375, rtol=1e-6)
    np.testing.assert_allclose(float(s1["ema_fake"]), 0.001 * -0.25, rtol=1e-6)
    # n updates with a constant batch mean m from 0: ema = m * (1 - 0.999^n)
    s = init_lecam_state()
    step = jax.jit(lecam_ema_update)
    for _ in range(5):
        s = step(s, mr, mf)
    np.testing.assert_allclose(float(s["ema_real"]), 0.375 * (1 - 0.999**5), rtol=1e-5)
    np.testing.assert_allclose(float(s["ema_fake"]), -0.25 * (1 - 0.999**5), rtol=1e-5)
    # The EMA is a buffer: no gradient flows into it from the logits.
    g = jax.grad(lambda r: lecam_ema_update(init_lecam_state(), jnp.mean(r), mf)["ema_real"])(REAL)
    assert not np.any(np.asarray(g))


def test_discriminator_loss_uses_old_buffers_then_updates():
    state = {"ema_real": jnp.float32(1.0), "ema_fake": jnp.float32(0.5)}
    loss, new, metrics = jax.jit(discriminator_loss)(REAL, FAKE, state)
    np.testing.assert_allclose(float(loss), 0.9375 + 0.001 * 1.5625, rtol=1e-7)
    np.testing.assert_allclose(float(metrics["lecam_loss"]), 0.001 * 1.5625, rtol=1e-7)
    assert float(metrics["logits_real"]) == 0.375 and float(metrics["logits_fake"]) == -0.25
    np.testing.assert_allclose(float(new["ema_real"]), 0.999 * 1.0 + 0.001 * 0.375, rtol=1e-7)
    np.testing.assert_allclose(float(new["ema_fake"]), 0.999 * 0.5 + 0.001 * -0.25, rtol=1e-7)


@pytest.mark.parametrize("factor", [0.0, 1.0])
def test_discriminator_factor_gates_hinge_only(factor):
    """Before discriminator_start (f_D = 0) the LeCam term and the EMA update still run, as officially."""
    loss, new, _ = discriminator_loss(REAL, FAKE, init_lecam_state(), discriminator_factor=factor)
    np.testing.assert_allclose(float(loss), factor * 0.9375 + 0.001 * 0.203125, rtol=1e-7)
    assert float(new["ema_real"]) != 0.0


def test_no_lecam_keeps_state():
    state = {"ema_real": jnp.float32(0.25), "ema_fake": jnp.float32(-0.5)}
    loss, new, metrics = discriminator_loss(REAL, FAKE, state, lecam_weight=0.0)
    assert float(loss) == 0.9375 and float(metrics["lecam_loss"]) == 0.0
    assert new is state
