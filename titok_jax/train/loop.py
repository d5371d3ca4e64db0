"""The one training loop every stage plugs into.

Mesh -> data -> abstract state (``jax.eval_shape``) -> shardings -> jitted init (params born
sharded) or exact restore -> jitted, donated step. I/O stays here: data, metrics, image grids and
the stage's checkpoints (``titok_jax.train.checkpointing``: async Orbax saves of the state, the
loader position and per-array checksums; restore with fallback past damaged steps; stop signals
agreed on by all processes; the atomic ``final/`` hand-off). A non-finite loss or state stops the
stage with the last committed (finite) checkpoint named. Re-running the same command resumes a
stage exactly or skips it when complete.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Optional

import jax
import numpy as np
from clu import parameter_overview

from titok_jax import images as im
from titok_jax import parallel
from titok_jax import workdir as workdir_lib
from titok_jax.config.run import STAGE_SECTIONS, RunConfig
from titok_jax.errors import Preempted
from titok_jax.train.checkpointing import (
    STOP_KEY,
    StageCheckpoints,
    StopSignal,
    loader_state,
    with_stop_flag,
    write_final,
)
from titok_jax.train.metrics import MetricWriter, ProfileWindow, Progress
from titok_jax.train.stages import Stage

log = logging.getLogger(__name__)


def _stage_seed(run: RunConfig, stage: Stage) -> jax.Array:
    return jax.random.fold_in(jax.random.key(run.seed), sum(map(ord, stage.name)))


def _to_host(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def _eval(stage, state, batch, aux, eval_fn) -> Dict[str, Any]:
    """Run the stage's pure eval function; the stage turns the host outputs into scalars + a grid."""
    scalars, grid = stage.eval_summary(_to_host(eval_fn(state, batch, aux)))
    return {"scalars": scalars, "grid": grid}


def _fmt_scalars(scalars: Dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in scalars.items())


def _lower_lr(stage: Stage) -> str:
    return f"--config.{STAGE_SECTIONS.get(stage.name, stage.name)}.lr={stage.sc.lr / 10:g}"


def train_stage(
    stage: Stage, run: RunConfig, workdir: str, mesh=None, max_steps: Optional[int] = None
) -> Dict[str, Any]:
    """Run (or resume, or skip) one stage; returns its summary (PSNR before/after, steps, time)."""
    done = workdir_lib.read_done(workdir, stage.name)
    if done is not None:
        log.info("[%s] already complete (%s): skipping", stage.name, workdir_lib.done_path(workdir, stage.name))
        return done
    mesh = mesh or parallel.make_mesh(run.mesh)
    parallel.check_batch_size(stage.sc.batch_size, mesh, f"{stage.sc.name}.batch_size")
    sdir = workdir_lib.stage_dir(workdir, stage.name)
    writer = MetricWriter(os.path.join(sdir, "logs"), enabled=jax.process_index() == 0)
    ckpts = StageCheckpoints(os.path.join(sdir, "checkpoints"), stage.sc.keep_checkpoints, stage.name)
    try:
        with StopSignal() as stop:
            return _train(stage, run, workdir, mesh, max_steps, writer, ckpts, stop)
    finally:
        ckpts.close()
        writer.close()


