"""``titok-bench``: inference throughput of the full-size models (``titok_jax.benchmarks.inference``).

titok-bench                                                  # CPU: batch 8, float32
titok-bench --models=titok_b64 --rows=generate,generate_decode --dtypes=bfloat16 --batch=256
titok-bench --compare_official=PATH_TO_1D_TOKENIZER --official_python=PATH_TO_TORCH_VENV/bin/python
titok-bench --pixel_metrics                                  # PSNR/SSIM: host float64 vs on-device jit

Prints a header (device, processor, threads, CPU matmul backend, load average), then each table row as
soon as it is measured; ``--json`` rewrites the file after every row. With ``--compare_official`` the
official PyTorch models run on the same rows, batch and threads, alternating with ours
(``titok_jax.benchmarks.compare``), and the table gives both and the ratio.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
from absl import app, flags

from titok_jax.benchmarks import common as bench_common
from titok_jax.benchmarks import compare, inference, pixel_metrics
from titok_jax.cli import common
from titok_jax.config import presets

flags.DEFINE_list("models", list(inference.MODELS), "Model presets (with generators).")
flags.DEFINE_list("rows", list(inference.ROWS), "Tasks to time.")
flags.DEFINE_integer("batch", None, "Batch for every task (default: 8 on CPU, GPU_BATCH on an accelerator).")
flags.DEFINE_list("dtypes", None, "Compute dtypes, each a full table (default: float32 on CPU; bfloat16,float32 "
                  "on an accelerator).")  # fmt: skip
flags.DEFINE_integer("iters", 3, "Timed calls per task after one warm-up call (the median is reported).")
flags.DEFINE_integer("peak_n", None, "Matmul size for the peak (default 2048 CPU, 8192 GPU).")
flags.DEFINE_string("json", None, "Also write the results as JSON to this file (rewritten after every row).")
flags.DEFINE_string("compare_official", None, "A checkout of bytedance/1d-tokenizer: time its PyTorch models on "
                    "the same rows, alternating with ours (CPU, float32).")  # fmt: skip
flags.DEFINE_string("official_python", sys.executable, "Python with torch and the official code's imports.")
flags.DEFINE_integer("threads", None, "Pin this process (and the official one) to the first N CPUs "
                     "(default: all this process may use).")  # fmt: skip
common.define_cpu_matmul()
flags.DEFINE_bool(
    "pixel_metrics",
    False,
    "Instead: time PSNR + SSIM of batches of 32 at 256 px, the float64 NumPy "
    "oracle on the host vs the jitted versions on the device, extrapolated to 50,000 images.",
)
FLAGS = flags.FLAGS


def _configure_cpu() -> None:
    """CPU affinity, before JAX creates its CPU client (the matmul backend: ``common.run``)."""
    if FLAGS.threads:
        cpus = sorted(os.sched_getaffinity(0))
        if FLAGS.threads > len(cpus):
            raise app.UsageError(f"--threads={FLAGS.threads}: this process may only use {len(cpus)} CPUs")
        os.sched_setaffinity(0, cpus[: FLAGS.threads])


def main(argv) -> None:
    del argv
    _configure_cpu()  # before the first JAX computation (importing jax does not start a backend)
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
    on_cpu = jax.devices()[0].platform == "cpu"
    dtypes = FLAGS.dtypes or (["float32"] if on_cpu else ["bfloat16", "float32"])
    if any(d not in ("float32", "bfloat16") for d in dtypes):
        raise app.UsageError(f"--dtypes: float32 and/or bfloat16, got {dtypes}")
    if FLAGS.compare_official and (not on_cpu or dtypes != ["float32"]):
        raise app.UsageError("--compare_official runs the official float32 CPU code: use it on a CPU with float32")
    batch = {r: (FLAGS.batch or (inference.CPU_BATCH if on_cpu else inference.GPU_BATCH[r])) for r in inference.ROWS}
    for line in bench_common.header_lines():
        print(line, flush=True)
    print(f"iters: {FLAGS.iters} timed calls per row after one warm-up call (median); compile time apart", flush=True)
    out = {"header": bench_common.header_lines(), "iters": FLAGS.iters, "peaks": {}, "results": [],
           "comparison": []}  # fmt: skip

    def save():
        if FLAGS.json:
            with open(FLAGS.json, "w") as f:
                json.dump(out, f, indent=2)

    official = None
    if FLAGS.compare_official:
        official = compare.Official(FLAGS.compare_official, FLAGS.official_python, bench_common.cpu_threads())
        out["official"] = official.info
        print(compare.table_head(official.info), flush=True)
    try:
        for dtype in dtypes:
            peak = None
            if not official:
                peak = bench_common.matmul_peak(jnp.float32 if dtype == "float32" else jnp.bfloat16,
                                                FLAGS.peak_n or (2048 if on_cpu else 8192))  # fmt: skip
                out["peaks"][dtype] = peak
                print(f"\n{dtype}: matmul peak measured {peak / 1e12:.3f} TFLOP/s", flush=True)
                print(inference.table_head(), flush=True)
            for m in FLAGS.models:
                if official:
                    official.load(m, FLAGS.rows, batch, presets.SAMPLING[m])
                for task in inference.tasks(m, FLAGS.rows, batch, dtype):
                    if official:
                        r = compare.result(task, compare.time_both(task, official, FLAGS.iters))
                        out["comparison"].append(r)
                        print(compare.table_row(r), flush=True)
                    else:
                        r = inference.result(task, bench_common.time_calls(task.call, FLAGS.iters), peak)
                        out["results"].append(r)
                        print(inference.table_row(r), flush=True)
                    save()
    finally:
        if official:
            official.close()
    print(f"done; {bench_common.load_average()}", flush=True)
    save()


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
