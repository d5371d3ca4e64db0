"""The one training loop every stage plugs into.

Mesh -> data -> abstract state (``jax.eval_shape``) -> shardings -> jitted init (params born
sharded) or exact restore -> jitted, donated step. I/O stays here: data, Orbax checkpoints
(async, keep-N, atomic; the data-iterator position is saved with the state), metrics, image grids,
preemption (SIGTERM/SIGINT save and exit), NaN/Inf detection (stop, keep the last good checkpoint).
Re-running the same command resumes a stage exactly or skips it when complete.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Dict, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from clu import parameter_overview

from titok_jax import checkpoint, parallel
from titok_jax import images as im
from titok_jax import workdir as workdir_lib
from titok_jax.config.run import RunConfig
from titok_jax.errors import Preempted, TrainingError
from titok_jax.train.metrics import MetricWriter, ProfileWindow, Progress
from titok_jax.train.stages import Stage

log = logging.getLogger(__name__)


class _StopFlag:
    def __init__(self):
        self.signal: Optional[int] = None
        self._old = {}

    def __enter__(self):
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

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _stage_seed(run: RunConfig, stage: Stage) -> jax.Array:
    return jax.random.fold_in(jax.random.key(run.seed), sum(map(ord, stage.name)))


def _to_host(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _check_finite(metrics: Dict[str, Any], step: int, last_good: Optional[int]) -> None:
    loss = float(np.asarray(metrics["loss"]))
    if not np.isfinite(loss):
        where = f"step {last_good}" if last_good is not None else "none yet"
        raise TrainingError(
            f"loss is {loss} at step {step}: stopping. The last good checkpoint ({where}) is kept; lower the learning "
            "rate or check the data, then rerun to resume from it."
        )


def _eval(stage, state, batch, aux, eval_fn) -> Dict[str, Any]:
    """Run the stage's pure eval function; the stage turns the host outputs into scalars + a grid."""
    scalars, grid = stage.eval_summary(_to_host(eval_fn(state, batch, aux)))
    return {"scalars": scalars, "grid": grid}


def _fmt_scalars(scalars: Dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in scalars.items())


