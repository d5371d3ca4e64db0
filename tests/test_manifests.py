"""Key/shape completeness against the full-size official manifests (tests/fixtures/official/manifests).

For every full-size model, the export name map applied to our parameter tree (built abstractly with
``jax.eval_shape``: no memory) gives exactly the official state_dict keys and shapes; one model per
family is also exported for real from a random init and re-imported bit-exactly.
"""

import json

import jax
import numpy as np
import pytest
from conftest import fixture_dir

from titok_jax.config import official, parse, presets
from titok_jax.models import registry
from titok_jax.porting.mapping import flatten

TITOK_MANIFESTS = {
    "titok_s128": "titok_s128",
    "titok_b64": "titok_b64",
    "titok_l32": "titok_l32",
    "titok_s128_stage1": "titok_s128:stage1",
    "titok_b64_stage1": "titok_b64:stage1",
    "titok_l32_stage1": "titok_l32:stage1",
    "titok_bl64_vq8k": "titok_bl64_vq8k",
    "titok_bl128_vq8k": "titok_bl128_vq8k",
    "titok_sl256_vq8k": "titok_sl256_vq8k",
    "titok_ll32_vae_c16": "titok_ll32_vae_c16",
    "titok_bl64_vae_c16": "titok_bl64_vae_c16",
    "titok_bl128_vae_c16": "titok_bl128_vae_c16",
    "maskgit_vqgan": "maskgit_vqgan",
}


def manifest(name):
    with open(fixture_dir("manifests", f"{name}.json")) as f:
        return json.load(f)


def handle_for(preset):
    name, _, arg = preset.partition(":")
    return registry.tokenizer(parse(presets.tokenizer_config(name, arg or None)))


@pytest.mark.parametrize("manifest_name", sorted(TITOK_MANIFESTS))
def test_export_keys_and_shapes(manifest_name):
    m = manifest(manifest_name)
    h = handle_for(TITOK_MANIFESTS[manifest_name])
    abstract = h.abstract()
    expected = {k: tuple(v[0]) for k, v in m["state_dict"].items()}
    assert all(v[1] == "float32" for v in m["state_dict"].values())
    ours = h.torch_map().expected_external_shapes(abstract)
    missing = sorted(set(expected) - set(ours))
    extra = sorted(set(ours) - set(expected))
    assert not missing and not extra, f"missing {missing[:3]}, unexpected {extra[:3]}"
    bad = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert not bad, f"shape mismatches (ours, official): {dict(list(bad.items())[:3])}"
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    assert n == m["num_parameters"] == m["num_state_dict_elements"]
    assert len(ours) == m["num_state_dict_entries"]


@pytest.mark.parametrize("manifest_name", [k for k in sorted(TITOK_MANIFESTS) if k.startswith("titok")])
def test_official_config_roundtrip(manifest_name):
    """Our config <-> the official config dict (what config.json of a hub folder holds)."""
    spec = manifest(manifest_name)["spec"]["config"]
    h = handle_for(TITOK_MANIFESTS[manifest_name])
    assert official.tokenizer_from_official(spec) == h.config
    ours = h.official_config()["model"]["vq_model"]
    for k, v in spec["model"]["vq_model"].items():
        if k in ours:
            assert ours[k] == v, k


def test_maskgit_jax_manifest():
    """Original MaskGIT tree: our map covers every leaf with its shape, and links each leaf to the
    same PyTorch key as the manifest's cross-checked table."""
    m = manifest("maskgit_jax_vqgan")
    h = handle_for("maskgit_vqgan")
    abstract = h.abstract()
    jmap, tmap = h.maskgit_jax_map(), h.torch_map()
    leaves = {k.split("/", 1)[1]: v for k, v in m["params"].items()}  # drop the "params/" prefix
    ours = jmap.expected_external_shapes(abstract)
    assert set(ours) == set(leaves)
    for k, v in leaves.items():
        assert ours[k] == tuple(v["shape"]), k
    torch_by_path = {r.flax_path: r.external_key for r in tmap.rules}
    for r in jmap.rules:
        assert torch_by_path[r.flax_path] == leaves[r.external_key]["pytorch_key"], r.external_key
    assert m["num_parameters"] == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["titok_s128", "titok_bl64_vae_c16"])
def test_full_size_random_export_import_identity(preset):
    h = handle_for(preset)
    params = jax.device_get(h.init(jax.random.key(0)))
    nm = h.torch_map()
    state = nm.to_external(params)
    expected = {k: tuple(v[0]) for k, v in manifest(preset)["state_dict"].items()}
    assert {k: v.shape for k, v in state.items()} == expected
    back = nm.to_flax(state, h.abstract())
    flat_a, flat_b = flatten(params), flatten(back)
    assert set(flat_a) == set(flat_b)
    for k in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_a[k]), flat_b[k], err_msg="/".join(k))
