"""What makes a training stage survive real life: checkpoints that restore, stops that agree, a final hand-off
that is whole or absent.

* ``StageCheckpoints``: the stage's Orbax ``CheckpointManager`` (async, keep-N). Every checkpoint holds
  the train state, the data-loader position (one state for all processes: grain's ``{'next_index': k}``
  counts global batches, so it is the same everywhere) and a per-array integrity code of the state.
  A save first checks that the state is finite (and its weights' squared norm does not overflow), so
  no committed checkpoint holds diverged parameters. A restore verifies the codes and falls back to
  the newest step that restores, moving damaged steps to ``<stage>/damaged_checkpoints/``.
* ``StopSignal``: SIGTERM/SIGINT set a flag on the process that receives them. The loop feeds the
  flag into every step, whose metrics carry its maximum over all processes, so every process learns
  of a stop at the same step (read one step late, like the other metrics) and all save the same step
  and exit 143 together -- without an extra host round trip.
* ``write_final``: the stage's hand-off params go to ``final.partial/``, then are renamed to ``final/``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from titok_jax import checkpoint, parallel
from titok_jax import workdir as workdir_lib
from titok_jax.errors import TrainingError

log = logging.getLogger(__name__)

STOP_KEY = "_stop_requested"
WEIGHTS = ("params", "ema_params", "disc_params")  # state fields whose squared norm must stay finite


class StopSignal:
    """SIGTERM/SIGINT -> ``self.signal`` (a second signal interrupts at once); see the module docstring."""

    def __init__(self):
        self.signal: Optional[int] = None
        self._old: Dict[int, Any] = {}
        self._flags: Dict[Tuple[int, Any], jax.Array] = {}

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("received signal %d: saving a checkpoint after the current step, then exiting", signum)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)

    def device_flag(self, sharding) -> jax.Array:
        """This process's flag as its shard of a global int32 vector (one entry per device)."""
        value = int(self.signal is not None)
        key = (value, sharding)
        if key not in self._flags:
            local = np.full((len(sharding.addressable_devices),), value, np.int32)
            self._flags[key] = jax.make_array_from_process_local_data(sharding, local)
        return self._flags[key]

    def any_process(self) -> bool:
        """Whether any process got a signal (a collective: every process must call it)."""
        return parallel.any_process(self.signal is not None)


def with_stop_flag(train_step):
    """``train_step`` with one more input, the stop flags, whose maximum lands in the metrics."""

    def step(state, batch, aux, stop):
        state, metrics = train_step(state, batch, aux)
        return state, {**metrics, STOP_KEY: jnp.max(stop)}

    return step


def loader_state(data: Dict[str, Any]) -> Dict[str, Any]:
    """The loader position saved with a checkpoint (also the layouts of older versions)."""
    if "loader" in data:
        return data["loader"]
    if "loaders" in data:  # {process index: state}, identical on every process; written by process 0
        return next(iter(data["loaders"].values()))
    return data


def _weights_norm_sq(state) -> jax.Array:
    trees = [getattr(state, k, None) for k in WEIGHTS]
    leaves = [x for t in trees if t is not None for x in jax.tree.leaves(t)]
    return sum((jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves), jnp.float32(0))


