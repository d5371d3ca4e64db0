"""The one-jit MaskGIT sampler (titok_jax.sampling) against the official ``generate``.

* every ``generate.*`` case of both tiny generator fixtures (randomize_temperature 0): the exact token ids;
* the schedule tables of official_titok.md section 7.6 (masked counts, cfg, temperatures), and the
  sampler's own per-step masked counts and forward batch sizes on a synthetic logits function;
* randomness: deterministic per rng, different across rngs, ids in [0, K);
* one compiled program for the whole loop (one scan per run of steps with equal pass count, the generator
  traced once per run, no host callbacks);
* the fused tokenizer decode (titok_tiny) returns uint8 images, truncated like the official ``sample_fn``;
* ``Sampler``: batch shapes sized to the request, the same samples for a seed whatever the batch size.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import fixture_dir, load_st
from titok_fixtures import TITOK_TINY

from titok_jax import sampling
from titok_jax.api import Sampler
from titok_jax.config import official, presets
from titok_jax.images import to_uint8
from titok_jax.models import generator as gen_lib
from titok_jax.models import generator_map
from titok_jax.models.titok import TiTok, abstract_params
from titok_jax.models.titok_map import torch_name_map
from titok_jax.sampling import SamplingConfig

FIXTURES = ("generator_imagebert_tiny", "generator_uvit_tiny")


def settings(kwargs) -> SamplingConfig:
    """The official ``generate`` kwargs of a fixture case -> SamplingConfig."""
    kw = dict(kwargs)
    return SamplingConfig(
        num_steps=kw.pop("num_sample_steps"),
        guidance_scale=kw.pop("guidance_scale"),
        guidance_decay=kw.pop("guidance_decay"),
        guidance_scale_pow=kw.pop("guidance_scale_pow", 3.0),
        randomize_temperature=kw.pop("randomize_temperature"),
        softmax_temperature_annealing=kw.pop("softmax_temperature_annealing"),
    )


def load(name):
    d = fixture_dir("tiny", name)
    spec = json.loads((d / "config.json").read_text())
    cfg = official.generator_from_official(spec["config"])
    params = generator_map.torch_name_map(cfg).to_flax(load_st(d / "state_dict.safetensors"),
                                                       gen_lib.abstract_params(cfg))  # fmt: skip
    labels = jnp.asarray(load_st(d / "inputs.safetensors")["condition"], jnp.int32)
    return cfg, params, labels, spec["generate_cases"], load_st(d / "outputs.safetensors")


@pytest.fixture(scope="module", params=FIXTURES)
def fixture(request):
    return (request.param,) + load(request.param)


@pytest.mark.parametrize("case", ["linear_cfg3", "constant_cfg4.5", "power_cosine_cfg6.9", "no_cfg_annealed"])
def test_official_generate_cases_exactly(fixture, case):
    name, cfg, params, labels, cases, out = fixture
    (spec,) = [c for c in cases if c["name"] == case]
    fn = sampling.make_sample_fn(gen_lib.build(cfg), settings(spec["kwargs"]))
    ids, images = fn(params, labels, jax.random.key(0))
    ref = out[f"generate.{case}"]
    assert images is None and ids.dtype == jnp.int32 and ids.shape == ref.shape == (2, 8)
    np.testing.assert_array_equal(np.asarray(ids), ref, err_msg=f"{name} {case}")


# -------------------------------------------------------------------------------------------------
# Schedules (official_titok.md section 7.6)
S128_MASKED = [
    int(x)
    for x in """126 125 124 122 121 120 119 117 116 115 113 112 111 110 108 107 106 104 103 102 100 99