def _train(stage, run, workdir, mesh, max_steps, writer, ckpts, stop) -> Dict[str, Any]:
    sc, name, t_start = stage.sc, stage.name, time.time()
    # Data: each process reads its own shard; the global batch is assembled as one jax.Array.
    loader, eval_loader = stage.loaders(workdir, jax.process_index(), jax.process_count())
    b_shard = parallel.batch_sharding(mesh)
    eval_batch = parallel.to_global_array(next(iter(eval_loader)), mesh, b_shard.spec)

    aux = stage.load_aux(workdir)
    aux_shardings = parallel.state_shardings(jax.eval_shape(lambda: aux), mesh)
    aux = jax.device_put(aux, aux_shardings)

    rng = _stage_seed(run, stage)
    abstract = jax.eval_shape(stage.init_state, rng)
    shardings = parallel.state_shardings(abstract, mesh)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)

    total = int(sc.num_steps)
    summary: Dict[str, Any] = {"stage": name}
    restored = ckpts.restore(target)
    if restored is not None:
        state, data, latest = restored
        loader.set_state(loader_state(data))
        summary.update(data.get("summary", {}))
        log.info("[%s] resuming from step %d (%s)", name, latest, ckpts.directory)
    else:
        state = jax.jit(stage.init_state, out_shardings=shardings)(rng)
        state = jax.device_put(stage.handoff(state, workdir), shardings)
        if jax.process_index() == 0:
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
        log.info("[%s] eval before training: %s", name, _fmt_scalars(ev["scalars"]))

    step_fn = jax.jit(
        with_stop_flag(stage.train_step),
        in_shardings=(shardings, b_shard, aux_shardings, b_shard),
        out_shardings=(shardings, parallel.replicated(mesh)),
        donate_argnums=(0,),
    )
    start = int(jax.device_get(state.step))
    stop_at = total if max_steps is None else min(total, start + max_steps)
    progress = Progress(start, total)
    it = iter(loader)
    pending = None  # (step, metrics) of the previous step, read one step late (no stall of the devices)

    def read(step, metrics) -> bool:
        """Metrics of ``step`` to the host: stop if non-finite; log; whether a process asked to stop."""
        host = _to_host(metrics)
        stop_requested = bool(host.pop(STOP_KEY))
        loss = float(np.asarray(host["loss"]))
        if not np.isfinite(loss):
            raise ckpts.diverged(f"loss is {loss} at step {step}", _lower_lr(stage))
        if step % sc.log_every == 0 or step == start + 1:
            timing = progress.mark(step)
            writer.write_scalars(step, {**host, **timing})
            log.info("%s", Progress.line(name, step, total, host, timing))
        return stop_requested

    logdir = os.path.join(workdir_lib.stage_dir(workdir, name), "logs")
    profile = ProfileWindow(sc.profile_start, sc.profile_steps, logdir, name)
    for step in range(start, stop_at):
        profile.before_step(step, state)
        batch = parallel.to_global_array(next(it), mesh, b_shard.spec)
        with jax.profiler.StepTraceAnnotation(name, step_num=step):
            state, metrics = step_fn(state, batch, aux, stop.device_flag(b_shard))
        # The same answer on every process: the flags of all processes went through the previous step.
        stop_now = read(*pending) if pending is not None else False
        done_steps = step + 1
        pending = (done_steps, metrics)
        if done_steps % sc.checkpoint_every == 0 or done_steps == stop_at or stop_now:
            stop_now = read(*pending) or stop_now  # this step's loss must be finite before its state is saved
            pending = None
            ckpts.save(done_steps, state, loader.get_state(), summary, _lower_lr(stage))
        if sc.eval_every and done_steps % sc.eval_every == 0 and done_steps != total:
            ev = _eval(stage, state, eval_batch, aux, eval_fn)
            writer.write_scalars(done_steps, {f"eval_{k}": v for k, v in ev["scalars"].items()})
            if ev["grid"] is not None:
                writer.write_images(done_steps, {stage.grid_name: ev["grid"]})
            log.info("[%s] step %d: eval %s", name, done_steps, _fmt_scalars(ev["scalars"]))
        if stop_now:
            profile.close(state)
            ckpts.wait()
            raise Preempted(f"{name}: saved step {done_steps} after a stop signal; rerun to resume")
    profile.close(state)
    if pending is not None:
        read(*pending)
    ckpts.wait()
    if int(jax.device_get(state.step)) < total:  # max_steps stopped early (tests, benchmarks)
        summary["stopped_at"] = int(jax.device_get(state.step))
        return summary
    return _finish(stage, workdir, state, eval_batch, aux, eval_fn, loader, summary, writer, stop, t_start)


def _finish(stage, workdir, state, eval_batch, aux, eval_fn, loader, summary, writer, stop, t_start):
    """Eval after training, the ``final/`` hand-off (EMA params, the ``port import`` format), DONE.json."""
    name, total = stage.name, int(stage.sc.num_steps)
    ev = _eval(stage, state, eval_batch, aux, eval_fn)
    summary.update({f"{k}_after": v for k, v in ev["scalars"].items()})
    summary.update(eval_after=ev["scalars"], steps=total, seconds=time.time() - t_start)
    writer.write_scalars(total, {f"eval_{k}": v for k, v in ev["scalars"].items()})
    if ev["grid"] is not None:
        writer.write_images(total, {stage.grid_name: ev["grid"]})
        if jax.process_index() == 0:
            im.save_png(ev["grid"], os.path.join(workdir_lib.stage_dir(workdir, name), f"{stage.grid_name}_final.png"))
    log.info("[%s] done: eval before: %s; after: %s", name, _fmt_scalars(summary["eval_before"]),
             _fmt_scalars(ev["scalars"]))  # fmt: skip
    skipped = loader.stats() if hasattr(loader, "stats") else {}
    if skipped and skipped.get("skipped"):
        log.warning("[%s] skipped unreadable images: %s", name, skipped["skipped"])
        summary["skipped_images"] = [list(map(str, s)) for s in skipped["skipped"]]
    cfg = getattr(stage, "model_config", None)
    meta = {"stage": name, "step": total, "model_config": cfg.to_dict() if cfg is not None else None}
    write_final(workdir_lib.final_dir(workdir, name), stage.final_params(state), meta)
    if jax.process_index() == 0:
        workdir_lib.write_done(workdir, name, summary)
    if stop.any_process():
        raise Preempted(f"{name}: finished (DONE.json written) as a stop signal arrived; rerun to go on")
    return summary
