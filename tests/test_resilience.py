"""Faults a one-process run survives, tried as a user meets them (subprocesses of ``python -m titok_jax.main``).

Against one uninterrupted 6-step run (module fixture; the runs share a JAX compilation cache): a SIGKILL
as the final hand-off is written, a second run on the same workdir and a SIGTERM during the final save,
a NaN with a checkpoint every step and the advised rerun with a lower learning rate, a truncated data
file in the newest checkpoint.
"""

from __future__ import annotations

import os
import re
import shutil
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from runs import assert_same, final_params, main_cmd, run, start, wait_for

pytestmark = pytest.mark.slow

CONFIG = "tests/configs/tiny_train.py:steps=6,batch=2,ckpt=2,eval=2"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    wd = tmp_path_factory.mktemp("ref")
    run(main_cmd(wd, config=CONFIG), cache=cache)
    return wd, final_params(wd)


def test_sigkill_as_the_final_save_starts_then_rerun_gives_the_same_final(reference, tmp_path, cache):
    wd = tmp_path / "killed"
    proc = start(main_cmd(wd, config=CONFIG), cache)
    wait_for(wd / "single_stage" / "final.partial", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (wd / "single_stage" / "DONE.json").exists()
    p = run(main_cmd(wd, config=CONFIG), cache=cache)  # the stale lock of the killed run is taken over
    assert "taking over the stale lock" in p.stdout and "resuming from step 6" in p.stdout
    assert not (wd / "single_stage" / "final.partial").exists()
    assert_same(final_params(wd), reference[1])


def test_second_run_on_a_workdir_is_refused_and_sigterm_in_the_final_save_exits_143(reference, tmp_path, cache):
    wd = tmp_path / "shared"
    first = start(main_cmd(wd, config=CONFIG), cache)
    wait_for(wd / "RUN.lock", first)
    second = run(main_cmd(wd, config=CONFIG), expect=2, cache=cache)
    assert "is in use by another run (host" in second.stderr and f"pid {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    wait_for(wd / "single_stage" / "final.partial", first)
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=900)
    assert first.returncode == 143, err[-3000:]
    assert "finished (DONE.json written) as a stop signal arrived" in err
    assert (wd / "single_stage" / "DONE.json").exists() and not (wd / "RUN.lock").exists()
    assert_same(final_params(wd), reference[1])


def test_nan_names_a_finite_committed_step_and_a_lower_lr_resumes_from_it(tmp_path, cache):
    config = CONFIG.replace("ckpt=2", "ckpt=1")
    wd = tmp_path / "nan"
    p = run(main_cmd(wd, "--config.single_stage.lr=1e30", "--config.single_stage.end_lr=1e30", config=config),
            expect=3, cache=cache)  # fmt: skip
    assert "Traceback" not in p.stderr and "Event loop is closed" not in p.stderr, p.stderr[-3000:]
    m = re.search(r"The last checkpoint, step (\d+) \(", p.stderr)
    assert m, p.stderr[-2000:]
    step = int(m.group(1))
    assert "--allow_config_change" in p.stderr and "--config.single_stage.lr=" in p.stderr
    ckpts = wd / "single_stage" / "checkpoints"
    assert max(int(s.name) for s in ckpts.iterdir() if s.name.isdigit()) == step
    with ocp.PyTreeCheckpointer() as c:
        state = c.restore(ckpts / str(step) / "state")
    floats = [np.asarray(x) for x in jax.tree.leaves(state) if jax.dtypes.issubdtype(x.dtype, np.floating)]
    assert floats and all(np.all(np.isfinite(x)) for x in floats)
    lower = ["--config.single_stage.lr=1e-3", "--config.single_stage.end_lr=1e-4"]
    p = run(main_cmd(wd, *lower, config=config), expect=2, cache=cache)  # a changed config is refused, named
    assert "single_stage.lr: 1e+30 -> 0.001" in p.stderr and "--allow_config_change" in p.stderr
    p = run(main_cmd(wd, *lower, "--allow_config_change", config=config), cache=cache)
    assert f"resuming from step {step}" in p.stdout and "[single_stage] done" in p.stdout
    assert (wd / "config_changes.jsonl").exists()


def test_truncated_newest_checkpoint_resumes_from_the_one_before(reference, tmp_path, cache):
    wd = tmp_path / "damaged"
    shutil.copytree(reference[0], wd)
    shutil.rmtree(wd / "single_stage" / "final")
    os.remove(wd / "single_stage" / "DONE.json")
    state = wd / "single_stage" / "checkpoints" / "6" / "state"
    biggest = max((f for f in state.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    with open(biggest, "r+b") as f:
        f.truncate(biggest.stat().st_size // 2)
    p = run(main_cmd(wd, config=CONFIG), cache=cache)
    assert re.search(r"warning: \[single_stage\] checkpoint step 6 in .* is damaged", p.stdout), p.stdout[-3000:]
    assert "resuming from step 4" in p.stdout
    assert (wd / "single_stage" / "damaged_checkpoints").is_dir()
    assert_same(final_params(wd), reference[1])
