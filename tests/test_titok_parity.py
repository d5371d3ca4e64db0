"""TiTok parity with the official PyTorch model (tests/fixtures/official/tiny/titok_*).

Each fixture: official random weights -> our name map -> our model on the same images; every
output listed in the fixture README is compared (ids exactly, floats per conftest.ATOL).
Official layouts: latents [B, C, 1, L] -> ours [B, L, C]; ids [B, 1, L] -> [B, L]; NCHW -> NHWC.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_parity, fixture_dir, load_st
from titok_fixtures import TITOK_TINY, TITOK_VAE_TINY, TITOK_VQ8K_TINY

from titok_jax.models.titok import TiTok, abstract_params
from titok_jax.models.titok_map import torch_name_map


def tokens_last(x):  # [B, C, 1, L] -> [B, L, C]
    return np.asarray(x)[:, :, 0, :].transpose(0, 2, 1)


def load(name, cfg):
    d = fixture_dir("tiny", name)
    sd = load_st(d / "state_dict.safetensors")
    params = torch_name_map(cfg).to_flax(sd, abstract_params(cfg))
    return TiTok(cfg), {"params": params}, sd, load_st(d / "inputs.safetensors"), load_st(d / "outputs.safetensors")


@pytest.fixture(scope="module")
def legacy():
    return load("titok_tiny", TITOK_TINY)


def test_legacy_encoder_and_quantizer(legacy):
    m, v, _, inp, out = legacy
    x = jnp.asarray(inp["images_nhwc"])
    z = m.apply(v, x, method=m.encode_continuous)
    assert_parity(z, tokens_last(out["encoder_latent"]), "encoder_latent")
    zq, res = m.apply(v, x, method=m.encode)
    assert_parity(zq, tokens_last(out["encode.z_quantized"]), "encode.z_quantized")
    np.testing.assert_array_equal(res["ids"], out["encode.min_encoding_indices"][:, 0])
    assert res["ids"].dtype == jnp.int32
    for k in ("quantizer_loss", "commitment_loss", "codebook_loss"):
        assert_parity(res[k], out[f"quantize.{k}"], k)


def test_legacy_quantizer_alone(legacy):
    m, v, _, _, out = legacy
    zq, res = m.apply(v, jnp.asarray(tokens_last(out["encoder_latent"])), method=lambda mm, z: mm.quantize(z))
    assert_parity(zq, tokens_last(out["quantize.z_quantized"]), "quantize.z_quantized")
    np.testing.assert_array_equal(res["ids"], out["quantize.min_encoding_indices"][:, 0])


def test_legacy_decoder_paths(legacy):
    m, v, _, inp, out = legacy
    zq = jnp.asarray(tokens_last(out["encode.z_quantized"]))
    logits = m.apply(v, zq, method=m.decode_logits)
    assert_parity(logits, out["decoder_output"].transpose(0, 2, 3, 1), "decoder_output")
    pix = m.apply(v, zq, method=m.decode)
    assert_parity(pix, out["decode_nhwc"], "decode")
    ids = jnp.asarray(out["encode.min_encoding_indices"].astype(np.int32))
    assert_parity(m.apply(v, ids, method=m.lookup_tokens), tokens_last(out["decode_tokens.decoder_input"]),
                  "decode_tokens.decoder_input")  # fmt: skip
    assert_parity(m.apply(v, ids, method=m.decode_tokens), out["decode_tokens_nhwc"], "decode_tokens")
    assert_parity(m.apply(v, ids[:, 0], method=m.decode_tokens), out["decode_tokens_nhwc"], "decode_tokens [B, L]")
    full, _ = m.apply(v, jnp.asarray(inp["images_nhwc"]))
    assert_parity(full, out["forward.decoded_nhwc"], "forward.decoded")


def test_legacy_pixel_decoder_input(legacy):
    m, v, _, _, out = legacy
    logits = jnp.asarray(out["decoder_output"].transpose(0, 2, 3, 1))

    def soft_codes(mm, lg):
        return jnp.einsum("bhwk,kd->bhwd", jax.nn.softmax(lg, -1), mm.pixel_quantize.embedding, precision="highest")

    assert_parity(m.apply(v, logits, method=soft_codes), out["pixel_decoder_input"].transpose(0, 2, 3, 1),
                  "pixel_decoder_input")  # fmt: skip
    pix = m.apply(v, logits, method=m.decode_proxy_logits)
    assert_parity(pix, out["decode_nhwc"], "decode from official logits")


@pytest.mark.parametrize("name,cfg", [("titok_vq8k_tiny", TITOK_VQ8K_TINY)])
def test_nonlegacy_vq(name, cfg):
    m, v, _, inp, out = load(name, cfg)
    x = jnp.asarray(inp["images_nhwc"])
    assert_parity(m.apply(v, x, method=m.encode_continuous), tokens_last(out["encoder_latent"]), "encoder_latent")
    zq, res = m.apply(v, x, method=m.encode)
    assert_parity(zq, tokens_last(out["encode.z_quantized"]), "encode.z_quantized")
    np.testing.assert_array_equal(res["ids"], out["encode.min_encoding_indices"][:, 0])
    for k in ("quantizer_loss", "commitment_loss", "codebook_loss"):
        assert_parity(res[k], out[f"quantize.{k}"], k)
    assert_parity(m.apply(v, zq, method=m.decode), out["decode_nhwc"], "decode")
    ids = jnp.asarray(out["encode.min_encoding_indices"].astype(np.int32))
    assert_parity(m.apply(v, ids, method=m.decode_tokens), out["decode_tokens_nhwc"], "decode_tokens")
    full, _ = m.apply(v, x)
    assert_parity(full, out["forward.decoded_nhwc"], "forward.decoded")


def test_vae():
    m, v, _, inp, out = load("titok_vae_tiny", TITOK_VAE_TINY)
    x = jnp.asarray(inp["images_nhwc"])
    assert_parity(m.apply(v, x, method=m.encode_continuous), tokens_last(out["encoder_latent"]), "encoder_latent")
    mean, res = m.apply(v, x, method=m.encode)  # deterministic: posterior mode
    assert_parity(mean, tokens_last(out["posterior.mean"]), "posterior.mean")
    assert_parity(res["posterior_logvar"], tokens_last(out["posterior.logvar"]), "posterior.logvar")
    assert_parity(res["kl"], out["posterior.kl"], "posterior.kl")
    eps = jnp.asarray(tokens_last(out["encode.sample_eps"]))
    z_sample, _ = m.apply(v, x, eps=eps, method=m.encode)
    assert_parity(z_sample, tokens_last(out["encode.z_sample"]), "encode.z_sample")
    assert_parity(m.apply(v, mean, method=m.decode), out["decode_nhwc"], "decode")
    assert_parity(m.apply(v, mean, method=m.decode_tokens), out["decode_tokens_nhwc"], "decode_tokens")
    assert_parity(m.apply(v, z_sample, method=m.decode), out["forward.decoded_nhwc"], "forward.decoded")


@pytest.mark.parametrize("name,cfg", [("titok_tiny", TITOK_TINY), ("titok_vq8k_tiny", TITOK_VQ8K_TINY),
                                      ("titok_vae_tiny", TITOK_VAE_TINY)])  # fmt: skip
def test_import_export_identity(name, cfg):
    sd = load_st(fixture_dir("tiny", name) / "state_dict.safetensors")
    nm = torch_name_map(cfg)
    back = nm.to_external(nm.to_flax(sd, abstract_params(cfg)))
    assert list(back) == nm.external_keys and set(back) == set(sd)
    for k in sd:
        assert back[k].dtype == np.float32 and back[k].shape == sd[k].shape, k
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_sampled_vae_needs_rng():
    m, v, _, inp, _ = load("titok_vae_tiny", TITOK_VAE_TINY)
    x = jnp.asarray(inp["images_nhwc"])
    a, _ = m.apply(v, x, sample_posterior=True, method=m.encode, rngs={"sample": jax.random.key(0)})
    b, _ = m.apply(v, x, method=m.encode)
    assert float(jnp.max(jnp.abs(a - b))) > 0  # sampling changes the latents
