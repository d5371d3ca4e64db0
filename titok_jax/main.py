"""Train TiTok: run the stages a config lists, each resumable and skipped when complete.

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

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config, e.g. configs/titok_b64.py.", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs of every stage.")
flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator host:port (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "jax.distributed: number of processes.")
flags.DEFINE_integer("process_id", None, "jax.distributed: index of this process.")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection (TPU pods, SLURM).")
flags.DEFINE_integer("max_steps", None, "Stop each stage after this many steps in this invocation (smoke tests).")
FLAGS = flags.FLAGS


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
    for name in stages:
        stages_lib.make_stage(name, config)  # validates the model/stage combination
    data_lib.make_source(config.data, train=True)  # missing/empty data fails here, before compiling
    data_lib.make_source(config.data, train=False)
    if "stage1" in stages and "teacher" not in stages and not stages_lib.stage_finished(workdir, "teacher"):
        stages_lib.check_teacher(config, workdir)
    for name in stages:
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
    for name in config.stages:
        summaries.append(loop.train_stage(stages_lib.make_stage(name, config), config, workdir, mesh, max_steps))
        if "stopped_at" in summaries[-1]:
            break
    return summaries


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)  # library chatter (orbax, jax); our own messages are printed
    config = _CONFIG.value
    if config is None or not FLAGS.workdir:
        raise app.UsageError("--config and --workdir are required")
    import jax

    if FLAGS.coordinator_address or FLAGS.distributed:
        kw = {}
        if FLAGS.coordinator_address:
            kw = dict(coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                      process_id=FLAGS.process_id)  # fmt: skip
        jax.distributed.initialize(**kw)
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