98 96 95 93 92 91 89 88 86 85 83 82 80 79 77 76 74 72 71 69 67 66 64 62 60 58 56 54 52 50 48 46 43 41 38 35 32 28 25 20
14 0""".split()
]


def test_official_settings():
    assert SamplingConfig.official("titok_l32") == SamplingConfig(8, 4.5, "linear", 3.0, 9.5, True)
    assert SamplingConfig.official("titok_b64") == SamplingConfig(8, 3.0, "linear", 3.0, 11.0, True)
    assert SamplingConfig.official("titok_s128") == SamplingConfig(64, 6.9, "power-cosine", 3.0, 2.8, True)
    assert presets.SAMPLING["titok_b64"] is SamplingConfig.official("titok_b64")
    with pytest.raises(ValueError, match="no official sampling settings"):
        SamplingConfig.official("titok_xl")
    with pytest.raises(ValueError, match="guidance_decay must be one of"):
        SamplingConfig(guidance_decay="cosine")
    with pytest.raises(ValueError, match="unknown sampling keys"):
        SamplingConfig.from_dict({"steps": 8})
    s = SamplingConfig.official("titok_s128")
    assert SamplingConfig.from_dict(s.to_dict()) == s
    section = presets.generator_section("titok_l32")
    assert SamplingConfig.from_dict(section.sampling.to_dict()) == SamplingConfig.official("titok_l32")


def test_schedule_l32():
    s = SamplingConfig.official("titok_l32")
    np.testing.assert_array_equal(sampling.masked_counts(32, s), [29, 26, 24, 21, 18, 14, 10, 0])
    t = sampling.schedule(32, s)
    np.testing.assert_allclose(t["cfg"], [0, 0.5625, 1.125, 1.6875, 2.25, 2.8125, 3.375, 3.9375], atol=1e-7)
    np.testing.assert_allclose(t["softmax_temperature"], 1.2 - 0.1 * np.arange(8), atol=1e-6)
    np.testing.assert_allclose(t["gumbel_temperature"], 8.3125 - 1.1875 * np.arange(8), atol=1e-5)
    np.testing.assert_array_equal(t["two_passes"], [False] + [True] * 7)


def test_schedule_b64():
    s = SamplingConfig.official("titok_b64")
    np.testing.assert_array_equal(sampling.masked_counts(64, s), [58, 53, 48, 42, 36, 29, 20, 0])
    t = sampling.schedule(64, s)
    np.testing.assert_allclose(t["cfg"], 0.375 * np.arange(8), atol=1e-7)
    np.testing.assert_allclose(t["gumbel_temperature"][[0, -1]], [9.625, 0.0], atol=1e-6)


def test_schedule_s128():
    s = SamplingConfig.official("titok_s128")
    np.testing.assert_array_equal(sampling.masked_counts(128, s), S128_MASKED)
    t = sampling.schedule(128, s)
    assert t["cfg"][0] == 1.0 and abs(t["cfg"][30] - 1.1531) < 1e-4 and abs(t["cfg"][63] - 6.8691) < 1e-4
    assert np.all(np.diff(t["cfg"]) >= 0) and t["two_passes"].all()
    np.testing.assert_allclose(t["softmax_temperature"][[0, -1]], [1.2875, 0.5], atol=1e-6)
    np.testing.assert_allclose(t["gumbel_temperature"][[0, -1]], [2.75625, 0.0], atol=1e-6)


def synthetic_logits_fn(seq_len, k, num_classes, seen_batches):
    """A cheap continuous logits function of (ids, labels, drop) without ties; records batch sizes."""
    keys = jax.random.split(jax.random.key(7), 3)
    pos = jax.random.normal(keys[0], (seq_len, k))
    tok = jax.random.normal(keys[1], (k + 1, k))
    cls = jax.random.normal(keys[2], (num_classes + 1, k))

    def fn(ids, labels, drop):
        seen_batches.append(ids.shape[0])
        c = jnp.where(drop, num_classes, labels)
        return pos[None] + 0.5 * jnp.mean(tok[ids], axis=1, keepdims=True) + cls[c][:, None]

    return fn


@pytest.mark.parametrize(
    "seq_len,s,k",
    [
        (32, SamplingConfig.official("titok_l32"), 64),
        (64, SamplingConfig.official("titok_b64"), 64),
        (128, SamplingConfig.official("titok_s128"), 16),
        (32, SamplingConfig(8, 0.0, "constant", 3.0, 1.0, False), 64),
    ],
)
def test_sampler_follows_the_schedule(seq_len, s, k):
    seen = []
    fn = synthetic_logits_fn(seq_len, k, 10, seen)
    labels = jnp.asarray([1, 7, 3], jnp.int32)
    ids, history = jax.jit(
        lambda lab, rng: sampling.generate_tokens(
            fn, lab, rng, seq_len=seq_len, codebook_size=k, sampling=s, return_history=True
        )
    )(labels, jax.random.key(0))
    assert history.shape == (s.num_steps, 3, seq_len)
    counts = np.sum(np.asarray(history) == k, axis=-1)  # [T, B]
    expected = sampling.masked_counts(seq_len, s)
    for b in range(3):
        np.testing.assert_array_equal(counts[:, b], expected)
    np.testing.assert_array_equal(history[-1], ids)
    assert int(ids.min()) >= 0 and int(ids.max()) < k
    # tokens, once fixed, never change
    h = np.asarray(history)
    fixed_before = h[:-1] != k
    assert np.all(h[1:][fixed_before] == h[:-1][fixed_before])
    # one traced generator call per run of steps with equal pass count: batch 2B where guidance is on,
    # B where it is 0 (linear: step 0 alone at B, then 2B)
    two = sampling.schedule(seq_len, s)["two_passes"]
    runs = [bool(two[0])] + [bool(two[i]) for i in range(1, len(two)) if two[i] != two[i - 1]]
    assert seen == [6 if r else 3 for r in runs]


# -------------------------------------------------------------------------------------------------
# Randomness, compilation
def test_randomized_sampling_is_deterministic_per_rng(fixture):
    _, cfg, params, labels, _, _ = fixture
    s = SamplingConfig(8, 3.0, "linear", 3.0, 11.0, True)
    fn = sampling.make_sample_fn(gen_lib.build(cfg), s)
    a, _ = fn(params, labels, jax.random.key(1))
    b, _ = fn(params, labels, jax.random.key(1))
    c, _ = fn(params, labels, jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert np.any(np.asarray(a) != np.asarray(c))
    for x in (a, c):
        assert x.dtype == jnp.int32 and int(x.min()) >= 0 and int(x.max()) < cfg.codebook_size
    assert fn._cache_size() == 1  # one compiled program for all calls (and the whole loop)


def _eqns(jaxpr):
    """All equations of a jaxpr, recursing into sub-jaxprs (pjit, scan, while, cond, remat...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from _eqns(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from _eqns(sub)


def _count(jaxpr, name):
    return sum(e.primitive.name == name for e in _eqns(jaxpr))


def test_whole_loop_is_one_program():
    cfg = presets.GENERATORS["titok_tiny"]
    module = gen_lib.build(cfg)
    params = gen_lib.abstract_params(cfg)
    labels = jax.ShapeDtypeStruct((4,), jnp.int32)
    fn = sampling.make_sample_fn(module, SamplingConfig.official("titok_b64"))
    loop = jax.make_jaxpr(fn)(params, labels, jax.random.key(0)).jaxpr
    fwd = jax.make_jaxpr(lambda p, i, lab, d: module.apply({"params": p}, i, lab, d))(
        params,
        jax.ShapeDtypeStruct((8, 8), jnp.int32),
        jax.ShapeDtypeStruct((8,), jnp.int32),
        jax.ShapeDtypeStruct((8,), bool),
    ).jaxpr
    (top,) = [e for e in loop.eqns if e.primitive.name in ("pjit", "jit")]  # the one jit
    inner = top.params["jaxpr"].jaxpr
    scans = [e for e in inner.eqns if e.primitive.name == "scan"]
    # the whole loop: step 0 (linear guidance 0: conditional pass only, batch B), then steps 1..7 (2B)
    assert [e.params["length"] for e in scans] == [1, 7]
    assert not [e for e in _eqns(loop) if "callback" in e.primitive.name]  # no host round trips
    # the generator is traced once per scan body: as many matmuls as one forward pass each
    for scan in scans:
        assert _count(scan.params["jaxpr"].jaxpr, "dot_general") == _count(fwd, "dot_general") > 0
    assert _count(inner, "dot_general") == 2 * _count(fwd, "dot_general")
    # ... at batch B = 4 for step 0, 2B = 8 for the guided steps
    first_dot = [next(e for e in _eqns(scan.params["jaxpr"].jaxpr) if e.primitive.name == "dot_general")
                 for scan in scans]  # fmt: skip
    assert [e.invars[0].aval.shape[0] for e in first_dot] == [4, 8]


def test_to_uint8_truncates_like_the_official_sample_fn():
    x = jnp.asarray([-0.1, 0.0, 0.5, 0.999, 1.0, 1.2, 1.5 / 255, 254.99 / 255])
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 127, 254, 255, 255, 1, 254])


