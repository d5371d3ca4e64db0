"""Train-step throughput of the pure step functions (a benchmark script, not a test).

  python -m titok_jax.bench_train [--models=titok_tiny,titok_b64] [--stages=stage1,stage2] [--batch=8] [--steps=3]

Prints one table row per (model, stage): compile time, seconds per step (median over --steps
timed steps after one warm-up step), steps/s and images/s, on whatever devices JAX sees. Random
weights and random images; the perceptual loss is off (its weights are not bundled); the
discriminator is active from step 0 so the stage-2 row includes the full GAN step.
Imports no TensorFlow.
"""

from __future__ import annotations

import statistics
import time

from absl import app, flags, logging

flags.DEFINE_list("models", ["titok_tiny", "titok_b64"], "Model presets.")
flags.DEFINE_list("stages", ["stage1", "stage2"], "Stages to time.")
flags.DEFINE_integer("batch", 8, "Global batch size.")
flags.DEFINE_integer("steps", 3, "Timed steps (after one warm-up step).")
flags.DEFINE_string("dtype", "float32", "Compute dtype: float32 or bfloat16.")
FLAGS = flags.FLAGS


def bench(model: str, stage_name: str, batch: int, steps: int, dtype: str) -> dict:
    import jax
    import jax.numpy as jnp

    from titok_jax import presets
    from titok_jax.train.stages import make_stage

    config = presets.training_config(model, f"dtype={dtype}")
    size = config.image_size
    if size != 256:  # tiny models pair with the tiny teacher
        config.teacher.model = presets.MODELS["maskgit_vqgan_tiny"].to_dict()
        config.discriminator = dict(hidden_channels=32, num_stages=2)
    sec = config[stage_name]
    sec.update(dict(batch_size=batch, perceptual_weight=0.0, disc_start=0) if "perceptual_weight" in sec else {})
    stage = make_stage(stage_name, config)
    state = jax.jit(stage.init_state)(jax.random.key(0))
    aux = {}
    if stage_name == "stage1":
        t = make_stage("teacher", config)
        tp = t.init_params(jax.random.key(1))
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


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)
    import jax

    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; dtype {FLAGS.dtype}", flush=True)
    header = f"| {'model':<12} | {'stage':<7} | {'params':>11} | batch | compile s | s/step | steps/s | img/s |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|", flush=True)
    for model in FLAGS.models:
        for stage in FLAGS.stages:
            r = bench(model, stage, FLAGS.batch, FLAGS.steps, FLAGS.dtype)
            row = (
                f"| {r['model']:<12} | {r['stage']:<7} | {r['params']:>11,} | {r['batch']:>5} | "
                f"{r['compile_s']:>9.1f} | "
                f"{r['step_s']:>6.3f} | {r['steps_per_s']:>7.3f} | {r['images_per_s']:>5.2f} |"
            )
            print(row, flush=True)


if __name__ == "__main__":
    app.run(main)
