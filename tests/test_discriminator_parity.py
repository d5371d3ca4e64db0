"""Stage-2 discriminator: parity with the official ``NLayerDiscriminator`` (tiny/discriminator_tiny),
import/export identity including the blur-kernel buffers, and key/shape completeness against the
full-size manifest (manifests/discriminator_stage2.json)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_parity, fixture_dir, load_st

from titok_jax.models import discriminator_map
from titok_jax.models.discriminator import (
    DiscriminatorConfig,
    NLayerDiscriminator,
    abstract_params,
    adaptive_max_pool2d,
    blur_kernel,
)
from titok_jax.porting.mapping import PortError, flatten

TINY = DiscriminatorConfig(hidden_channels=32, num_stages=2)  # tiny/discriminator_tiny/config.json


def nhwc(x):
    return np.asarray(x).transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def tiny():
    d = fixture_dir("tiny", "discriminator_tiny")
    with open(d / "config.json") as f:
        kwargs = json.load(f)["kwargs"]
    assert DiscriminatorConfig.from_dict(kwargs) == TINY
    sd = load_st(d / "state_dict.safetensors")
    params = discriminator_map.torch_name_map(TINY).to_flax(sd, abstract_params(TINY))
    return params, sd, load_st(d / "inputs.safetensors"), load_st(d / "outputs.safetensors")


def test_parity_every_output(tiny):
    params, _, inp, out = tiny
    model = NLayerDiscriminator(TINY)
    logits, feats = jax.jit(lambda p, x: model.apply({"params": p}, x, return_features=True))(
        params, jnp.asarray(inp["images_nhwc"])
    )
    assert set(feats) == {"blocks.0", "blocks.1", "pool"}
    assert set(out) == set(feats) | {"logits"}
    for key, val in feats.items():
        assert_parity(val, nhwc(out[key]), key)
    assert logits.shape == (2, 16, 16, 1)
    assert_parity(logits, nhwc(out["logits"]), "logits")


def test_import_export_identity(tiny):
    params, sd, _, _ = tiny
    back = discriminator_map.torch_name_map(TINY).to_external(params)
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    # Buffers are emitted in their state_dict position (after the stage conv, before its GroupNorm).
    keys = list(back)
    assert keys.index("blocks.0.1.kernel") == keys.index("blocks.0.0.bias") + 1


def test_loss_module_prefix(tiny):
    params, sd, _, _ = tiny
    nm = discriminator_map.torch_name_map(TINY, prefix=discriminator_map.LOSS_MODULE_PREFIX)
    prefixed = {"discriminator." + k: v for k, v in sd.items()}
    again = nm.to_flax(prefixed, abstract_params(TINY))
    for path, v in flatten(params).items():
        np.testing.assert_array_equal(flatten(again)[path], v)
    assert set(nm.to_external(params)) == set(prefixed)


def test_blur_buffer_is_checked(tiny):
    _, sd, _, _ = tiny
    nm = discriminator_map.torch_name_map(TINY)
    template = abstract_params(TINY)
    np.testing.assert_array_equal(sd["blocks.1.1.kernel"][0, 0], blur_kernel(4))
    bad = dict(sd)
    bad["blocks.1.1.kernel"] = np.full((1, 1, 4, 4), 1 / 16, np.float32)
    with pytest.raises(PortError, match=r"blocks\.1\.1\.kernel.*does not hold the fixed blur kernel"):
        nm.to_flax(bad, template)
    missing = {k: v for k, v in sd.items() if k != "blocks.0.1.kernel"}
    with pytest.raises(PortError, match=r"missing buffer 'blocks\.0\.1\.kernel'.*blur_resample=False"):
        nm.to_flax(missing, template)
    # A buffer problem and a parameter problem are reported together.
    both = {k: v for k, v in missing.items() if k != "to_logits.2.bias"}
    with pytest.raises(PortError, match=r"(?s)missing buffer.*1 missing key\(s\), first: 'to_logits\.2\.bias'"):
        nm.to_flax(both, template)


def test_manifest_keys_and_shapes():
    with open(fixture_dir("manifests", "discriminator_stage2.json")) as f:
        m = json.load(f)
    cfg = DiscriminatorConfig()
    abstract = abstract_params(cfg)  # jax.eval_shape: nothing allocated
    expected = {k: tuple(v[0]) for k, v in m["state_dict"].items()}
    ours = discriminator_map.torch_name_map(cfg).expected_external_shapes(abstract)
    assert ours == expected
    assert list(ours) == list(m["state_dict"])  # same order as the official state_dict
    assert len(ours) == m["num_state_dict_entries"]
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    assert n == m["num_parameters"] == 1_909_889
    out = jax.eval_shape(NLayerDiscriminator(cfg).apply, {"params": abstract}, jnp.zeros((2, 256, 256, 3)))
    assert out.shape == (2, 16, 16, 1)
    prefixed = discriminator_map.torch_name_map(cfg, prefix="discriminator.").expected_external_shapes(abstract)
    assert prefixed == {"discriminator." + k: v for k, v in expected.items()}


def _torch_adaptive_max_reference(x, oh, ow):
    """Brute-force torch AdaptiveMaxPool2d windows [floor(i*n/o), ceil((i+1)*n/o)) on NHWC numpy."""
    b, h, w, c = x.shape
    out = np.empty((b, oh, ow, c), x.dtype)
    for i in range(oh):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, i, j] = x[:, h0:h1, w0:w1].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("hw,o", [((32, 32), 16), ((20, 23), 16), ((16, 16), 16), ((10, 7), (16, 16)), ((9, 12), 4)])
def test_adaptive_max_pool_matches_torch_windows(hw, o):
    x = np.random.default_rng(0).standard_normal((2, *hw, 3)).astype(np.float32)
    oh, ow = (o, o) if isinstance(o, int) else o
    np.testing.assert_array_equal(np.asarray(adaptive_max_pool2d(jnp.asarray(x), o)),
                                  _torch_adaptive_max_reference(x, oh, ow))  # fmt: skip


def test_blur_kernels_and_variants():
    np.testing.assert_array_equal(blur_kernel(4) * 64, np.outer([1, 3, 3, 1], [1, 3, 3, 1]))
    np.testing.assert_array_equal(blur_kernel(5) * 256, np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]))
    # Avg-pool variant: no buffers in its state_dict; 64 -> 32 -> 16 (pool is then the identity).
    cfg = DiscriminatorConfig(hidden_channels=32, num_stages=2, blur_resample=False)
    nm = discriminator_map.torch_name_map(cfg)
    assert not any(k.endswith(".kernel") for k in nm.expected_external_shapes(abstract_params(cfg)))
    with pytest.raises(ValueError, match="blur_kernel_size"):
        DiscriminatorConfig(blur_kernel_size=6)