def test_fused_decode_titok_tiny():
    gcfg, gparams, *_ = load("generator_imagebert_tiny")  # official weights of the titok_tiny generator shape
    assert gcfg == presets.GENERATORS["titok_tiny"]
    gen = gen_lib.build(gcfg)
    tparams = torch_name_map(TITOK_TINY).to_flax(
        load_st(fixture_dir("tiny", "titok_tiny") / "state_dict.safetensors"), abstract_params(TITOK_TINY)
    )
    tok = TiTok(TITOK_TINY)
    fn = sampling.make_sample_fn(gen, presets.SAMPLING["titok_tiny"], tok)
    labels = jnp.asarray([0, 5, 9], jnp.int32)
    ids, images = fn(gparams, labels, jax.random.key(3), tparams)
    assert ids.shape == (3, 8) and ids.dtype == jnp.int32 and int(ids.max()) < 64 and int(ids.min()) >= 0
    assert images.shape == (3, 64, 64, 3) and images.dtype == jnp.uint8
    # same ids as the token-only sampler with the same rng, same pixels as decoding them separately
    ids_only, none = sampling.make_sample_fn(gen, presets.SAMPLING["titok_tiny"])(gparams, labels, jax.random.key(3))
    assert none is None
    np.testing.assert_array_equal(ids, ids_only)
    pix = jax.jit(lambda p, i: tok.apply({"params": p}, i, method=tok.decode_tokens))(tparams, ids)
    diff = np.abs(np.asarray(images, np.int32) - np.asarray(to_uint8(pix), np.int32))
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.99  # truncation at a float boundary may flip by 1
    with pytest.raises(ValueError, match="pass the tokenizer params"):
        fn(gparams, labels, jax.random.key(3))


