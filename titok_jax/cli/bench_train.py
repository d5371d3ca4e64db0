"""``titok-bench-train``: train-step throughput of the pure step functions (``titok_jax.benchmarks.train_step``).

titok-bench-train [--models=titok_tiny,titok_b64] [--stages=stage1,stage2] [--batch=8] [--steps=3] [--remat]
                  [--memory_limit_gb=20]
titok-bench-train --params --models=titok_b64,titok_l64_512   (parameter counts only, nothing computed)
"""

from __future__ import annotations

import jax
from absl import flags

from titok_jax.benchmarks import train_step
from titok_jax.cli import common

flags.DEFINE_list("models", ["titok_tiny", "titok_b64"], "Model presets.")
flags.DEFINE_list("stages", ["stage1", "stage2"], "Stages to time.")
flags.DEFINE_integer("batch", 8, "Global batch size.")
flags.DEFINE_integer("steps", 3, "Timed steps (after one warm-up step).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_bool("remat", False, "Rematerialise the transformer blocks (config.remat).")
flags.DEFINE_float("memory_limit_gb", 0, "Compile only, do not run, rows whose XLA memory plan exceeds this (0 = off).")
flags.DEFINE_bool("params", False, "Print the parameter counts of --models (from jax.eval_shape) and exit.")
FLAGS = flags.FLAGS


def main(argv) -> None:
    del argv
    if FLAGS.params:
        print(train_step.PARAMS_HEADER)
        for model in FLAGS.models:
            print(train_step.format_params(train_step.param_counts(model)), flush=True)
        return
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; dtype {FLAGS.dtype}", flush=True)
    print(train_step.HEADER)
    print("|" + "|".join("-" * len(c) for c in train_step.HEADER.split("|")[1:-1]) + "|", flush=True)
    for model in FLAGS.models:
        for stage in FLAGS.stages:
            row = train_step.bench(model, stage, FLAGS.batch, FLAGS.steps, FLAGS.dtype, FLAGS.remat,
                                   FLAGS.memory_limit_gb)  # fmt: skip
            print(train_step.format_row(row), flush=True)


def run() -> None:
    common.run(main)


if __name__ == "__main__":
    run()
