"""A whole run: every stage and step that ``run.stages`` lists, in order, each resumable and skipped when done.

Training stages run in the one loop of ``titok_jax.train.loop``; the other steps (``pretokenize``,
``sample``, ``evaluate``, ``linear_probe``) are ``run(run_config, workdir)`` functions whose
``WORKDIR/<step>/DONE.json`` (written atomically by process 0) marks them finished. ``preflight``
checks, before anything is compiled, that the data, teacher and perceptual weights a run needs exist
and that every batch fits the mesh. A run holds ``WORKDIR/RUN.lock`` while it works (one writer per
workdir), and a resume must keep the training-relevant config fields of ``WORKDIR/config.json``
unless ``allow_config_change`` says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional

import jax

from titok_jax import data as data_lib
from titok_jax import logs, parallel
from titok_jax import workdir as workdir_lib
from titok_jax.config.run import STAGE_SECTIONS, STEPS, RunConfig, resume_changes
from titok_jax.errors import ConfigError
from titok_jax.porting.io import PICKLE_SUFFIXES
from titok_jax.steps import evaluate, linear_probe, pretokenize, sample
from titok_jax.train import loop
from titok_jax.train.stages import make_stage
from titok_jax.train.stages.gan import load_perceptual
from titok_jax.train.stages.tokenizer import check_teacher

log = logging.getLogger(__name__)

STEP_FUNCTIONS: Dict[str, Callable[[RunConfig, str], Dict[str, Any]]] = {
    "pretokenize": pretokenize.run, "sample": sample.run, "evaluate": evaluate.run, "linear_probe": linear_probe.run,
}  # fmt: skip
assert set(STEP_FUNCTIONS) == set(STEPS)


def preflight(run: RunConfig, workdir: str, mesh=None) -> None:
    """Fail at once, before any compilation, when data, teacher or perceptual weights are missing, or a
    batch does not fit the mesh (``mesh``; default: the run's)."""
    if not run.stages:
        raise ConfigError(
            f"{run.model_name or 'this config'} lists no stages (a model-only config, for port/reconstruct); "
            "training needs a training config such as configs/titok_b64.py or configs/demo.py"
        )
    train_stages = [n for n in run.stages if n in STAGE_SECTIONS]
    local_steps = [n for n in run.stages if n in STEPS]
    if workdir_lib.is_url(workdir) and local_steps:
        raise ConfigError(
            f"the steps {', '.join(local_steps)} write with local file I/O, so they need a local or mounted "
            f"--workdir, not {workdir} (the training stages read and write gs:// natively): run the training "
            "stages on the bucket, then these steps with a local --workdir and config.<step>.tokenizer_checkpoint "
            "pointing at the bucket's final/"
        )
    mesh = mesh or parallel.make_mesh(run.mesh)
    for name in train_stages:
        make_stage(name, run)  # validates the model/stage combination
        parallel.check_batch_size(run.section(name).batch_size, mesh, f"config.{STAGE_SECTIONS[name]}.batch_size")
    if train_stages:
        parallel.check_batch_size(run.eval.batch_size, mesh, "config.eval.batch_size")
    if any(n != "generator" for n in run.stages):  # everything but the generator reads images
        data_lib.make_source(run.data, train=True)  # missing/empty data fails here, before compiling
        data_lib.make_source(run.data, train=False)
    if "stage1" in run.stages and "teacher" not in run.stages and not workdir_lib.stage_finished(workdir, "teacher"):
        check_teacher(run, workdir)
    for name in train_stages:
        sec = run.section(name)
        if getattr(sec, "perceptual_weight", 0) and not workdir_lib.read_done(workdir, name):
            if not sec.perceptual_checkpoint:
                load_perceptual(sec)  # raises with instructions
            elif not workdir_lib.exists(workdir_lib.resolve(sec.perceptual_checkpoint)):
                raise ConfigError(f"{name}: perceptual_checkpoint {sec.perceptual_checkpoint} not found")
            elif sec.perceptual_checkpoint.lower().endswith(PICKLE_SUFFIXES) and not sec.allow_pickle:
                section = STAGE_SECTIONS[name]
                raise ConfigError(
                    f"config.{section}.perceptual_checkpoint={sec.perceptual_checkpoint} is a PyTorch pickle: set "
                    f"--config.{section}.allow_pickle=True to read it (torch.load(weights_only=True), needs torch), "
                    "or convert it to .safetensors"
                )


def run_step(name: str, run: RunConfig, workdir: str) -> Dict[str, Any]:
    """Run a non-training step once; its DONE.json (written atomically by process 0) marks it finished."""
    done = workdir_lib.read_done(workdir, name)
    if done is not None:
        log.info("[%s] already complete (%s): skipping", name, workdir_lib.done_path(workdir, name))
        return done
    summary = dict(STEP_FUNCTIONS[name](run, workdir), stage=name)
    if jax.process_index() == 0:
        workdir_lib.write_done(workdir, name, summary)
    return summary


def _check_config(run: RunConfig, workdir: str, allow_change: bool) -> None:
    """Save the run config, or compare it with the one a resumed run was started with (process 0)."""
    path = os.path.join(workdir, "config.json")
    current = run.to_dict()
    if workdir_lib.exists(path):
        started = tuple(n for n in run.stages if n in STAGE_SECTIONS and workdir_lib.stage_started(workdir, n))
        changes = resume_changes(workdir_lib.read_json(path), run, started)
        if changes:
            listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
            if not allow_change:
                raise ConfigError(
                    f"{workdir} holds a run started with another config (stages {', '.join(started)} under way); "
                    f"changed: {listed}. Rerun with the saved settings ({path}), use a new --workdir, or pass "
                    "--allow_config_change to resume with the new ones"
                )
            log.warning("resuming with a changed config (--allow_config_change): %s", listed)
            record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": changes}
            log_path = workdir_lib.path(workdir) / "config_changes.jsonl"
            old_text = log_path.read_text() if log_path.exists() else ""
            log_path.write_text(old_text + json.dumps(record, default=str) + "\n")
    workdir_lib.write_json_atomic(path, current)


def _lock(workdir: str):
    """Process 0 takes ``WORKDIR/RUN.lock``; every process learns whether it could."""
    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = workdir_lib.WorkdirLock(workdir).acquire()
        except workdir_lib.WorkdirBusy as e:
            error = e
    if not parallel.from_process_0(int(error is None)):
        raise error or workdir_lib.WorkdirBusy(f"{workdir} is in use by another run (see process 0's log)")
    return lock or contextlib.nullcontext()


def run_all(run: RunConfig, workdir: str, max_steps: Optional[int] = None,
            allow_config_change: bool = False) -> List[Dict[str, Any]]:  # fmt: skip
    """Every stage/step of ``run.stages`` in order; returns their summaries (stops after a stage that
    ``max_steps`` cut short). ``allow_config_change``: resume although training-relevant fields differ
    from ``WORKDIR/config.json``."""
    workdir = workdir_lib.resolve(workdir)
    mesh = parallel.make_mesh(run.mesh)
    preflight(run, workdir, mesh)
    workdir_lib.path(workdir).mkdir(parents=True, exist_ok=True)
    with _lock(workdir):
        ok = True
        if jax.process_index() == 0:
            try:
                _check_config(run, workdir, allow_config_change)
            except ConfigError as e:
                ok, error = False, e
        if not parallel.from_process_0(int(ok)):
            raise error if jax.process_index() == 0 else ConfigError("the config check failed (see process 0's log)")
        log.info("devices: %d (%d process(es)), mesh %s", jax.device_count(), jax.process_count(), dict(mesh.shape),
                 extra=logs.EVERY_PROCESS)  # fmt: skip
        summaries = []
        for name in run.stages:
            if name in STEP_FUNCTIONS:
                summaries.append(run_step(name, run, workdir))
                continue
            summaries.append(loop.train_stage(make_stage(name, run), run, workdir, mesh, max_steps))
            if "stopped_at" in summaries[-1]:
                break
    return summaries
