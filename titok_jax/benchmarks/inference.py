"""Inference benchmark: tokenize, detokenize and generate with the full-size TiTok models (random weights).

  titok-bench                                                  # CPU: batch 8, float32
  titok-bench --models=titok_b64 --rows=generate,generate_decode --dtype=bfloat16 --batch=256

Prints one table row per (model, task): images/s, milliseconds per batch, FLOPs per image (from
XLA's cost analysis of the compiled program; for the sampler, one generator pass times the passes
the official schedule makes), the achieved FLOP/s and MFU — the fraction of a large-matmul peak
measured in the same run on the same device and dtype (so MFU is relative to what this machine
really sustains, not a datasheet number). Tasks:

* ``tokenize``: images [B, 256, 256, 3] -> ids (encoder + quantizer);
* ``detokenize``: ids -> 256x256 pixels (ViT decoder; legacy models: + the VQGAN pixel decoder);
* ``generate``: class labels -> ids with the official sampler settings of the model (steps,
  guidance schedule, temperature; ``titok_jax.sampling.SamplingConfig.official``), one jit;
* ``generate_decode``: the same with ``decode_tokens`` fused after the sampling loop (uint8 pixels).

Timing: one warm-up call (compilation is reported separately), then ``--iters`` timed calls, each
waited on with ``block_until_ready``. Default batch: 8 on CPU, on an accelerator per task
(``GPU_BATCH``) unless ``--batch`` is given. Imports no TensorFlow, no grain/orbax: it runs on a
bare accelerator machine with jax, flax, optax, ml-collections and numpy.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from titok_jax.config import presets
from titok_jax.models import generator as gen_lib
from titok_jax.models import titok
from titok_jax.models.layers import DTYPES
from titok_jax.sampling import guidance_schedule, make_sample_fn

MODELS = ("titok_s128", "titok_b64", "titok_l32")
ROWS = ("tokenize", "detokenize", "generate", "generate_decode")
GPU_BATCH = {"tokenize": 256, "detokenize": 128, "generate": 512, "generate_decode": 128}


def _block(x):
    return jax.tree.map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def _flops(compiled) -> float:
    try:
        ca = compiled.cost_analysis()
    except Exception:  # some backends have no cost model
        return float("nan")
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", float("nan")))


def time_fn(fn: Callable, args, iters: int) -> Dict[str, float]:
    """Compile (timed), warm up once, then time ``iters`` calls."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    _block(compiled(*args))
    times = []
    for _ in range(iters):
        t1 = time.perf_counter()
        _block(compiled(*args))
        times.append(time.perf_counter() - t1)
    return {"compile_s": compile_s, "seconds": float(np.median(times)), "flops": _flops(compiled)}


def matmul_peak(dtype, n: int, iters: int = 5) -> float:
    """Sustained FLOP/s of an n x n x n matmul chain in ``dtype`` on the default device."""
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n), dtype)
    b = jax.random.normal(k2, (n, n), dtype)
    reps = 8

    def chain(a, b):
        def body(_, x):
            return (x @ b) * jnp.asarray(1e-3, dtype)

        return jax.lax.fori_loop(0, reps, body, a)

    r = time_fn(chain, (a, b), iters)
    return 2.0 * n**3 * reps / r["seconds"]


def _official_passes(sampling) -> int:
    """Generator forward passes (in units of batch B) the official sampler makes: two (conditional +
    unconditional) at every step whose guidance scale is non-zero, else one (official_titok.md 7.5)."""
    return int(np.sum(np.where(guidance_schedule(sampling) != 0, 2, 1)))


