"""The paper's masking-schedule ablation as a runnable recipe, at any scale (a benchmark script, not a test).

  titok-bench-schedules --config=configs/demo.py --workdir=out/demo [--schedules=arccos,linear,cosine] [--steps=100]

For each schedule, the run's generator is trained from the same initialisation, on the same batches, for
the same number of steps, with ``generator_train.mask_schedule`` (and the sampler's re-masking) set to it,
in ``WORKDIR/schedules/<name>`` on the pre-tokenized data of the run (``WORKDIR/pretokenize``, e.g. the
demo's). Each row then reports the masked-token accuracy and loss on the run's held-out batch at the
official arccos eval masking (the stage's own evaluation) and at fixed masked fractions (the same masked
positions for every schedule), so the schedules are compared on identical inputs.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

import jax
import jax.numpy as jnp

from titok_jax import checkpoint
from titok_jax.config import RunConfig, with_changes
from titok_jax.config.models import MASK_SCHEDULES
from titok_jax.train import loop
from titok_jax.train.stages import make_stage
from titok_jax.train.stages.generator import mlm_loss

FIXED_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def schedule_run(run: RunConfig, schedule: str, steps: int, tokens_dir: str) -> RunConfig:
    """``run`` with only the generator's masking schedule (training and sampling) and step count changed."""
    if schedule not in MASK_SCHEDULES:
        raise ValueError(f"unknown mask schedule {schedule!r}; known: {MASK_SCHEDULES}")
    sc = run.generator_train
    run = with_changes(
        run,
        generator_train=dict(mask_schedule=schedule, num_steps=steps, tokens_dir=tokens_dir, preview_samples=False,
                             checkpoint_every=steps, eval_every=0, warmup_steps=min(sc.warmup_steps, steps),
                             preview_sampling=sc.preview_sampling.replace(mask_schedule=schedule)),
    )  # fmt: skip
    return run.replace(generator=run.generator.replace(sampling=run.generator.sampling.replace(mask_schedule=schedule)))


def fixed_fraction_metrics(stage, params, batch, fractions: Sequence[float], seed: int = 0) -> Dict[str, float]:
    """Masked-token accuracy / loss at ``round(L * f)`` masked positions per sample (one fixed permutation)."""
    g, sc = stage.gen_config, stage.sc
    tokens, labels = jnp.asarray(batch["tokens"]), jnp.asarray(batch["label"])
    b, seq_len = tokens.shape
    perm = jnp.argsort(jax.random.uniform(jax.random.key(seed), (b, seq_len)), axis=-1)
    out = {}
    for f in fractions:
        mask = perm < max(1, round(seq_len * f))
        inputs = jnp.where(mask, g.mask_token_id, tokens)
        logits = stage.module.apply({"params": params}, inputs, labels, jnp.zeros((b,), bool), deterministic=True)
        loss, acc = mlm_loss(logits, tokens, mask, sc.label_smoothing, sc.loss_weight_unmasked_token)
        out[f"acc@{f:g}"], out[f"loss@{f:g}"] = float(acc), float(loss)
    return out


def ablation(run: RunConfig, workdir: str, schedules: Sequence[str], steps: int) -> List[Dict]:
    """One row per schedule (see the module docstring); trained runs are reused (their DONE.json)."""
    tokens_dir = run.generator_train.tokens_dir or run.pretokenize.out_dir or os.path.join(workdir, "pretokenize")
    rows = []
    for name in schedules:
        srun = schedule_run(run, name, steps, os.path.abspath(os.path.expanduser(tokens_dir)))
        sdir = os.path.join(workdir, "schedules", name)
        stage = make_stage("generator", srun)
        summary = loop.train_stage(stage, srun, sdir)
        params = checkpoint.load_params(os.path.join(sdir, "generator", "final"))
        _, ev = stage.loaders(sdir, 0, 1)
        row = {"schedule": name, "steps": summary["steps"], "acc_arccos": summary["masked_acc_after"],
               "loss_arccos": summary["loss_after"]}  # fmt: skip
        row.update(fixed_fraction_metrics(stage, params, next(iter(ev)), FIXED_FRACTIONS))
        rows.append(row)
    return rows


def format_table(rows: List[Dict]) -> str:
    fr = " | ".join(f"acc {int(f * 100)}%" for f in FIXED_FRACTIONS)
    lines = [f"| schedule | steps | acc (arccos eval) | loss (arccos eval) | {fr} |",
             "|" + "---|" * (4 + len(FIXED_FRACTIONS))]  # fmt: skip
    for r in rows:
        accs = " | ".join(f"{r[f'acc@{f:g}']:.3f}" for f in FIXED_FRACTIONS)
        lines.append(f"| {r['schedule']} | {r['steps']} | {r['acc_arccos']:.3f} | {r['loss_arccos']:.3f} | {accs} |")
    return "\n".join(lines)
