"""What every command line shares: the flags' convention, the distributed start, errors -> exit codes.

Convention: absl flags with underscores; ``--config`` is a config file (``configs/<model>.py[:arg]``,
every field overridable with ``--config.<key>=value``), ``--workdir`` a run directory,
``--checkpoint`` an Orbax params directory, ``--weights`` an official weight file, a hub folder or a
Hugging Face hub name (``hf:ORG/NAME``; ``titok_jax.porting.hub``). The config is parsed once, here
(``run_config()``), into a typed ``RunConfig``; without ``--config`` the ``config.json`` of the
weights says which model it is. ``--compilation_cache=DIR`` (every command) turns on JAX's persistent
compilation cache.

Exit codes (``titok_jax.errors``): 0 success; 1 usage (a missing or unknown flag); 2 bad input (a
config value, file, dataset or weights that cannot be used; one ``error:`` line says what and what
to do); 3 training error (a non-finite loss); 143 preempted (a stop signal was honoured after a
checkpoint: rerun the same command to resume).

XLA's CPU matmul backend: every command chooses ``titok_jax.parallel.CPU_MATMUL_DEFAULT`` before JAX
computes, unless ``XLA_FLAGS`` already names ``--xla_cpu_experimental_ynn_fusion_type`` (yours wins);
commands that define ``--cpu_matmul`` (``define_cpu_matmul``) let it choose.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import jax
from absl import app, flags
from ml_collections import config_flags

from titok_jax import errors, logs, parallel
from titok_jax.api import weights as weights_lib
from titok_jax.config.run import RunConfig, parse

FLAGS = flags.FLAGS
log = logging.getLogger("titok_jax.cli")
flags.DEFINE_string("compilation_cache", None, "Directory of JAX's persistent compilation cache (opt-in): later "
                    "runs reuse the compiled programs. Same as the JAX_COMPILATION_CACHE_DIR variable.")  # fmt: skip


def define_config(help_text: str = "Config file, e.g. configs/titok_b64.py[:arg]; override fields with "
                  "--config.<key>=value. Optional when the weights are a hub repo or folder whose config.json "
                  "says which model they are.") -> None:  # fmt: skip
    if "config" not in FLAGS:
        config_flags.DEFINE_config_file("config", None, help_text, lock_config=True)


def define_workdir(help_text: str = "Run directory (checkpoints, logs and outputs of every stage).") -> None:
    if "workdir" not in FLAGS:
        flags.DEFINE_string("workdir", None, help_text)


def define_distributed() -> None:
    """--coordinator_address, --num_processes, --process_id (explicit) or --distributed (auto-detect)."""
    if "coordinator_address" in FLAGS:
        return
    flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator host:port (multi-process runs).")
    flags.DEFINE_integer("num_processes", None, "jax.distributed: number of processes.")
    flags.DEFINE_integer("process_id", None, "jax.distributed: index of this process.")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with auto-detection (TPU pods, SLURM).")


def define_cpu_matmul() -> None:
    """--cpu_matmul: XLA's CPU matmul backend for this run (``titok_jax.parallel.choose_cpu_matmul``)."""
    if "cpu_matmul" not in FLAGS:
        flags.DEFINE_enum("cpu_matmul", None, list(parallel.CPU_MATMUL_CHOICES), "XLA's CPU matmul backend "
                          f"(default: {parallel.CPU_MATMUL_DEFAULT} unless XLA_FLAGS names "
                          f"{parallel.CPU_MATMUL_FLAG}; this flag replaces that).")  # fmt: skip


def initialize_distributed() -> None:
    """Start JAX's distributed runtime when the flags ask for it (a no-op for single-process runs)."""
    if "coordinator_address" not in FLAGS or not (FLAGS.coordinator_address or FLAGS.distributed):
        return
    kw = {}
    if FLAGS.coordinator_address:
        if FLAGS.num_processes is None or FLAGS.process_id is None:
            raise app.UsageError("--coordinator_address needs --num_processes and --process_id")
        kw = dict(coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes,
                  process_id=FLAGS.process_id)  # fmt: skip
    jax.distributed.initialize(**kw)


def run_config(tokenizer_weights: Optional[str] = None, generator_weights: Optional[str] = None) -> RunConfig:
    """The ``--config`` flag, parsed once into a typed ``RunConfig``; without it, the model-only
    ``RunConfig`` that the ``config.json`` of the given weights (hub repo or folder) describes."""
    if FLAGS.config is not None:
        return parse(FLAGS.config)
    if not (tokenizer_weights or generator_weights):
        raise app.UsageError("--config is required (e.g. --config=configs/titok_b64.py) unless the weights are a "
                             "hub repo or folder whose config.json says which model they are")  # fmt: skip
    run = weights_lib.run_from_weights(tokenizer_weights, generator_weights)
    log.info("model from the config.json of %s: %s", tokenizer_weights or generator_weights, run.model_name)
    return run