def bench_model(name: str, rows, batch: Dict[str, int], dtype: str, iters: int, seed: int = 0) -> List[Dict]:
    dt = DTYPES[dtype]
    tcfg = presets.MODELS[name]
    tok = titok.TiTok(tcfg, dtype=dt)
    key = jax.random.key(seed)
    needs_tokenizer = any(r in rows for r in ("tokenize", "detokenize", "generate_decode"))
    tparams = jax.jit(lambda r: titok.init_params(tcfg, r, dt))(key) if needs_tokenizer else None
    out = []
    size, k, seq = tcfg.image_size, tcfg.codebook_size, tcfg.num_latent_tokens

    def record(row, b, r, flops_per_image=None):
        fpi = r["flops"] / b if flops_per_image is None else flops_per_image
        ips = b / r["seconds"]
        row_out = dict(model=name, task=row, batch=b, dtype=dtype, images_per_s=ips, ms_per_batch=1e3 * r["seconds"])
        out.append(dict(row_out, compile_s=r["compile_s"], gflop_per_image=fpi / 1e9))
        print(f"  {name:11s} {row:16s} batch {b:4d}: {b / r['seconds']:9.2f} img/s", flush=True)

    if "tokenize" in rows:
        b = batch["tokenize"]
        x = jax.random.uniform(jax.random.key(1), (b, size, size, 3), jnp.float32)

        def tokenize(p, x):
            return tok.apply({"params": p}, x, method=tok.encode)[1]["ids"]

        record("tokenize", b, time_fn(tokenize, (tparams, x), iters))
    if "detokenize" in rows:
        b = batch["detokenize"]
        ids = jax.random.randint(jax.random.key(2), (b, seq), 0, k, jnp.int32)

        def detokenize(p, ids):
            return tok.apply({"params": p}, ids, method=tok.decode_tokens)

        record("detokenize", b, time_fn(detokenize, (tparams, ids), iters))
    gen_rows = [r for r in ("generate", "generate_decode") if r in rows]
    if gen_rows:
        gcfg = presets.GENERATORS[name]
        gen = gen_lib.build(gcfg, dt)
        gparams = jax.jit(lambda r: gen_lib.init_params(gcfg, r, dt))(jax.random.key(3))
        sampling = presets.SAMPLING[name]
        passes = _official_passes(sampling)
        for row in gen_rows:
            b = batch[row]
            labels = jnp.arange(b, dtype=jnp.int32) % gcfg.condition_num_classes
            # FLOPs of one generator pass at batch b (XLA counts a loop body once, so the sampler's
            # total is derived from the official pass count instead of the loop's cost analysis).
            ids0 = jnp.full((b, seq), gcfg.mask_token_id, jnp.int32)
            no_drop = jnp.zeros((b,), bool)
            fwd = jax.jit(lambda p, i, lab, d: gen.apply({"params": p}, i, lab, d)).lower(
                gparams, ids0, labels, no_drop
            )
            fpi = _flops(fwd.compile()) / b * passes
            if row == "generate":
                fn = make_sample_fn(gen, sampling)
                r = time_fn(lambda gp, lab, rng: fn(gp, lab, rng)[0], (gparams, labels, jax.random.key(4)), iters)
            else:
                fn = make_sample_fn(gen, sampling, tok)
                ids1 = jax.random.randint(jax.random.key(2), (b, seq), 0, k, jnp.int32)
                dec = jax.jit(lambda p, i: tok.apply({"params": p}, i, method=tok.decode_tokens))
                fpi += _flops(dec.lower(tparams, ids1).compile()) / b
                args = (gparams, labels, jax.random.key(4), tparams)
                r = time_fn(lambda gp, lab, rng, tp: fn(gp, lab, rng, tp), args, iters)
            record(row, b, r, fpi)
    return out


def format_table(results: List[Dict], peak: float, device: str) -> str:
    head = f"device: {device}; matmul peak measured: {peak / 1e12:.2f} TFLOP/s"
    cols = ("model", "task", "batch", "dtype", "img/s", "ms/batch", "GFLOP/img", "TFLOP/s", "MFU", "compile s")
    lines = [head, "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in results:
        achieved = r["gflop_per_image"] * 1e9 * r["images_per_s"]
        lines.append(
            f"| {r['model']} | {r['task']} | {r['batch']} | {r['dtype']} | {r['images_per_s']:.2f} | "
            f"{r['ms_per_batch']:.1f} | {r['gflop_per_image']:.1f} | {achieved / 1e12:.3f} | "
            f"{achieved / peak:.1%} | {r['compile_s']:.1f} |"
        )
    return "\n".join(lines)
