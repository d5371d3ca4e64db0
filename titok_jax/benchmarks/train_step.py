"""Train-step throughput and memory of the pure step functions (a benchmark script, not a test).

  titok-bench-train [--models=titok_tiny,titok_b64] [--stages=stage1,stage2] [--batch=8] [--steps=3]
                    [--remat] [--memory_limit_gb=20]

Prints one table row per (model, stage): compile time, seconds per step (median over --steps
timed steps after one warm-up step), steps/s and images/s, on whatever devices JAX sees, and memory:
``XLA GB`` is what the compiled step needs (its arguments -- parameters, optimizer state, EMA, the
batch -- plus outputs not aliased to donated inputs, plus temporaries: XLA's own buffer plan, known
before anything runs), ``RSS GB`` the process's peak resident memory so far (run one row per process
for a per-row number). A row whose XLA plan exceeds ``--memory_limit_gb`` is compiled but not run.
Random weights and random images; the perceptual loss is off (its weights are not bundled); the
discriminator is active from step 0 so the stage-2 row includes the full GAN step. Tiny models use
their own tiny VQGAN (the pixel decoder's config) as teacher, full-size ones the MaskGIT-VQGAN.
``--remat`` rematerialises the transformer blocks (``config.remat``). Imports no TensorFlow.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Optional

import jax
import jax.numpy as jnp

from titok_jax.config import parse, presets, with_changes
from titok_jax.models import generator as generator_lib
from titok_jax.models import titok
from titok_jax.train.stages import make_stage

GB = 1024**3


def xla_bytes(compiled) -> Optional[int]:
    """Bytes the compiled program needs at its peak by XLA's buffer plan (None where the backend has no plan)."""
    try:
        m = compiled.memory_analysis()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``getrusage``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def bench_run(model: str, stage_name: str, batch: int, dtype: str, remat: bool = False):
    """The run config of one benchmark row (random data, perceptual loss off, discriminator from step 0)."""
    config = presets.training_config(model, f"dtype={dtype}")
    m = presets.MODELS[model]
    config.remat = remat
    if getattr(m, "is_legacy", False):  # the teacher whose codebook the proxy head predicts
        config.teacher.model = presets.as_config_dict(m.pixel_decoder)
    if not m.is_standard_size:  # tiny models: a tiny discriminator
        config.discriminator = dict(hidden_channels=32, num_stages=2)
    run = parse(config)
    sec = run.section(stage_name)
    changes = dict(batch_size=batch)
    if hasattr(sec, "perceptual_weight"):  # no bundled ConvNeXt weights; the discriminator active from step 0
        changes.update(perceptual_weight=0.0, disc_start=0)
    return with_changes(run, **{sec.name if stage_name != "teacher" else "teacher_train": changes})


def bench(model: str, stage_name: str, batch: int, steps: int, dtype: str, remat: bool = False,
          memory_limit_gb: float = 0.0) -> dict:  # fmt: skip
    """Compile time, XLA memory plan, median step time and throughput of one stage's jitted train step."""
    run = bench_run(model, stage_name, batch, dtype, remat)
    size = run.image_size
    stage = make_stage(stage_name, run)
    rng = jax.random.key(0)
    images = {
        "image": jax.random.uniform(jax.random.key(2), (batch, size, size, 3)),
        "label": jnp.zeros((batch,), jnp.int32),
    }
    teacher = make_stage("teacher", run) if stage_name == "stage1" else None
    abstract_aux = {}
    if teacher is not None:
        tp = jax.eval_shape(teacher.init_params, jax.random.key(1))
        abstract_aux = {"teacher": {k: tp[k] for k in ("encoder", "quantize", "decoder")}}
    step = jax.jit(stage.train_step, donate_argnums=(0,))
    t0 = time.perf_counter()
    compiled = step.lower(jax.eval_shape(stage.init_state, rng), images, abstract_aux).compile()
    compile_s = time.perf_counter() - t0
    need = xla_bytes(compiled)
    n_params = sum(x.size for x in jax.tree.leaves(jax.eval_shape(stage.init_params, rng)))
    row = dict(model=model, stage=stage_name + ("+remat" if remat else ""), params=n_params, batch=batch,
               compile_s=compile_s, xla_gb=None if need is None else need / GB, step_s=None)  # fmt: skip
    if memory_limit_gb and need is not None and need > memory_limit_gb * GB:
        row["rss_gb"] = peak_rss_bytes() / GB
        return row  # does not fit: compiled, not run
    state = jax.jit(stage.init_state)(rng)
    aux = {}
    if teacher is not None:
        tp = jax.jit(teacher.init_params)(jax.random.key(1))
        aux = {"teacher": {k: tp[k] for k in ("encoder", "quantize", "decoder")}}
    state, m = compiled(state, images, aux)
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = compiled(state, images, aux)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    row.update(step_s=s, steps_per_s=1 / s, images_per_s=batch / s, rss_gb=peak_rss_bytes() / GB)
    return row


HEADER = ("| model          | stage         |      params | batch | compile s | XLA GB | RSS GB |  s/step | "
          "steps/s |  img/s |")  # fmt: skip


def format_row(r: dict) -> str:
    xla = f"{r['xla_gb']:>6.2f}" if r.get("xla_gb") is not None else "   n/a"
    head = (f"| {r['model']:<14} | {r['stage']:<13} | {r['params']:>11,} | {r['batch']:>5} | {r['compile_s']:>9.1f} | "
            f"{xla} | {r['rss_gb']:>6.2f} |")  # fmt: skip
    if r.get("step_s") is None:
        return head + " not run: over --memory_limit_gb |"
    return head + f" {r['step_s']:>7.3f} | {r['steps_per_s']:>7.3f} | {r['images_per_s']:>6.2f} |"


def _count(tree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def param_counts(model: str) -> dict:
    """Parameter counts of a TiTok preset and its generator from the shapes of their init (``jax.eval_shape``,
    nothing allocated): the whole tokenizer, its parts, stage 1 (no pixel decoder) and the generator."""
    c = presets.MODELS[model]
    parts = {k: _count(v) for k, v in titok.abstract_params(c).items()}
    pixel = parts.get("pixel_decoder", 0) + parts.get("pixel_quantize", 0)
    gen = presets.GENERATORS.get(model)
    return dict(model=model, image_size=c.image_size, tokens=c.num_latent_tokens, total=sum(parts.values()),
                encoder=parts["encoder"] + parts.get("latent_tokens", 0), quantizer=parts.get("quantize", 0),
                decoder=parts["decoder"], pixel_decoder=pixel, stage1=sum(parts.values()) - pixel,
                generator=_count(generator_lib.abstract_params(gen)) if gen is not None else None)  # fmt: skip


PARAMS_HEADER = ("| model | image | tokens | tokenizer | encoder (+latent tokens) | quantizer | decoder | "
                 "pixel decoder (VQGAN) | stage 1 | generator |\n"
                 "|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip


def format_params(r: dict) -> str:
    gen = f"{r['generator']:,}" if r["generator"] is not None else "-"
    return (f"| {r['model']} | {r['image_size']} | {r['tokens']} | {r['total']:,} | {r['encoder']:,} | "
            f"{r['quantizer']:,} | {r['decoder']:,} | {r['pixel_decoder']:,} | {r['stage1']:,} | {gen} |")  # fmt: skip
