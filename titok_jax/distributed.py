"""Multi-process start-up shared by every command line: JAX's own distributed runtime, nothing else.

Each command that can run on several hosts calls ``define_flags()`` next to its own absl flags and
``initialize(FLAGS)`` before touching a device. Either the coordinator is given explicitly
(``--coordinator_address=host:port --num_processes=N --process_id=i``, e.g. by ``launch/local.sh``) or
``--distributed`` lets ``jax.distributed.initialize()`` discover it (Cloud TPU VM pods, SLURM).
"""

from __future__ import annotations


def define_flags() -> None:
    """Define --coordinator_address, --num_processes, --process_id and --distributed (once)."""
    from absl import flags

    if "coordinator_address" in flags.FLAGS:
        return
    flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator host:port (multi-process runs).")
    flags.DEFINE_integer("num_processes", None, "jax.distributed: number of processes.")
    flags.DEFINE_integer("process_id", None, "jax.distributed: index of this process.")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection (TPU pods, SLURM).")


def initialize(FLAGS) -> None:  # noqa: N803
    """Start JAX's distributed runtime when the flags ask for it (a no-op for single-process runs)."""
    if not (FLAGS.coordinator_address or FLAGS.distributed):
        return
    import jax

    kw = {}
    if FLAGS.coordinator_address:
        if FLAGS.num_processes is None or FLAGS.process_id is None:
            raise ValueError("--coordinator_address needs --num_processes and --process_id")
        kw = dict(coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                  process_id=FLAGS.process_id)  # fmt: skip
    jax.distributed.initialize(**kw)


def run_step_cli(run_fn, config, FLAGS) -> None:  # noqa: N803
    """Body of a step's command line (pretokenize, linear_probe): start the runtime, run
    ``run_fn(config, FLAGS.workdir)``, exit 2 with the message on bad input, and print the summary
    (process 0)."""
    import json
    import sys

    initialize(FLAGS)
    import jax

    try:
        summary = run_fn(config, FLAGS.workdir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() == 0:
        print("summary: " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}))
