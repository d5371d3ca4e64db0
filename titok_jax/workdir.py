"""The run directory: where every stage and step of a run keeps its outputs, and how a finished one is known.

    WORKDIR/config.json                 the run config (process 0)
    WORKDIR/<stage>/checkpoints/        Orbax checkpoints of a training stage (resume)
    WORKDIR/<stage>/final/              its hand-off params (EMA), in the ``port import`` format
    WORKDIR/<stage>/logs/               TensorBoard event files + metrics.jsonl
    WORKDIR/<stage>/DONE.json           written last: the stage or step is finished (its summary)

``tokenizer_checkpoint`` answers "which tokenizer does a later step use": an explicit params
directory, else the latest finished tokenizer stage (stage2, then single_stage, then stage1).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from titok_jax.errors import InputError

TOKENIZER_STAGES = ("stage2", "single_stage", "stage1")  # latest first: where a run's tokenizer ends up
DONE = "DONE.json"


def stage_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage)


def final_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage, "final")


def done_path(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage, DONE)


def read_done(workdir: str, stage: str) -> Optional[Dict[str, Any]]:
    """The summary of a finished stage/step, or None when it has not finished."""
    path = done_path(workdir, stage)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename: readers see all of it or nothing."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_done(workdir: str, stage: str, summary: Dict[str, Any]) -> None:
    write_json_atomic(done_path(workdir, stage), summary)


def stage_finished(workdir: str, stage: str) -> bool:
    return os.path.isdir(final_dir(workdir, stage))


def tokenizer_checkpoint(workdir: str, explicit: str = "", section: str = "") -> str:
    """The tokenizer params to use after training: ``explicit`` (an Orbax params directory from
    ``port import`` or a stage's ``final/``) or else the latest finished tokenizer stage under
    ``workdir``. ``section`` names the config section of the step asking (for the error message)."""
    opt = f"config.{section}." if section else ""
    if explicit:
        path = os.path.abspath(os.path.expanduser(explicit))
        if not os.path.isdir(path):
            raise InputError(
                f"{opt}tokenizer_checkpoint={explicit} not found (expected an Orbax params directory: a stage's "
                "final/ or the output of `titok-port import`)"
            )
        return path
    looked = []
    for name in TOKENIZER_STAGES:
        path = final_dir(workdir, name)
        if os.path.isdir(path):
            return path
        looked.append(path)
    raise InputError(
        f"no tokenizer checkpoint: none of {', '.join(looked)} exists. Train one first (list stage1/stage2 or "
        f"single_stage earlier in config.stages), or set {opt}tokenizer_checkpoint to an Orbax params directory "
        "(a stage's final/, or the output of `titok-port import --config=... --weights=tokenizer_titok_*.bin "
        f"--out=DIR`), or {opt}tokenizer_weights to an official weight file (.safetensors, or .bin with "
        "allow_pickle=True)"
    )


def generator_checkpoint(workdir: str) -> str:
    """The trained generator of a run (``WORKDIR/generator/final``)."""
    path = final_dir(workdir, "generator")
    if not os.path.isdir(path):
        raise InputError(
            f"no trained generator in {workdir} (expected {path}): run the 'generator' stage, or pass "
            "--generator_checkpoint / --generator_weights"
        )
    return path
