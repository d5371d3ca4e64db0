"""Pure train steps of every stage on tiny configs (no data pipeline, no I/O)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from titok_jax.config import parse, presets, with_changes
from titok_jax.models import titok_map
from titok_jax.porting.mapping import flatten
from titok_jax.train import optim
from titok_jax.train.stages import make_stage


def tiny_config(name="titok_tiny", **stage_overrides):
    c = presets.training_config(name)
    c.teacher.model = presets.MODELS["maskgit_vqgan_tiny"].to_dict()
    c.discriminator = dict(hidden_channels=32, num_stages=2)
    for sec in ("stage1", "stage2", "single_stage", "teacher_train"):
        c[sec].update(dict(num_steps=100, warmup_steps=2, batch_size=4, perceptual_weight=0.0, disc_start=2,
                           lr=1e-3, end_lr=1e-4) if sec != "stage1" else dict(num_steps=100, warmup_steps=2,
                           batch_size=4, lr=1e-3, end_lr=1e-4))  # fmt: skip
        c[sec].update(stage_overrides)
    return parse(c)


def images(n=4, size=64, seed=0):
    return {"image": jax.random.uniform(jax.random.key(seed), (n, size, size, 3)), "label": jnp.zeros((n,), jnp.int32)}


def teacher_aux(config):
    stage = make_stage("teacher", config)
    p = stage.init_params(jax.random.key(7))
    return {"teacher": {k: p[k] for k in ("encoder", "quantize", "decoder")}}


_COMPILED = {}


def compiled(stage_name):
    """(stage, initial state, jitted step, aux), built once per stage for the whole module."""
    if stage_name not in _COMPILED:
        config = tiny_config("titok_tiny_vq" if stage_name == "single_stage" else "titok_tiny")
        stage = make_stage(stage_name, config)
        state = jax.jit(stage.init_state)(jax.random.key(0))
        aux = teacher_aux(config) if stage_name == "stage1" else {}
        _COMPILED[stage_name] = (stage, state, jax.jit(stage.train_step), aux)
    return _COMPILED[stage_name]


@pytest.mark.parametrize("stage_name", ["teacher", "stage1", "stage2", "single_stage"])
def test_one_step_each_stage(stage_name):
    stage, state, step, aux = compiled(stage_name)
    before = jax.device_get(state.params)
    new, metrics = step(state, images(), aux)  # official schedule: the first step runs at lr 0
    assert int(new.step) == 1 and float(metrics["lr"]) == 0.0
    new, metrics = step(new, images(seed=1), aux)
    for k, v in metrics.items():
        assert np.isfinite(np.asarray(v)).all(), k
    changed = [p for p, a in flatten(before).items() if not np.array_equal(a, flatten(jax.device_get(new.params))[p])]
    assert changed, "no parameter changed"
    if stage.has_discriminator:
        assert "d_loss" in metrics and new.disc_params is not None
    recon = jax.jit(stage.reconstruct)(new, images(), aux)
    assert recon.shape == (4, 64, 64, 3)


def test_stage2_freezes_encoder_quantizer_and_latents():
    stage, state, step, _ = compiled("stage2")
    before = jax.device_get(state)
    for i in range(3):
        state, _ = step(state, images(seed=i), {})
    after = jax.device_get(state)
    for key in ("latent_tokens", "encoder", "quantize"):
        for path, a in flatten({key: before.params[key]}).items():
            np.testing.assert_array_equal(flatten({key: after.params[key]})[path], a, err_msg="/".join(path))
            np.testing.assert_array_equal(
                flatten({key: after.ema_params[key]})[path], a, err_msg="ema " + "/".join(path)
            )
    for key in ("decoder", "pixel_decoder", "pixel_quantize"):
        fa, fb = flatten(after.params[key]), flatten(before.params[key])
        assert any(not np.array_equal(fa[p], fb[p]) for p in fa), key


def test_stage1_loss_decreases_on_fixed_data():
    stage, state, step, aux = compiled("stage1")
    batch = images(seed=3)
    losses = []
    for _ in range(30):
        state, m = step(state, batch, aux)
        losses.append(float(m["ce"]))
    assert losses[-1] < 0.6 * losses[0], losses  # ln(1024) = 6.93 at the start


def test_discriminator_waits_for_disc_start():
    stage, state, step, _ = compiled("stage2")
    assert stage.sc.disc_start == 2
    d0 = jax.device_get(state.disc_params)
    state, m = step(state, images(), {})  # step 0 < disc_start: D untouched, no adversarial term
    assert float(m["d_loss"]) == 0.0 and float(m["g_adv"]) == 0.0
    for p, a in flatten(d0).items():
        np.testing.assert_array_equal(flatten(jax.device_get(state.disc_params))[p], a)
    state, _ = step(state, images(seed=1), {})
    state, m = step(state, images(seed=2), {})  # step 2 >= disc_start
    assert float(m["d_loss"]) != 0.0 and float(m["g_adv"]) != 0.0
    assert float(state.lecam["ema_real"]) != 0.0


def test_official_weight_decay_exclusions():
    cfg = presets.MODELS["titok_b64"]
    from titok_jax.models.titok import abstract_params

    abstract = abstract_params(cfg)
    nm = titok_map.torch_name_map(cfg)
    mask = flatten(optim.decay_mask(abstract, nm))
    names = {r.flax_path: r.external_key for r in nm.rules}
    decayed = sorted(names[p] for p, v in mask.items() if v)
    for n in decayed:
        assert any(s in n for s in ("attn.in_proj_weight", "attn.out_proj.weight", "mlp.c_fc.weight",
                                    "mlp.c_proj.weight", "encoder.conv_out.weight", "decoder.ffn.0.weight",
                                    "decoder.ffn.2.weight", "pixel_decoder.")), n  # fmt: skip
    for n in ("encoder.patch_embed.weight", "decoder.decoder_embed.weight", "quantize.embedding.weight",
              "latent_tokens", "decoder.mask_token", "encoder.transformer.0.ln_1.weight"):  # fmt: skip
        assert n not in decayed
    assert "encoder.transformer.3.attn.in_proj_weight" in decayed and "pixel_decoder.conv_in.weight" in decayed


def test_schedule_and_ema_rules():
    s = optim.cosine_schedule(1e-4, 1e-5, 10, 110)
    assert float(s(0)) == 0.0
    np.testing.assert_allclose(float(s(5)), 5e-5, rtol=1e-6)
    np.testing.assert_allclose(float(s(10)), 1e-4, rtol=1e-6)
    np.testing.assert_allclose(float(s(60)), 1e-5 + 0.5 * 9e-5, rtol=1e-5)
    np.testing.assert_allclose(float(s(110)), 1e-5, rtol=1e-5)
    ema = {"w": jnp.zeros(())}
    ema = optim.ema_update(ema, {"w": jnp.ones(())}, 0, 0.999)  # first update copies
    assert float(ema["w"]) == 1.0
    ema = optim.ema_update(ema, {"w": jnp.zeros(())}, 1, 0.999)  # decay (1+1)/(10+1)
    np.testing.assert_allclose(float(ema["w"]), 2 / 11, rtol=1e-6)
    assert float(optim.ema_decay(10_000, 0.999)) == pytest.approx(0.999)


def test_stage2_handoff_from_stage1_and_teacher(tmp_path):
    """Stage 2 starts from stage 1's (EMA) encoder/quantizer/decoder exactly and from the teacher's
    decoder + codebook, restored with Orbax partial restore from the hand-off checkpoints."""
    from titok_jax import checkpoint

    config = tiny_config()
    teacher = make_stage("teacher", config).init_params(jax.random.key(11))
    checkpoint.save_params(str(tmp_path / "teacher_ckpt"), teacher, {"what": "test teacher"})
    config = with_changes(config, teacher={"checkpoint": str(tmp_path / "teacher_ckpt")})
    s1 = make_stage("stage1", config).init_params(jax.random.key(12))
    checkpoint.save_params(str(tmp_path / "work" / "stage1" / "final"), s1, {"what": "test stage1"})
    stage = make_stage("stage2", config)
    state = stage.handoff(jax.jit(stage.init_state)(jax.random.key(0)), str(tmp_path / "work"))
    got = flatten(jax.device_get(state.params))
    for key in ("latent_tokens", "encoder", "quantize", "decoder"):
        for path, a in flatten({key: s1[key]}).items():
            np.testing.assert_array_equal(got[path], a, err_msg="/".join(path))
    for path, a in flatten({"pixel_decoder": teacher["decoder"]}).items():
        np.testing.assert_array_equal(got[path], a, err_msg="/".join(path))
    np.testing.assert_array_equal(got[("pixel_quantize", "embedding")], teacher["quantize"]["embedding"])
    assert flatten(jax.device_get(state.ema_params)).keys() == got.keys()


def test_gradient_accumulation_applies_every_k_steps():
    config = tiny_config(grad_accum_steps=2, warmup_steps=0)
    stage = make_stage("stage1", config)
    aux = teacher_aux(config)
    state = jax.jit(stage.init_state)(jax.random.key(0))
    step = jax.jit(stage.train_step)
    p0 = flatten(jax.device_get(state.params))
    state, _ = step(state, images(seed=1), aux)
    p1 = flatten(jax.device_get(state.params))
    assert all(np.array_equal(p0[k], p1[k]) for k in p0), "first micro-step must only accumulate"
    state, _ = step(state, images(seed=2), aux)
    p2 = flatten(jax.device_get(state.params))
    assert any(not np.array_equal(p1[k], p2[k]) for k in p1)


def test_own_schedule_vs_optax_warmup_cosine():
    """Why optim.cosine_schedule is not optax.warmup_cosine_decay_schedule: the same formula, but optax
    refuses warmup_steps == num_steps (a legal official config: the whole run warms up) and rounds
    differently in float32 (the official schedule divides by max(1, total - warmup) at every step)."""
    import optax

    ours = optim.cosine_schedule(1e-3, 1e-4, 20, 300)
    theirs = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 20, 300, 1e-4)
    steps = np.arange(0, 320)
    a = np.asarray([float(ours(s)) for s in steps])
    b = np.asarray([float(theirs(s)) for s in steps])
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)  # the same schedule up to float32 rounding
    assert not np.array_equal(a, b)  # ... but not bit-identical
    with pytest.raises(ValueError):
        optax.warmup_cosine_decay_schedule(0.0, 1e-3, 5, 5, 1e-4)
    full_warmup = optim.cosine_schedule(1e-3, 1e-4, 5, 5)
    np.testing.assert_allclose([float(full_warmup(s)) for s in range(5)], [0.0, 2e-4, 4e-4, 6e-4, 8e-4], rtol=1e-6)


@pytest.mark.parametrize("stage_name,section", [("teacher", "teacher_train"), ("stage1", "stage1")])
def test_dead_code_restart_option(stage_name, section):
    """Off by default (no counts in the state); with dead_code_restart_every=2 the counts accumulate and,
    every 2 steps, the codes no latent chose become latents of the batch, in params and EMA alike."""
    stage, state, _, aux = compiled(stage_name)
    assert stage.sc.dead_code_restart_every == 0 and state.code_counts is None
    config = with_changes(tiny_config(), **{section: dict(dead_code_restart_every=2, dead_code_restart_noise=0.0)})
    stage = make_stage(stage_name, config)
    state = jax.jit(stage.init_state)(jax.random.key(0))
    k = stage.restart_codebook_size()
    assert state.code_counts.shape == (k,)
    step = jax.jit(stage.train_step)
    state, m = step(state, images(), aux)
    assert "_latents" not in m and "_ids" not in m and float(m["restarted_codes"]) == 0.0
    per_image = 16 if stage_name == "teacher" else config.model.num_latent_tokens  # a 4x4 grid / 8 tokens
    assert int(state.code_counts.sum()) == 4 * per_image
    before = np.asarray(state.params["quantize"]["embedding"])
    used = np.asarray(state.code_counts) > 0
    state, m = step(state, images(seed=1), aux)  # step 2: restart
    assert int(state.code_counts.sum()) == 0
    after = np.asarray(state.params["quantize"]["embedding"])
    n = int(m["restarted_codes"])
    assert 0 < n <= k - used.sum()
    # restarted rows jump to latents; Adam moves a row by ~lr = 1e-3 per step at most
    restarted = np.abs(after - before).max(axis=1) > 1e-2
    assert restarted.sum() == n and not (restarted & used).any()
    np.testing.assert_array_equal(np.asarray(state.ema_params["quantize"]["embedding"])[restarted], after[restarted])
