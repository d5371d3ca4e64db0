"""MaskGIT-VQGAN parity: with 1d-tokenizer's PyTorch port (tiny/maskgit_vqgan_tiny) and with the
original google-research/maskgit Flax model and its msgpack checkpoint (tiny/maskgit_jax_vqgan_tiny);
the rewritten ops (phase-decomposed upsample-conv, GroupNorm statistics) against their plain forms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_parity, fixture_dir, load_st, max_abs
from titok_fixtures import VQGAN_JAX_TINY, VQGAN_TINY

from titok_jax.models import maskgit_vqgan_map
from titok_jax.models.maskgit_vqgan import (
    GN_EPS,
    GroupNorm,
    MaskGITVQGAN,
    UpsampleConv,
    abstract_params,
    upsample_conv,
    upsample_nearest2x,
)
from titok_jax.porting.io import load_maskgit_jax_checkpoint


@pytest.fixture(scope="module")
def torch_tiny():
    d = fixture_dir("tiny", "maskgit_vqgan_tiny")
    sd = load_st(d / "state_dict.safetensors")
    params = maskgit_vqgan_map.torch_name_map(VQGAN_TINY).to_flax(sd, abstract_params(VQGAN_TINY))
    return (
        MaskGITVQGAN(VQGAN_TINY),
        {"params": params},
        sd,
        load_st(d / "inputs.safetensors"),
        load_st(d / "outputs.safetensors"),
    )


def nhwc(x):
    return np.asarray(x).transpose(0, 2, 3, 1)


def test_pytorch_port_parity(torch_tiny):
    m, v, _, inp, out = torch_tiny
    x = jnp.asarray(inp["images_nhwc"])
    assert_parity(m.apply(v, x, method=lambda mm, a: mm.encoder(a)), nhwc(out["encoder_latent"]), "encoder_latent")
    zq, res = m.apply(v, x, method=m.encode)
    ids = res["ids"]
    assert_parity(zq, nhwc(out["quantize.z_quantized"]), "quantize.z_quantized")
    for key in ("quantize.min_encoding_indices", "quantize.get_code", "encode"):
        np.testing.assert_array_equal(np.asarray(ids).reshape(2, -1), out[key], err_msg=key)
    assert_parity(m.apply(v, ids, method=lambda mm, i: mm.quantize.lookup(i)), nhwc(out["quantize.get_codebook_entry"]),
                  "quantize.get_codebook_entry")  # fmt: skip
    assert_parity(m.apply(v, jnp.asarray(nhwc(out["quantize.z_quantized"])), method=m.decode),
                  out["decoder_pixels_nhwc"], "decoder_pixels")  # fmt: skip
    flat = jnp.asarray(out["encode"].astype(np.int32))
    unclamped = out["decoder_pixels_nhwc"]
    assert_parity(m.apply(v, flat, method=m.decode_tokens), out["decode_nhwc"], "decode (clamped)", scale_ref=unclamped)
    assert_parity(
        m.apply(v, flat, method=m.decode_tokens), out["decode_tokens_nhwc"], "decode_tokens", scale_ref=unclamped
    )
    assert_parity(m.apply(v, x)[0], out["decode_nhwc"], "forward (clamped)", scale_ref=unclamped)


def test_pytorch_import_export_identity(torch_tiny):
    _, v, sd, _, _ = torch_tiny
    back = maskgit_vqgan_map.torch_name_map(VQGAN_TINY).to_external(v["params"])
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


@pytest.fixture(scope="module")
def jax_tiny():
    d = fixture_dir("tiny", "maskgit_jax_vqgan_tiny")
    ckpt = load_maskgit_jax_checkpoint(str(d / "tokenizer_tiny_checkpoint"))
    params = maskgit_vqgan_map.maskgit_jax_name_map(VQGAN_JAX_TINY).to_flax(ckpt, abstract_params(VQGAN_JAX_TINY))
    return (
        MaskGITVQGAN(VQGAN_JAX_TINY),
        {"params": params},
        ckpt,
        load_st(d / "inputs.safetensors"),
        load_st(d / "outputs.safetensors"),
    )


def test_original_maskgit_checkpoint_parity(jax_tiny):
    m, v, ckpt, inp, out = jax_tiny
    assert len(ckpt) == 114
    x = jnp.asarray(inp["images_nhwc"])
    assert_parity(m.apply(v, x, method=lambda mm, a: mm.encoder(a)), out["encoder_latent"], "encoder_latent")
    zq, res = m.apply(v, x, method=m.encode)
    ids = res["ids"]
    assert_parity(zq, out["encode.quantized"], "encode.quantized")
    np.testing.assert_array_equal(ids, out["encode.encoding_indices"])
    np.testing.assert_array_equal(m.apply(v, x, method=m.encode)[1]["ids"], out["encode_to_indices"])
    assert_parity(m.apply(v, jnp.asarray(out["encode.quantized"]), method=m.decode), out["decode"], "decode")
    # decode_from_indices (unclamped) = codebook lookup + decoder
    dec = m.apply(v, ids, method=lambda mm, i: mm.decode(mm.quantize.lookup(i)))
    assert_parity(dec, out["decode_from_indices"], "decode_from_indices")
    assert_parity(v["params"]["quantize"]["embedding"], out["get_codebook_funct"], "codebook")


def test_original_maskgit_intermediates(jax_tiny):
    """Per-ResBlock means localise a naming/ordering error (levels 0 and 1 have equal shapes)."""
    m, v, _, inp, out = jax_tiny
    _, state = m.apply(v, jnp.asarray(inp["images_nhwc"]), method=m.encode, capture_intermediates=True,
                       mutable=["intermediates"])  # fmt: skip
    enc = state["intermediates"]["encoder"]
    from titok_jax.models.maskgit_vqgan_map import encoder_blocks

    for k, (_, name, _, _) in enumerate(encoder_blocks(VQGAN_JAX_TINY)):
        got = np.asarray(enc[name]["__call__"][0]).mean(axis=(1, 2))
        assert_parity(got, out[f"intermediates.encoder.ResBlock_{k}.mean_hw"], f"encoder ResBlock_{k}")


def test_jax_checkpoint_to_pytorch_keys():
    """The original checkpoint converts to exactly the PyTorch state_dict keys of the released .bin."""
    ckpt = load_maskgit_jax_checkpoint(str(fixture_dir("tiny", "maskgit_jax_vqgan_tiny") / "tokenizer_tiny_checkpoint"))
    params = maskgit_vqgan_map.maskgit_jax_name_map(VQGAN_JAX_TINY).to_flax(ckpt, abstract_params(VQGAN_JAX_TINY))
    sd = maskgit_vqgan_map.torch_name_map(VQGAN_JAX_TINY).to_external(params)
    assert sd["encoder.conv_in.weight"].shape == (32, 3, 3, 3)
    np.testing.assert_array_equal(sd["encoder.conv_in.weight"], ckpt["encoder/Conv_0/kernel"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(sd["quantize.embedding.weight"], ckpt["quantizer/codebook"])


# -------------------------------------------------------------------------------------------------
# The rewritten ops against their plain forms
@pytest.mark.parametrize("shape,cout", [((2, 5, 7, 6), 4), ((1, 16, 16, 32), 32)])
def test_phase_decomposed_upsample_conv_equals_upsample_then_conv(shape, cout):
    """Four 2x2 convs of the low-resolution input, interleaved == nearest x2 upsampling + 3x3 SAME conv
    (values and gradients), on random inputs, kernels and biases."""
    kx, kk, kb = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, shape)
    k = jax.random.normal(kk, (3, 3, shape[-1], cout))
    b = jax.random.normal(kb, (cout,))

    def plain(x, k, b):
        up = upsample_nearest2x(x)
        return jax.lax.conv_general_dilated(up, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b

    ref, ours = plain(x, k, b), upsample_conv(x, k, b)
    assert ours.shape == (shape[0], 2 * shape[1], 2 * shape[2], cout)
    # float32 rounding of sums of up to 9 * Cin products (a wrong phase or tap would be O(1) off)
    assert max_abs(ours, ref) <= 1e-5 * float(jnp.max(jnp.abs(ref)))
    loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))  # noqa: E731
    g_ref = jax.grad(loss(plain), argnums=(0, 1, 2))(x, k, b)
    g_ours = jax.grad(loss(upsample_conv), argnums=(0, 1, 2))(x, k, b)
    for a, r in zip(g_ours, g_ref):
        assert max_abs(a, r) <= 1e-5 * float(jnp.max(jnp.abs(r)))


def test_upsample_conv_module_keeps_the_conv_parameters():
    """UpsampleConv has nn.Conv's parameters (names, shapes, init), so checkpoints and name maps are unchanged."""
    x = jnp.ones((1, 4, 4, 8))
    p_ours = UpsampleConv(16).init(jax.random.key(0), x)["params"]
    p_conv = nn.Conv(16, (3, 3)).init(jax.random.key(0), x)["params"]
    assert jax.tree.map(jnp.shape, p_ours) == jax.tree.map(jnp.shape, p_conv)
    np.testing.assert_array_equal(p_ours["kernel"], p_conv["kernel"])


def test_group_norm_matches_float64():
    """GroupNorm of 256x256 maps (a large offset stresses the statistics) against a float64 evaluation of the
    same formula, with random scale and bias."""
    x = 30.0 + 2.0 * jax.random.normal(jax.random.key(0), (2, 256, 256, 64))
    gn = GroupNorm(num_groups=32)
    params = gn.init(jax.random.key(1), x[:, :4, :4])
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)
    ours = np.asarray(jax.jit(gn.apply)(params, x), np.float64)
    x64 = np.asarray(x, np.float64).reshape(2, -1, 32, 2)
    mean = x64.mean(axis=(1, 3), keepdims=True)
    var = np.square(x64 - mean).mean(axis=(1, 3), keepdims=True)
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    ref = ((x64 - mean) / np.sqrt(var + GN_EPS)).reshape(x.shape) * p64["scale"] + p64["bias"]
    err = np.abs(ours - ref).max() / max(1.0, np.abs(ref).max())
    assert err < 3e-6, err  # float32 rounding of the output itself is ~1e-6 here
