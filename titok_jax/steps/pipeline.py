"""A whole run: every stage and step that ``run.stages`` lists, in order, each resumable and skipped when done.

Training stages run in the one loop of ``titok_jax.train.loop``; the other steps (``pretokenize``,
``sample``, ``evaluate``, ``linear_probe``) are ``run(run_config, workdir)`` functions whose
``WORKDIR/<step>/DONE.json`` (written atomically by process 0) marks them finished. ``preflight``
checks, before anything is compiled, that the data, teacher and perceptual weights a run needs exist.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional

import jax

from titok_jax import data as data_lib
from titok_jax import logs, parallel
from titok_jax import workdir as workdir_lib
from titok_jax.config.run import STAGE_SECTIONS, STEPS, RunConfig
from titok_jax.errors import ConfigError
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


def preflight(run: RunConfig, workdir: str) -> None:
    """Fail at once, before any compilation, when data, teacher or perceptual weights are missing."""
    if not run.stages:
        raise ConfigError(
            f"{run.model_name or 'this config'} lists no stages (a model-only config, for port/reconstruct); "
            "training needs a training config such as configs/titok_b64.py or configs/demo.py"
        )
    train_stages = [n for n in run.stages if n in STAGE_SECTIONS]
    for name in train_stages:
        make_stage(name, run)  # validates the model/stage combination
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
            elif not os.path.exists(os.path.expanduser(sec.perceptual_checkpoint)):
                raise ConfigError(f"{name}: perceptual_checkpoint {sec.perceptual_checkpoint} not found")


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


def run_all(run: RunConfig, workdir: str, max_steps: Optional[int] = None) -> List[Dict[str, Any]]:
    """Every stage/step of ``run.stages`` in order; returns their summaries (stops after a stage that
    ``max_steps`` cut short)."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    preflight(run, workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = parallel.make_mesh(run.mesh)
    if jax.process_index() == 0:
        workdir_lib.write_json_atomic(os.path.join(workdir, "config.json"), run.to_dict())
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
