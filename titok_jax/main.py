"""Train TiTok: run the stages a config lists, each resumable and skipped when complete.

Training stages (one loop, ``titok_jax.train``): ``teacher``, ``stage1``, ``stage2``,
``single_stage``, ``generator``. Other steps a config can list, each a ``run(config, workdir)``:
``pretokenize`` (tokens for the generator), ``sample`` (class-conditional samples), ``evaluate``
(rFID / gFID / IS / PSNR / SSIM / codebook usage), ``linear_probe``. A finished step writes
``WORKDIR/<step>/DONE.json`` and is skipped on reruns.

  python -m titok_jax.main --config=configs/demo.py --workdir=out/demo_run
  python -m titok_jax.main --config=configs/titok_b64.py --workdir=runs/b64 \\
      --config.data.data_dir=~/tensorflow_datasets --config.teacher.checkpoint=ckpt/maskgit_vqgan

Re-running the same command resumes wherever it stopped (the last checkpoint of the running stage,
including its data position). Multi-host: start one process per host with JAX's distributed runtime
(``--coordinator_address``/``--num_processes``/``--process_id``, or nothing on TPU pods and SLURM,
where ``jax.distributed.initialize()`` discovers them).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from titok_jax import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config, e.g. configs/titok_b64.py.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs of every stage.")
distributed.define_flags()
flags.DEFINE_integer("max_steps", None, "Stop each stage after this many steps in this invocation (smoke tests).")
FLAGS = flags.FLAGS


# Steps that are not training loops: name -> module whose ``run(config, workdir)`` returns a summary dict.
TASKS = {"pretokenize": "titok_jax.pretokenize", "sample": "titok_jax.sample", "evaluate": "titok_jax.evaluate",
         "linear_probe": "titok_jax.linear_probe"}  # fmt: skip


def _tasks():
    import importlib

    return {name: (lambda c, w, m=mod: importlib.import_module(m).run(c, w)) for name, mod in TASKS.items()}


def preflight(config, workdir: str) -> None:
    """Fail at once, before any compilation, when data, teacher or perceptual weights are missing."""
    from titok_jax import data as data_lib
    from titok_jax.train import stages as stages_lib

    if "stages" not in config:
        raise ValueError(
            f"{config.get('model_name', 'this config')} is a model-only config (for port/reconstruct); training needs "
            "a training config such as configs/titok_b64.py or configs/demo.py"
        )
    stages = list(config.stages)
    tasks = _tasks()
    unknown = [n for n in stages if n not in tasks and n not in stages_lib.STAGES]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown} in config.stages; known: {list(stages_lib.STAGES) + list(tasks)}")
    train_stages = [n for n in stages if n in stages_lib.STAGES]
    for name in train_stages:
        stages_lib.make_stage(name, config)  # validates the model/stage combination
    if any(n != "generator" for n in stages):  # everything but the generator reads images
        data_lib.make_source(config.data, train=True)  # missing/empty data fails here, before compiling
        data_lib.make_source(config.data, train=False)
    if "stage1" in stages and "teacher" not in stages and not stages_lib.stage_finished(workdir, "teacher"):
        stages_lib.check_teacher(config, workdir)
    for name in train_stages:
        sec = config[stages_lib.make_stage(name, config).section or name]
        if sec.get("perceptual_weight") and not sec.get("perceptual_checkpoint"):
            from titok_jax.train.gan_parts import load_perceptual

            load_perceptual(config, sec)  # raises with instructions


def run(config, workdir: str, max_steps=None) -> list:
    import jax

    from titok_jax.train import loop
    from titok_jax.train import sharding as shd
    from titok_jax.train import stages as stages_lib

    preflight(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = shd.make_mesh(tuple(config.mesh))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    print(f"devices: {jax.device_count()} ({jax.process_count()} process(es)), mesh {dict(mesh.shape)}", flush=True)
    summaries = []
    tasks = _tasks()
    for name in config.stages:
        if name in tasks:
            summaries.append(_run_task(name, tasks[name], config, workdir))
            continue
        summaries.append(loop.train_stage(stages_lib.make_stage(name, config), config, workdir, mesh, max_steps))
        if "stopped_at" in summaries[-1]:
            break
    return summaries


def _run_task(name: str, fn, config, workdir: str) -> dict:
    """Run a non-training step once; its DONE.json (written atomically by process 0) marks it finished."""
    import jax

    done = os.path.join(workdir, name, "DONE.json")
    if os.path.exists(done):
        print(f"[{name}] already complete ({done}): skipping", flush=True)
        with open(done) as f:
            return json.load(f)
    summary = dict(fn(config, workdir), stage=name)
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(done), exist_ok=True)
        with open(done + ".tmp", "w") as f:
            json.dump(summary, f, indent=2, default=str)
        os.replace(done + ".tmp", done)
    return summary


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)  # library chatter (orbax, jax); our own messages are printed
    config = _CONFIG.value
    if config is None or not FLAGS.workdir:
        raise app.UsageError("--config and --workdir are required")
    import jax

    distributed.initialize(FLAGS)
    from titok_jax.train.loop import Preempted, TrainingError

    try:
        summaries = run(config, os.path.abspath(os.path.expanduser(FLAGS.workdir)), FLAGS.max_steps)
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        sys.exit(143)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() == 0:
        print("summary:", flush=True)
        for s in summaries:
            print(
                "  " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}), flush=True
            )


if __name__ == "__main__":
    app.run(main)