# -------------------------------------------------------------------------------------------------
# The Sampler: batch shapes and per-sample randomness
def test_sampler_batches_requests_and_draws_per_sample_noise():
    gcfg, gparams, *_ = load("generator_imagebert_tiny")  # official weights of the titok_tiny generator shape
    tparams = torch_name_map(TITOK_TINY).to_flax(
        load_st(fixture_dir("tiny", "titok_tiny") / "state_dict.safetensors"), abstract_params(TITOK_TINY)
    )
    s = Sampler("titok_tiny", gparams, tparams)
    # min(batch size, request), then the tail padded to a power of two (one device here)
    assert s.batch_shapes(4, 32) == [4]
    assert s.batch_shapes(100, 32) == [32, 32, 32, 4]
    assert s.batch_shapes(5, 2) == [2, 2, 1] and s.batch_shapes(7, 4) == [4, 4] and s.batch_shapes(11, 8) == [8, 4]
    labels = [3, 1, 4, 1]
    ids_a, images_a = s.sample(labels, seed=7, batch_size=2)  # two batches of 2
    ids_b, images_b = s.sample(labels, seed=7, batch_size=32)  # one batch of 4, not 32
    assert ids_a.shape == (4, gcfg.image_seq_len) and images_a.shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(ids_a, ids_b)  # same seed, same samples, whatever the batch size
    diff = np.abs(images_a.astype(np.int32) - images_b.astype(np.int32))  # uint8 truncation of the decoded
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.99  # floats may flip by 1 between batch shapes
    assert np.any(s.sample(labels, seed=8, batch_size=2)[0] != ids_a)
    assert s._fn._cache_size() == 2  # one program per distinct shape: 2 and 4
