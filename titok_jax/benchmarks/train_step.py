"""Train-step throughput of the pure step functions (a benchmark script, not a test).

  titok-bench-train [--models=titok_tiny,titok_b64] [--stages=stage1,stage2] [--batch=8] [--steps=3]

Prints one table row per (model, stage): compile time, seconds per step (median over --steps
timed steps after one warm-up step), steps/s and images/s, on whatever devices JAX sees. Random
weights and random images; the perceptual loss is off (its weights are not bundled); the
discriminator is active from step 0 so the stage-2 row includes the full GAN step.
Imports no TensorFlow.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp

from titok_jax.config import parse, presets, with_changes
from titok_jax.train.stages import make_stage


def bench(model: str, stage_name: str, batch: int, steps: int, dtype: str) -> dict:
    """Compile time, median step time and throughput of one stage's jitted train step (random data)."""
    config = presets.training_config(model, f"dtype={dtype}")
    if config.image_size != 256:  # tiny models pair with the tiny teacher
        config.teacher.model = presets.as_config_dict(presets.MODELS["maskgit_vqgan_tiny"])
        config.discriminator = dict(hidden_channels=32, num_stages=2)
    run = parse(config)
    sec = run.section(stage_name)
    changes = dict(batch_size=batch)
    if hasattr(sec, "perceptual_weight"):  # no bundled ConvNeXt weights; the discriminator active from step 0
        changes.update(perceptual_weight=0.0, disc_start=0)
    run = with_changes(run, **{sec.name if stage_name != "teacher" else "teacher_train": changes})
    size = run.image_size
    stage = make_stage(stage_name, run)
    state = jax.jit(stage.init_state)(jax.random.key(0))
    aux = {}
    if stage_name == "stage1":
        tp = make_stage("teacher", run).init_params(jax.random.key(1))
        aux = {"teacher": {k: tp[k] for k in ("encoder", "quantize", "decoder")}}
    images = {
        "image": jax.random.uniform(jax.random.key(2), (batch, size, size, 3)),
        "label": jnp.zeros((batch,), jnp.int32),
    }
    step = jax.jit(stage.train_step, donate_argnums=(0,))
    t0 = time.perf_counter()
    compiled = step.lower(state, images, aux).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, images, aux)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = compiled(state, images, aux)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    return dict(model=model, stage=stage_name, params=n_params, batch=batch, compile_s=compile_s, step_s=s,
                steps_per_s=1 / s, images_per_s=batch / s)  # fmt: skip


def format_row(r: dict) -> str:
    return (f"| {r['model']:<12} | {r['stage']:<7} | {r['params']:>11,} | {r['batch']:>5} | {r['compile_s']:>9.1f} | "
            f"{r['step_s']:>6.3f} | {r['steps_per_s']:>7.3f} | {r['images_per_s']:>5.2f} |")  # fmt: skip


HEADER = "| model        | stage   |      params | batch | compile s | s/step | steps/s | img/s |"
