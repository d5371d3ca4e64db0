"""Vector quantizer and VAE posterior: semantics beyond the fixtures (gradients, usage stats, dtypes)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from titok_jax.quantizers import DiagonalGaussian, VectorQuantizer, codebook_usage, l2_normalize
from titok_jax.quantizers.vq import restart_dead_codes


def make(use_l2=True, k=16, c=4):
    q = VectorQuantizer(k, c, commitment_cost=0.25, use_l2_norm=use_l2)
    z = jax.random.normal(jax.random.key(1), (3, 5, c))
    return q, nn.meta.unbox(q.init(jax.random.key(0), z)), z


def test_ids_are_nearest_codes_in_cosine_space():
    q, v, z = make()
    _, res = q.apply(v, z)
    cb = np.asarray(v["params"]["embedding"])
    cos = np.einsum("blc,kc->blk", np.asarray(l2_normalize(z)), cb / np.linalg.norm(cb, axis=1, keepdims=True))
    np.testing.assert_array_equal(res["ids"], cos.argmax(-1))


def test_straight_through_gradient_and_losses():
    q, v, z = make()

    def f(z):
        zq, res = q.apply(v, z)
        return jnp.sum(zq * 3.0), (zq, res)

    g, (zq, res) = jax.grad(f, has_aux=True)(z)
    # Forward value is the (normalised) code; gradient passes straight through the l2-normalisation.
    cb = l2_normalize(v["params"]["embedding"])
    np.testing.assert_allclose(zq, cb[res["ids"]], atol=1e-6)
    expected = jax.grad(lambda z: jnp.sum(l2_normalize(z) * 3.0))(z)
    np.testing.assert_allclose(g, expected, atol=1e-6)
    zn = l2_normalize(z)
    mse = float(jnp.mean((cb[res["ids"]] - zn) ** 2))
    np.testing.assert_allclose(res["commitment_loss"], 0.25 * mse, rtol=1e-6)
    np.testing.assert_allclose(res["codebook_loss"], mse, rtol=1e-6)
    # The codebook loss trains the codebook only, the commitment loss the encoder only.
    gz = jax.grad(lambda z: q.apply(v, z)[1]["codebook_loss"])(z)
    assert float(jnp.abs(gz).max()) == 0.0
    gcb = jax.grad(lambda p: q.apply({"params": p}, z)[1]["commitment_loss"])(v["params"])
    assert float(jnp.abs(gcb["embedding"]).max()) == 0.0


def test_quantizer_runs_in_float32_under_bf16_inputs():
    q, v, z = make(use_l2=False)
    zq, res = q.apply(v, z.astype(jnp.bfloat16))
    assert zq.dtype == jnp.float32 and res["quantizer_loss"].dtype == jnp.float32


def test_codebook_usage_statistics():
    stats = codebook_usage(jnp.array([[0, 0, 1, 1]]), 8)
    np.testing.assert_allclose(stats["codebook_usage"], 2 / 8)
    np.testing.assert_allclose(stats["codebook_perplexity"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(stats["codebook_entropy_bits"], 1.0, rtol=1e-6)
    uniform = codebook_usage(jnp.arange(16), 16)
    np.testing.assert_allclose(uniform["codebook_perplexity"], 16.0, rtol=1e-5)
    np.testing.assert_allclose(uniform["codebook_usage"], 1.0)


def test_lookup_matches_quantized_values():
    q, v, z = make()
    zq, res = q.apply(v, z)
    looked = q.apply(v, res["ids"], method=q.lookup)
    np.testing.assert_allclose(looked, zq, atol=1e-6)


def test_vae_posterior():
    moments = jnp.concatenate([jnp.ones((2, 3, 4)), jnp.full((2, 3, 4), 50.0)], -1)
    post = DiagonalGaussian.from_moments(moments)
    assert float(post.logvar.max()) == 20.0  # clamped to [-30, 20]
    np.testing.assert_allclose(post.kl().shape, (2, 3))
    zero = DiagonalGaussian.from_moments(jnp.zeros((1, 2, 8)))
    np.testing.assert_allclose(zero.kl(), 0.0, atol=1e-7)
    eps = jnp.ones((1, 2, 4))
    np.testing.assert_allclose(zero.sample(eps=eps), eps)


def test_restart_dead_codes_replaces_only_dead_rows_with_latents():
    codebook = jnp.arange(8 * 3, dtype=jnp.float32).reshape(8, 3) * 1e-3
    latents = jax.random.normal(jax.random.key(0), (2, 5, 3)) + 10.0
    dead = np.array([True, False, False, True, False, False, False, True])
    out = np.asarray(restart_dead_codes(codebook, jnp.asarray(dead), latents, jax.random.key(1), noise=0.0))
    np.testing.assert_array_equal(out[~dead], np.asarray(codebook)[~dead])
    flat = np.asarray(latents).reshape(-1, 3)
    for row in out[dead]:  # every restarted row is one of the latents
        assert np.min(np.abs(flat - row).sum(1)) == 0.0
    noisy = np.asarray(restart_dead_codes(codebook, jnp.asarray(dead), latents, jax.random.key(1), noise=0.01))
    assert 0 < np.abs(noisy - out).max() < 0.6  # noise std = 1% of the latents' RMS (~10)
    none = restart_dead_codes(codebook, jnp.zeros(8, bool), latents, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(none), np.asarray(codebook))
