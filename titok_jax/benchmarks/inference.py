"""Inference benchmark: tokenize, detokenize and generate with the full-size TiTok models (random weights).

  titok-bench                                                  # CPU: batch 8, float32
  titok-bench --models=titok_b64 --rows=generate,generate_decode --dtypes=bfloat16 --batch=256

One table row per (model, task, dtype): images/s, milliseconds per batch (median of ``--iters`` timed
calls after one warm-up call; compilation is timed apart), FLOPs per image (XLA's cost analysis of
the compiled program; for the sampler, one generator pass times the passes the official schedule
makes), the achieved FLOP/s and MFU -- the fraction of a large-matmul peak measured in the same run
on the same device and dtype (so MFU is relative to what this machine really sustains, not a
datasheet number). Tasks:

* ``tokenize``: images [B, 256, 256, 3] -> ids (encoder + quantizer);
* ``detokenize``: ids -> 256x256 pixels (ViT decoder; legacy models: + the VQGAN pixel decoder);
* ``generate``: class labels -> ids with the official sampler settings of the model (steps,
  guidance schedule, temperature; ``titok_jax.sampling.SamplingConfig.official``), one jit;
* ``generate_decode``: the same with ``decode_tokens`` fused after the sampling loop (uint8 pixels).

``titok_jax.benchmarks.compare`` times the official PyTorch code on the same rows, alternating with
these. Imports no TensorFlow, no grain/orbax: it runs on a bare accelerator machine with jax, flax,
optax, ml-collections and numpy.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from titok_jax.benchmarks import common
from titok_jax.config import presets
from titok_jax.models import generator as gen_lib
from titok_jax.models import titok
from titok_jax.models.layers import DTYPES
from titok_jax.sampling import guidance_schedule, make_sample_fn

MODELS = ("titok_s128", "titok_b64", "titok_l32")
ROWS = ("tokenize", "detokenize", "generate", "generate_decode")
CPU_BATCH = 8
# Default accelerator batches; generation at 125 (= 50,000 ImageNet samples in 400 batches).
GPU_BATCH = {"tokenize": 256, "detokenize": 128, "generate": 125, "generate_decode": 125}


@dataclasses.dataclass
class Task:
    """One compiled row, ready to time: ``call()`` runs the program once and waits for it."""

    model: str
    task: str
    batch: int
    dtype: str
    call: Callable[[], Any]
    compile_s: float
    gflop_per_image: float


def _official_passes(sampling) -> int:
    """Generator forward passes (in units of batch B) the official sampler makes: two (conditional +
    unconditional) at every step whose guidance scale is non-zero, else one (official_titok.md 7.5)."""
    return int(np.sum(np.where(guidance_schedule(sampling) != 0, 2, 1)))


def tasks(name: str, rows: Sequence[str], batch: Dict[str, int], dtype: str, seed: int = 0) -> Iterator[Task]:
    """The rows of one model, compiled one at a time (each when the caller asks for it)."""
    dt = DTYPES[dtype]
    tcfg = presets.MODELS[name]
    tok = titok.TiTok(tcfg, dtype=dt)
    needs_tokenizer = any(r in rows for r in ("tokenize", "detokenize", "generate_decode"))
    tparams = jax.jit(lambda r: titok.init_params(tcfg, r, dt))(jax.random.key(seed)) if needs_tokenizer else None
    size, k, seq = tcfg.image_size, tcfg.codebook_size, tcfg.num_latent_tokens

    def task(row, b, compiled, gflop_per_image=None):
        fpi = compiled["flops"] / b / 1e9 if gflop_per_image is None else gflop_per_image
        return Task(name, row, b, dtype, compiled["call"], compiled["compile_s"], fpi)

    def detokenize(p, ids):
        return tok.apply({"params": p}, ids, method=tok.decode_tokens)

    if "tokenize" in rows:
        b = batch["tokenize"]
        x = jax.random.uniform(jax.random.key(1), (b, size, size, 3), jnp.float32)

        def tokenize(p, x):
            return tok.apply({"params": p}, x, method=tok.encode)[1]["ids"]

        yield task("tokenize", b, common.compile_fn(tokenize, (tparams, x)))
    if "detokenize" in rows:
        b = batch["detokenize"]
        ids = jax.random.randint(jax.random.key(2), (b, seq), 0, k, jnp.int32)
        yield task("detokenize", b, common.compile_fn(detokenize, (tparams, ids)))
    gen_rows = [r for r in ("generate", "generate_decode") if r in rows]
    if not gen_rows:
        return
    gcfg = presets.GENERATORS[name]
    gen = gen_lib.build(gcfg, dt)
    gparams = jax.jit(lambda r: gen_lib.init_params(gcfg, r, dt))(jax.random.key(seed + 3))
    sampling = presets.SAMPLING[name]
    passes = _official_passes(sampling)
    for row in gen_rows:
        b = batch[row]
        labels = jnp.arange(b, dtype=jnp.int32) % gcfg.condition_num_classes
        # FLOPs of one generator pass at batch b (XLA counts a loop body once, so the sampler's
        # total is derived from the official pass count instead of the loop's cost analysis).
        ids0 = jnp.full((b, seq), gcfg.mask_token_id, jnp.int32)
        fwd = jax.jit(lambda p, i, lab, d: gen.apply({"params": p}, i, lab, d)).lower(
            gparams, ids0, labels, jnp.zeros((b,), bool)
        )
        fpi = common.flops(fwd.compile()) / b * passes
        if row == "generate":
            fn = make_sample_fn(gen, sampling)
            compiled = common.compile_fn(lambda gp, lab, rng: fn(gp, lab, rng)[0], (gparams, labels, jax.random.key(4)))
        else:
            fn = make_sample_fn(gen, sampling, tok)
            ids1 = jax.random.randint(jax.random.key(2), (b, seq), 0, k, jnp.int32)
            fpi += common.flops(jax.jit(detokenize).lower(tparams, ids1).compile()) / b
            compiled = common.compile_fn(fn, (gparams, labels, jax.random.key(4), tparams))
        yield task(row, b, compiled, fpi / 1e9)


def result(t: Task, times: List[float], peak: float) -> Dict[str, Any]:
    """The JSON record of a timed task (``peak``: the measured matmul FLOP/s of its dtype)."""
    s = common.median(times)
    achieved = t.gflop_per_image * 1e9 * t.batch / s
    return dict(model=t.model, task=t.task, batch=t.batch, dtype=t.dtype, images_per_s=t.batch / s,
                ms_per_batch=1e3 * s, times_s=times, compile_s=t.compile_s, gflop_per_image=t.gflop_per_image,
                tflop_per_s=achieved / 1e12, mfu=achieved / peak if peak else float("nan"))  # fmt: skip


COLUMNS = ("model", "task", "batch", "dtype", "img/s", "ms/batch", "GFLOP/img", "TFLOP/s", "MFU", "compile s")


def table_head() -> str:
    return "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)


def table_row(r: Dict[str, Any]) -> str:
    return (f"| {r['model']} | {r['task']} | {r['batch']} | {r['dtype']} | {r['images_per_s']:.2f} | "
            f"{r['ms_per_batch']:.1f} | {r['gflop_per_image']:.1f} | {r['tflop_per_s']:.3f} | {r['mfu']:.1%} | "
            f"{r['compile_s']:.1f} |")  # fmt: skip
