"""The train-step benchmark's memory columns and the masking-schedule ablation's run configs (cheap parts;
the measured tables are in README)."""

import pytest

from titok_jax.benchmarks import mask_schedules, train_step
from titok_jax.config import load
from titok_jax.config.models import MASK_SCHEDULES


def test_train_step_bench_reports_the_xla_memory_plan_and_skips_what_does_not_fit():
    run = train_step.bench_run("titok_tiny_512", "stage1", 1, "float32", remat=True)
    assert run.remat and run.teacher.model == run.model.pixel_decoder and run.image_size == 512
    row = train_step.bench("titok_tiny", "stage1", 2, 1, "float32", memory_limit_gb=1e-6)  # compile only
    assert row["step_s"] is None and 0 < row["xla_gb"] < 1 and row["params"] > 0
    assert "not run: over --memory_limit_gb" in train_step.format_row(row)
    assert train_step.format_row(row).count("|") == train_step.HEADER.count("|") - 2


def test_schedule_ablation_changes_only_the_schedule(tmp_path):
    run = load("configs/demo.py")
    for name in MASK_SCHEDULES:
        s = mask_schedules.schedule_run(run, name, 7, str(tmp_path))
        assert s.generator_train.mask_schedule == s.generator.sampling.mask_schedule == name
        assert s.generator_train.preview_sampling.mask_schedule == name
        assert s.generator_train.num_steps == 7 and s.generator_train.tokens_dir == str(tmp_path)
        assert s.generator.model == run.generator.model and s.seed == run.seed
        changed = {"mask_schedule", "num_steps", "tokens_dir", "preview_samples", "checkpoint_every", "warmup_steps",
                   "eval_every", "preview_sampling"}  # fmt: skip
        kept = {k: v for k, v in s.generator_train.to_dict().items() if k not in changed}
        assert kept == {k: v for k, v in run.generator_train.to_dict().items() if k not in changed}
    with pytest.raises(ValueError, match="unknown mask schedule"):
        mask_schedules.schedule_run(run, "pow2", 7, str(tmp_path))
    rows = [
        dict(
            {"schedule": "arccos", "steps": 7, "acc_arccos": 0.5, "loss_arccos": 1.0},
            **{f"acc@{f:g}": 0.25 for f in mask_schedules.FIXED_FRACTIONS},
        )
    ]
    table = mask_schedules.format_table(rows).splitlines()
    assert len(table) == 3 and table[2].startswith("| arccos | 7 | 0.500 | 1.000 | 0.250")


def test_parameter_table_adds_up_from_the_models_own_shapes():
    r = train_step.param_counts("titok_tiny_512")
    assert r["image_size"] == 512 and r["tokens"] == 8
    assert r["encoder"] + r["quantizer"] + r["decoder"] + r["pixel_decoder"] == r["total"]
    assert r["stage1"] == r["total"] - r["pixel_decoder"] == 173_740  # the stage-1 bench row's count
    assert r["generator"] > 0
    line = train_step.format_params(r)
    assert line.count("|") == train_step.PARAMS_HEADER.splitlines()[0].count("|") and "173,740" in line
