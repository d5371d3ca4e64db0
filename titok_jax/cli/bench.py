"""``titok-bench``: inference throughput of the full-size models (``titok_jax.benchmarks.inference``).

titok-bench                                                  # CPU: batch 8, float32
titok-bench --models=titok_b64 --rows=generate,generate_decode --dtype=bfloat16 --batch=256
titok-bench --pixel_metrics                                  # PSNR/SSIM: host float64 vs on-device jit
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
from absl import app, flags

from titok_jax.benchmarks import inference, pixel_metrics
from titok_jax.cli import common
from titok_jax.config import presets

flags.DEFINE_list("models", list(inference.MODELS), "Model presets (with generators).")
flags.DEFINE_list("rows", list(inference.ROWS), "Tasks to time.")
flags.DEFINE_integer("batch", None, "Batch for every task (default: 8 on CPU, GPU_BATCH on an accelerator).")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Compute dtype (default: float32 on CPU, bfloat16 else).")
flags.DEFINE_integer("iters", 3, "Timed calls per task (median reported).")
flags.DEFINE_integer("peak_n", None, "Matmul size for the peak (default 2048 CPU, 8192 GPU).")
flags.DEFINE_string("json", None, "Also write the results as JSON to this file.")
flags.DEFINE_bool(
    "pixel_metrics",
    False,
    "Instead: time PSNR + SSIM of batches of 32 at 256 px, the float64 NumPy "
    "oracle on the host vs the jitted versions on the device, extrapolated to 50,000 images.",
)
FLAGS = flags.FLAGS


def main(argv) -> None:
    del argv
    if FLAGS.pixel_metrics:
        res = pixel_metrics.measure(batches=FLAGS.iters)
        print(json.dumps(res, indent=2), flush=True)
        if FLAGS.json:
            with open(FLAGS.json, "w") as f:
                json.dump(res, f, indent=2)
        return
    bad = [m for m in FLAGS.models if m not in presets.GENERATORS] + [r for r in FLAGS.rows if r not in inference.ROWS]
    if bad:
        raise app.UsageError(f"unknown model/task {bad}; models: {sorted(presets.GENERATORS)}; tasks: {inference.ROWS}")
    dev = jax.devices()[0]
    on_cpu = dev.platform == "cpu"
    dtype = FLAGS.dtype or ("float32" if on_cpu else "bfloat16")
    batch = {r: (FLAGS.batch or (8 if on_cpu else inference.GPU_BATCH[r])) for r in inference.ROWS}
    device = f"{dev.platform} {getattr(dev, 'device_kind', '')} x{jax.device_count()}".strip()
    print(f"bench on {device}, {dtype}, iters {FLAGS.iters}", flush=True)
    peak = inference.matmul_peak(jnp.float32 if dtype == "float32" else jnp.bfloat16,
                                 FLAGS.peak_n or (2048 if on_cpu else 8192))  # fmt: skip
    print(f"  matmul peak: {peak / 1e12:.3f} TFLOP/s", flush=True)
    results = []
    for m in FLAGS.models:
        results += inference.bench_model(m, FLAGS.rows, batch, dtype, FLAGS.iters)
    print(inference.format_table(results, peak, f"{device}, {dtype}"), flush=True)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump({"device": device, "dtype": dtype, "peak_flops": peak, "results": results}, f, indent=2)


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