def enable_compilation_cache(directory: Optional[str]) -> None:
    """JAX's persistent compilation cache in ``directory`` (every compiled program is kept)."""
    if not directory:
        return
    path = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    log.info("persistent compilation cache: %s", path)


def require(*names: str) -> None:
    missing = [n for n in names if FLAGS[n].value in (None, "")]
    if missing:
        raise app.UsageError(f"missing required flag(s): {', '.join('--' + n for n in missing)}")


def one_of(*names: str) -> str:
    """The one flag of ``names`` that is set (usage error unless exactly one is)."""
    given = [n for n in names if FLAGS[n].value not in (None, "")]
    if len(given) != 1:
        raise app.UsageError(f"give exactly one of {', '.join('--' + n for n in names)}")
    return given[0]


def print_summary(summaries: Iterable[Dict[str, Any]]) -> None:
    """The summaries of a command as JSON lines (process 0)."""
    if jax.process_index() != 0:
        return
    print("summary:", flush=True)
    for s in summaries:
        rounded = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}
        print("  " + json.dumps(rounded, default=str), flush=True)


def _guarded(main: Callable[[Sequence[str]], Optional[int]]) -> Callable[[Sequence[str]], Optional[int]]:
    def wrapped(argv):
        # Before anything in JAX computes (XLA reads XLA_FLAGS once, at its first backend).
        parallel.choose_cpu_matmul(FLAGS.cpu_matmul if "cpu_matmul" in FLAGS else None)
        logs.setup()
        try:
            enable_compilation_cache(FLAGS.compilation_cache)
            initialize_distributed()
            return main(argv)
        except app.UsageError:
            raise
        except errors.Preempted as e:
            print(f"preempted: {e}", file=sys.stderr, flush=True)
            sys.exit(errors.EXIT_PREEMPTED)
        except errors.TrainingError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(errors.EXIT_TRAINING_ERROR)
        except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            sys.exit(errors.EXIT_BAD_INPUT)

    return wrapped


def run(main: Callable[[Sequence[str]], Optional[int]]) -> None:
    """``absl.app.run`` with the error -> exit code mapping of the module docstring. Config-flag
    errors (a missing file, an unknown ``--config.`` key, an unknown preset) also exit 2 with one
    ``error:`` line."""
    app.run(_guarded(main), flags_parser=_parse_flags)


def _parse_flags(argv: Sequence[str]):
    _check_config_path(argv)
    try:
        return FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        print(f"error: {_flag_error_text(e, argv)}", file=sys.stderr, flush=True)
        print(f"Pass --help to see the flags of {os.path.basename(argv[0])}.", file=sys.stderr, flush=True)
        usage = isinstance(e, flags.UnrecognizedFlagError) and not str(e).startswith(
            "Unknown command line flag 'config."
        )
        sys.exit(errors.EXIT_USAGE if usage else errors.EXIT_BAD_INPUT)


def _check_config_path(argv: Sequence[str]) -> None:
    """A missing ``--config`` file is one ``error:`` line (ml_collections would defer it to a traceback)."""
    for i, a in enumerate(argv):
        value = a.split("=", 1)[1] if a.startswith("--config=") else (argv[i + 1] if a == "--config" and
                                                                      i + 1 < len(argv) else None)  # fmt: skip
        if value is not None:
            path = value.split(":", 1)[0]
            if not os.path.isfile(path):
                print(f"error: config file not found: {path} (give a file such as configs/titok_b64.py)",
                      file=sys.stderr, flush=True)  # fmt: skip
                sys.exit(errors.EXIT_BAD_INPUT)


def _flag_error_text(e: BaseException, argv: Sequence[str]) -> str:
    """One line for a flag error: the innermost cause (ml_collections wraps config errors in tracebacks)."""
    inner = e
    while (inner.__cause__ or inner.__context__) is not None:
        inner = inner.__cause__ or inner.__context__
    outer = str(e)
    where = outer[len("flag ") :].split(": ", 1)[0] if outer.startswith("flag --") else ""
    if isinstance(inner, (KeyError, AttributeError)):  # an unknown --config.<key>: name the argument and a hint
        messages, c = [], e
        while c is not None:
            if isinstance(c, KeyError) and c.args and isinstance(c.args[0], str):
                messages.append(c.args[0])
            c = c.__cause__ or c.__context__
        lines = [t.strip() for t in max(messages or [str(inner)], key=len).splitlines() if t.strip()]
        key = lines[0].strip("'\"") if lines else "?"
        args = [a.split("=", 1)[0] for a in argv if a.startswith("--config.") and key in a.split("=", 1)[0].split(".")]
        hint = f" ({lines[1][0].lower() + lines[1][1:]})" if len(lines) > 1 else ""
        return f"{', '.join(args) or '--config'}: unknown config key {key!r}{hint}"
    text = (
        " ".join(t.strip() for t in str(inner).splitlines() if t.strip()) if inner is not e else outer.splitlines()[0]
    )
    return f"{where}: {text}" if where else text
