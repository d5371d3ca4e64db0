"""Training stages: each a state initialiser plus pure, jit-able step functions (``base.Stage``).

``make_stage(name, run)`` builds one: ``teacher``, ``stage1``, ``stage2``, ``single_stage``
(``tokenizer``) and ``generator`` (``generator``). None of them imports TensorFlow.
"""

from __future__ import annotations

from titok_jax.config.run import STAGE_SECTIONS, RunConfig
from titok_jax.train.stages.base import Stage
from titok_jax.train.stages.generator import GeneratorStage
from titok_jax.train.stages.tokenizer import SingleStage, Stage1, Stage2, StageError, TeacherStage

STAGES = {"teacher": TeacherStage, "stage1": Stage1, "stage2": Stage2, "single_stage": SingleStage,
          "generator": GeneratorStage}  # fmt: skip
assert set(STAGES) == set(STAGE_SECTIONS)


def make_stage(name: str, run: RunConfig) -> Stage:
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}")
    return STAGES[name](run)


__all__ = ["STAGES", "GeneratorStage", "SingleStage", "Stage", "Stage1", "Stage2", "StageError", "TeacherStage",
           "make_stage"]  # fmt: skip