def train_stage(
    stage: Stage, run: RunConfig, workdir: str, mesh=None, max_steps: Optional[int] = None
) -> Dict[str, Any]:
    """Run (or resume, or skip) one stage; returns its summary (PSNR before/after, steps, time)."""
    done = workdir_lib.read_done(workdir, stage.name)
    if done is not None:
        log.info("[%s] already complete (%s): skipping", stage.name, workdir_lib.done_path(workdir, stage.name))
        return done
    sc = stage.sc
    mesh = mesh or parallel.make_mesh(run.mesh)
    parallel.check_batch_size(sc.batch_size, mesh, f"{sc.name}.batch_size")
    sdir = os.path.abspath(os.path.join(workdir, stage.name))
    os.makedirs(sdir, exist_ok=True)
    is_main = jax.process_index() == 0
    writer = MetricWriter(os.path.join(sdir, "logs"), enabled=is_main)
    t_start = time.time()

    # Data: each process reads its own shard; the global batch is assembled as one jax.Array.
    pidx, pcount = jax.process_index(), jax.process_count()
    loader, eval_loader = stage.loaders(workdir, pidx, pcount)
    b_shard = parallel.batch_sharding(mesh)
    eval_batch = parallel.to_global_array(next(iter(eval_loader)), mesh, b_shard.spec)

    aux = stage.load_aux(workdir)
    aux_shardings = parallel.state_shardings(jax.eval_shape(lambda: aux), mesh)
    aux = jax.device_put(aux, aux_shardings)

    rng = _stage_seed(run, stage)
    abstract = jax.eval_shape(stage.init_state, rng)
    shardings = parallel.state_shardings(abstract, mesh)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)

    options = ocp.CheckpointManagerOptions(
        max_to_keep=sc.keep_checkpoints, create=True, enable_async_checkpointing=True
    )
    mngr = ocp.CheckpointManager(os.path.join(sdir, "checkpoints"), options=options)
    latest = mngr.latest_step()
    total = int(sc.num_steps)
    summary: Dict[str, Any] = {"stage": stage.name}
    if latest is not None:
        restored = mngr.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                data=ocp.args.JsonRestore()))  # fmt: skip
        state = restored.state
        loader.set_state(restored.data["loaders"][str(pidx)] if "loaders" in restored.data else restored.data)
        summary.update(restored.data.get("summary", {}))
        log.info("[%s] resuming from step %d (%s)", stage.name, latest, mngr.directory)
    else:
        state = jax.jit(stage.init_state, out_shardings=shardings)(rng)
        state = jax.device_put(stage.handoff(state, workdir), shardings)
        if is_main:
            shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.params)
            log.info("%s", parameter_overview.get_parameter_overview(shapes, include_stats=False))
    # Eval outputs come back replicated so every process can read them (multi-host safe).
    eval_fn = jax.jit(
        stage.eval_outputs,
        in_shardings=(shardings, b_shard, aux_shardings),
        out_shardings=parallel.replicated(mesh),
    )
    if "eval_before" not in summary:
        ev = _eval(stage, state, eval_batch, aux, eval_fn)
        summary["eval_before"] = ev["scalars"]
        summary.update({f"{k}_before": v for k, v in ev["scalars"].items()})
        if ev["grid"] is not None:
            writer.write_images(int(state.step), {stage.grid_name: ev["grid"]})
        log.info("[%s] eval before training: %s", stage.name, _fmt_scalars(ev["scalars"]))

    step_fn = jax.jit(
        stage.train_step,
        in_shardings=(shardings, b_shard, aux_shardings),
        out_shardings=(shardings, parallel.replicated(mesh)),
        donate_argnums=(0,),
    )
    start = int(jax.device_get(state.step))
    stop_at = total if max_steps is None else min(total, start + max_steps)
    progress = Progress(start, total)
    it = iter(loader)
    last_good = latest
    pending = None  # (step, metrics) of the previous step, read one step late

    def save(step, metrics_now):
        _check_finite(_to_host(metrics_now), step, last_good)
        data_state = {"loaders": {str(pidx): loader.get_state()}, "summary": summary}
        mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))

    profile = ProfileWindow(sc.profile_start, sc.profile_steps, os.path.join(sdir, "logs"), stage.name)
    with _StopFlag() as stop:
        for step in range(start, stop_at):
            profile.before_step(step, state)
            batch = parallel.to_global_array(next(it), mesh, b_shard.spec)
            with jax.profiler.StepTraceAnnotation(stage.name, step_num=step):
                state, metrics = step_fn(state, batch, aux)
            if pending is not None:
                p_step, p_metrics = pending
                host = _to_host(p_metrics)
                _check_finite(host, p_step, last_good)
                if p_step % sc.log_every == 0 or p_step == start + 1:
                    timing = progress.mark(p_step)
                    writer.write_scalars(p_step, {**host, **timing})
                    log.info("%s", Progress.line(stage.name, p_step, total, host, timing))
            pending = (step + 1, metrics)
            done_steps = step + 1
            if done_steps % sc.checkpoint_every == 0 or done_steps == total or stop.signal is not None:
                save(done_steps, metrics)
                last_good = done_steps
            if sc.eval_every and done_steps % sc.eval_every == 0 and done_steps != total:
                ev = _eval(stage, state, eval_batch, aux, eval_fn)
                writer.write_scalars(done_steps, {f"eval_{k}": v for k, v in ev["scalars"].items()})
                if ev["grid"] is not None:
                    writer.write_images(done_steps, {stage.grid_name: ev["grid"]})
                log.info("[%s] step %d: eval %s", stage.name, done_steps, _fmt_scalars(ev["scalars"]))
            if stop.signal is not None:
                mngr.wait_until_finished()
                mngr.close()
                writer.close()
                raise Preempted(f"{stage.name}: saved step {done_steps} after signal {stop.signal}; rerun to resume")
    profile.close(state)
    mngr.wait_until_finished()
    if pending is not None:
        _check_finite(_to_host(pending[1]), pending[0], last_good)
    skipped = loader.stats() if hasattr(loader, "stats") else {}
    if int(jax.device_get(state.step)) < total:  # max_steps stopped early (tests, benchmarks)
        mngr.close()
        writer.close()
        summary["stopped_at"] = int(jax.device_get(state.step))
        return summary

    ev = _eval(stage, state, eval_batch, aux, eval_fn)
    summary.update({f"{k}_after": v for k, v in ev["scalars"].items()})
    summary.update(eval_after=ev["scalars"], steps=total, seconds=time.time() - t_start)
    writer.write_scalars(total, {f"eval_{k}": v for k, v in ev["scalars"].items()})
    if ev["grid"] is not None:
        writer.write_images(total, {stage.grid_name: ev["grid"]})
    if is_main and ev["grid"] is not None:
        im.save_png(ev["grid"], os.path.join(sdir, f"{stage.grid_name}_final.png"))
    before = _fmt_scalars(summary["eval_before"])
    log.info("[%s] done: eval before: %s; after: %s", stage.name, before, _fmt_scalars(ev["scalars"]))
    if skipped and skipped.get("skipped"):
        log.warning("[%s] skipped unreadable images: %s", stage.name, skipped["skipped"])
        summary["skipped_images"] = [list(map(str, s)) for s in skipped["skipped"]]
    # Hand-off checkpoint for the next stages: final (EMA) params in the `port import` format.
    final = stage.final_params(state)
    fdir = workdir_lib.final_dir(workdir, stage.name)
    if not os.path.isdir(fdir):
        checkpoint.save_params(fdir, final, {"stage": stage.name, "step": total, "model_config": _model_meta(stage)})
    mngr.close()
    writer.close()
    if is_main:
        workdir_lib.write_done(workdir, stage.name, summary)
    return summary


def _model_meta(stage) -> Any:
    cfg = getattr(stage, "model_config", None)
    return cfg.to_dict() if cfg is not None else None
