"""Generator key/shape completeness against the full-size official manifests
(tests/fixtures/official/manifests/generator_titok_{s128,b64,l32}.json).

The export name map applied to our parameter tree (built abstractly with ``jax.eval_shape``: no
memory) gives exactly the official state_dict keys, in the official order, with the official shapes,
and the parameter counts agree; the official config dict round-trips through ``GeneratorConfig``.
"""

import json

import jax
import numpy as np
import pytest
from conftest import fixture_dir

from titok_jax.config import official, parse, presets
from titok_jax.models import registry
from titok_jax.sampling import SamplingConfig

MODELS = ("titok_s128", "titok_b64", "titok_l32")


def manifest(name):
    return json.loads((fixture_dir("manifests", f"generator_{name}.json")).read_text())


def handle(name, with_section: bool):
    config = presets.tokenizer_config(name)
    if with_section:
        config.generator = presets.generator_section(name)
    return registry.generator(parse(config))


@pytest.mark.parametrize("name", MODELS)
def test_export_keys_order_shapes_and_counts(name):
    m = manifest(name)
    h = handle(name, with_section=True)
    assert h.kind == "generator" and h.config == presets.GENERATORS[name]
    abstract = h.abstract()
    expected = {k: tuple(v[0]) for k, v in m["state_dict"].items()}
    assert all(v[1] == "float32" for v in m["state_dict"].values())
    ours = h.torch_map().expected_external_shapes(abstract)
    assert list(ours) == list(expected), "key order differs from the official state_dict"
    bad = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert not bad, f"shape mismatches (ours, official): {dict(list(bad.items())[:3])}"
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    assert n == m["num_parameters"] == m["num_state_dict_elements"]
    assert len(ours) == m["num_state_dict_entries"] == len(jax.tree.leaves(abstract))
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(abstract))


@pytest.mark.parametrize("name", MODELS)
def test_official_config_round_trip(name):
    spec = manifest(name)["spec"]["config"]
    gen = presets.GENERATORS[name]
    assert official.generator_from_official(spec) == gen
    # the official sampling settings of the yaml are ours (plus annealing and pow, passed by the script)
    s = SamplingConfig.official(name)
    assert official.sampling_from_official(spec) == {
        k: getattr(s, k) for k in ("num_steps", "guidance_scale", "guidance_decay", "randomize_temperature")
    }
    ours = handle(name, with_section=False).official_config()  # no config.generator: preset fallback
    assert ours["model"]["generator"] == spec["model"]["generator"]
    for k, v in spec["model"]["vq_model"].items():
        assert ours["model"]["vq_model"][k] == v, k
    assert ours["dataset"] == spec["dataset"]


def test_generator_needs_a_description():
    config = presets.tokenizer_config("titok_bl64_vq8k")  # no generator preset for this tokenizer
    with pytest.raises(ValueError, match="describes no generator"):
        registry.generator(parse(config))
    config.generator = presets.generator_section("titok_b64")  # 4096 codes vs the tokenizer's 8192
    with pytest.raises(ValueError, match="does not fit the tokenizer"):
        registry.generator(parse(config))
    with pytest.raises(ValueError, match="no generator preset"):
        presets.generator_section("maskgit_vqgan")