def _all_finite(tree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


@jax.jit
def _health(state):
    return checkpoint.code_tree(state), _all_finite(state) & jnp.isfinite(_weights_norm_sq(state))


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


class StageCheckpoints:
    """The Orbax checkpoints of one stage; see the module docstring."""

    def __init__(self, directory: str, keep: int, stage: str):
        self.directory = workdir_lib.path(directory)
        self.stage = stage
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True)
        self.mngr = ocp.CheckpointManager(self.directory, options=options)

    # -- restore ---------------------------------------------------------------------------------------
    def restore(self, target) -> Optional[Tuple[Any, Dict[str, Any], int]]:
        """(state, data, step) of the newest step that restores and passes its checksums, else None when
        there is no checkpoint. Damaged steps are moved aside with a warning naming them."""
        steps = sorted(self.mngr.all_steps(), reverse=True)
        for step in steps:
            problem, out = None, None
            try:
                out = self.mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                      data=ocp.args.JsonRestore()))  # fmt: skip
            except Exception as e:  # TensorStore/Orbax raise many types for missing or truncated files
                problem = _short(e)
            if not parallel.all_processes(problem is None):
                problem = problem or "another process could not read it"
            else:
                data = dict(out.data or {})
                expected = data.get("checksums")
                bad = checkpoint.checksum_mismatches(out.state, expected) if expected else []
                if bad:
                    problem = f"checksum mismatch in {len(bad)} array(s), e.g. {', '.join(bad[:3])}"
                else:
                    if not expected:
                        log.info("[%s] step %d has no checksums (an older checkpoint): not verified", self.stage, step)
                    return out.state, data, step
            aside = self._move_aside(step)
            log.warning("[%s] checkpoint step %d in %s is damaged (%s); moved it to %s and trying the step before it",
                        self.stage, step, self.directory, problem, aside)  # fmt: skip
        if steps:
            raise TrainingError(
                f"[{self.stage}] none of the checkpoints {steps} in {self.directory} restores (each was moved to "
                f"{self.directory.parent / 'damaged_checkpoints'}); rerun to start the stage from its beginning, "
                "or put back copies from a backup"
            )
        return None

    def _move_aside(self, step: int) -> str:
        dest = self.directory.parent / "damaged_checkpoints" / f"{step}-{int(time.time())}"
        if jax.process_index() == 0:
            dest.parent.mkdir(parents=True, exist_ok=True)
            workdir_lib.rename(self.directory / str(step), dest)
        parallel.sync(f"checkpoint_moved_aside_{step}")
        self.mngr.reload()
        return os.fspath(dest)

    # -- save ------------------------------------------------------------------------------------------
    def save(self, step: int, state, loader: Dict[str, Any], summary: Dict[str, Any], what: str) -> None:
        """Save ``state`` as ``step`` (async) after checking it is finite; ``what`` is the lr option to
        name in the error otherwise."""
        codes, finite = jax.device_get(_health(state))
        if not bool(finite):
            raise self.diverged(f"the parameters are not finite (or their norm overflows) after step {step}", what)
        data = {"loader": loader, "summary": summary, "checksums": checkpoint.format_codes(codes)}
        self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)))

    def diverged(self, problem: str, what: str) -> TrainingError:
        """The error for a diverged run, naming the last committed checkpoint (waits for pending saves)."""
        self.mngr.wait_until_finished()
        self.mngr.reload()
        last = self.mngr.latest_step()
        if last is None:
            kept = "No checkpoint of this stage was committed before it, so a rerun starts the stage over"
        else:
            kept = (f"The last checkpoint, step {last} ({self.directory / str(last)}), was checked to be finite and "
                    f"is kept: a rerun resumes from it")  # fmt: skip
        return TrainingError(
            f"[{self.stage}] {problem}: stopping. {kept}. Lower the learning rate (e.g. {what}) and rerun the same "
            "command with --allow_config_change, or check the data"
        )

    def wait(self) -> None:
        self.mngr.wait_until_finished()

    def close(self) -> None:
        self.mngr.wait_until_finished()
        self.mngr.close()


def write_final(fdir: str, params: Any, meta: Dict[str, Any]) -> None:
    """Write the hand-off params to ``fdir + '.partial'``, then rename it to ``fdir`` (every process calls
    this; process 0 cleans and renames). A leftover of a killed run is replaced."""
    partial = fdir + ".partial"
    if jax.process_index() == 0:
        workdir_lib.remove_tree(partial)
        workdir_lib.remove_tree(fdir)
    parallel.sync("final_cleaned")
    checkpoint.save_params(partial, params, meta)
    parallel.sync("final_saved")
    if jax.process_index() == 0:
        workdir_lib.rename(partial, fdir)
    parallel.sync("final_renamed")
