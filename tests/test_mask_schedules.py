"""Masking schedules as configuration (the paper's ablation): ``generator_train.mask_schedule`` for the
training masks, ``SamplingConfig.mask_schedule`` for the sampler's re-masking, arccos by default.

Per schedule: the masked fraction over t (closed forms of MaskGIT's ``libml/mask_schedule.py``, written
out here independently), the training masks it draws, and the tokens kept masked / fixed per sampling
step (tables worked out by hand for L = 32, T = 8). The arccos parity with the official code is tested
in test_sampling.py / test_generator_stage.py, unchanged.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sampling import synthetic_logits_fn

from titok_jax import config as config_lib
from titok_jax import sampling
from titok_jax.config import ConfigError, parse, presets
from titok_jax.config.models import MASK_SCHEDULES
from titok_jax.config.sections import GeneratorTrainConfig
from titok_jax.sampling import SamplingConfig
from titok_jax.train.stages import generator as gs

L16 = math.log(16)
# schedule -> (masked fraction f(r) for L = 16 before the [1e-6, 1] clamp, E[f(t)] for t ~ U(0, 1) after it)
FORMS = {
    "arccos": (lambda r: np.arccos(r) / (np.pi / 2), 2 / np.pi),
    "linear": (lambda r: 1 - r, 0.5),
    "cosine": (lambda r: np.cos(np.pi / 2 * r), 2 / np.pi),
    "square": (lambda r: 1 - r**2, 2 / 3),
    "cubic": (lambda r: 1 - r**3, 3 / 4),
    "sqrt": (lambda r: 1 - np.sqrt(r), 1 / 3),
    "log": (lambda r: -np.log2(r) / 4, 1 / 16 + (1 - 1 / 16 - L16 / 16) / L16),
    "exp": (lambda r: 1 - 16.0 ** -(1 - r), 1 - (1 - 1 / 16) / L16),
}
# Tokens still masked after each of T = 8 steps for L = 32: floor(32 f((s+1)/8)), at least one fixed per step.
MASKED_L32_T8 = {
    "arccos": [29, 26, 24, 21, 18, 14, 10, 0],  # official_titok.md section 7.6
    "linear": [28, 24, 20, 16, 12, 8, 4, 0],
    "cosine": [31, 29, 26, 22, 17, 12, 6, 0],
    "square": [31, 30, 27, 24, 19, 14, 7, 0],
    "cubic": [31, 30, 29, 28, 24, 18, 10, 0],  # floor(32 f) = 31, 31, 30: the one-token-per-step rule applies
    "sqrt": [20, 16, 12, 9, 6, 4, 2, 0],
    "log": [19, 12, 9, 6, 4, 2, 1, 0],
    "exp": [30, 29, 28, 26, 23, 18, 11, 0],
}


def test_every_schedule_is_covered():
    assert set(FORMS) == set(MASKED_L32_T8) == set(MASK_SCHEDULES)
    assert SamplingConfig().mask_schedule == "arccos" and GeneratorTrainConfig().mask_schedule == "arccos"


@pytest.mark.parametrize("name", MASK_SCHEDULES)
def test_masked_fraction_over_t(name):
    f, _ = FORMS[name]
    r = np.linspace(0.0, 1.0, 257)
    with np.errstate(divide="ignore"):
        want = np.clip(f(r), 1e-6, 1.0)
    got = sampling.mask_ratio(r, name, 16)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    # everything masked at t = 0 (MaskGIT's exp form starts at 1 - 1/L), (almost) nothing at t = 1
    assert got[0] == (1 - 1 / 16 if name == "exp" else 1.0) and got[-1] == 1e-6
    assert np.all(np.diff(got) <= 0)  # monotone: later steps keep fewer tokens masked
    # the same form in float32 under jit (the training masks)
    got32 = jax.jit(lambda x: sampling.mask_ratio(x, name, 16, xp=jnp))(jnp.asarray(r, jnp.float32))
    np.testing.assert_allclose(np.asarray(got32), want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", MASK_SCHEDULES)
def test_training_masks_follow_the_schedule(name):
    b, seq_len, k = 2048, 16, 64
    tokens = jax.random.randint(jax.random.key(0), (b, seq_len), 0, k)
    inputs, mask = gs.mask_tokens(tokens, jax.random.key(1), k, name)
    inputs, mask, tokens = map(np.asarray, (inputs, mask, tokens))
    np.testing.assert_array_equal(inputs[mask], k)
    np.testing.assert_array_equal(inputs[~mask], tokens[~mask])
    n = mask.sum(-1)
    # the count is max(1, round(L * f(t))) for the t the function drew
    r_t, _ = jax.random.split(jax.random.key(1))
    t = np.asarray(jax.random.uniform(r_t, (b,)), np.float64)
    with np.errstate(divide="ignore"):
        want = np.maximum(np.round(seq_len * np.clip(FORMS[name][0](t), 1e-6, 1.0)), 1)
    np.testing.assert_array_equal(n, want)
    assert abs(n.mean() / seq_len - FORMS[name][1]) < 0.03  # the expected masked fraction


def test_arccos_is_the_default_and_unchanged():
    tokens = jax.random.randint(jax.random.key(0), (64, 32), 0, 64)
    default = gs.mask_tokens(tokens, jax.random.key(3), 64)
    named = gs.mask_tokens(tokens, jax.random.key(3), 64, "arccos")
    for a, b in zip(default, named):
        np.testing.assert_array_equal(a, b)
    for name in ("titok_l32", "titok_b64", "titok_s128"):
        s = SamplingConfig.official(name)
        assert s.mask_schedule == "arccos"
    with pytest.raises(ValueError, match="mask schedule must be one of"):
        sampling.mask_ratio(0.5, "quadratic")


@pytest.mark.parametrize("name", MASK_SCHEDULES)
def test_tokens_kept_per_sampling_step(name):
    s = SamplingConfig(8, 0.0, "constant", 3.0, 1.0, False, mask_schedule=name)
    counts = sampling.masked_counts(32, s)
    np.testing.assert_array_equal(counts, MASKED_L32_T8[name])
    fixed = -np.diff(np.concatenate([[32], counts]))
    assert fixed.min() >= 1 and fixed.sum() == 32  # every step fixes at least one token, all are fixed at the end
    keep = sampling.schedule(32, s)["n_keep_masked"]
    l32 = {"log": lambda r: -np.log2(r) / 5, "exp": lambda r: 1 - 32.0 ** -(1 - r)}  # the L-dependent forms at L = 32
    f = l32.get(name, FORMS[name][0])
    np.testing.assert_array_equal(keep, np.floor(32 * np.clip(f(np.arange(1, 9) / 8), 1e-6, 1.0)))


@pytest.mark.parametrize("name", ["cubic"])
def test_sampler_follows_a_non_default_schedule(name):
    s = SamplingConfig(8, 2.0, "constant", 3.0, 1.0, False, mask_schedule=name)
    fn = synthetic_logits_fn(32, 64, 10, [])
    _, history = jax.jit(
        lambda lab, rng: sampling.generate_tokens(
            fn, lab, rng, seq_len=32, codebook_size=64, sampling=s, return_history=True
        )
    )(jnp.asarray([1, 7, 3], jnp.int32), jax.random.key(0))
    counts = np.sum(np.asarray(history) == 64, axis=-1)  # [T, B]
    for b in range(3):
        np.testing.assert_array_equal(counts[:, b], MASKED_L32_T8[name])


@pytest.mark.parametrize("name", MASK_SCHEDULES)
def test_config_variant_per_schedule(name):
    run = config_lib.load(f"configs/titok_l32.py:mask_schedule={name}")
    assert run.generator_train.mask_schedule == name
    assert run.generator.sampling.mask_schedule == name
    assert run.generator_train.preview_sampling.mask_schedule == name
    assert run.sampling().mask_schedule == name
    # everything else is the official recipe
    base = config_lib.load("configs/titok_l32.py")
    assert run.generator_train.replace(mask_schedule="arccos", preview_sampling=base.generator_train.preview_sampling) \
        == base.generator_train  # fmt: skip
    assert run.generator.sampling.replace(mask_schedule="arccos") == SamplingConfig.official("titok_l32")


def test_bad_schedules_fail_clearly():
    with pytest.raises(ConfigError, match="mask_schedule must be one of"):
        presets.training_config("titok_l32", "mask_schedule=quadratic")
    with pytest.raises(ConfigError, match="has no generator"):
        presets.training_config("titok_bl64_vq8k", "mask_schedule=cosine")
    c = presets.training_config("titok_tiny")
    c.generator_train.mask_schedule = "pow2"
    with pytest.raises(ValueError, match="mask_schedule must be one of"):
        parse(c)
    with pytest.raises(ValueError, match="mask_schedule must be one of"):
        SamplingConfig(mask_schedule="uniform")


def test_generator_stage_trains_with_the_configured_schedule():
    """The stage's masked fraction follows generator_train.mask_schedule (sqrt: 1/3; arccos would mask 0.64)."""
    run = parse(presets.training_config("titok_tiny", "mask_schedule=sqrt"))
    stage = gs.GeneratorStage(run)
    params = jax.jit(stage.init_params)(jax.random.key(0))
    batch = {"tokens": jax.random.randint(jax.random.key(1), (512, 8), 0, 64), "label": jnp.zeros((512,), int)}
    _, (metrics, _) = jax.jit(lambda p, bt: stage.generator_loss(p, None, bt, {}, jax.random.key(2)))(params, batch)
    assert abs(float(metrics["mask_ratio"]) - 1 / 3) < 0.03
