"""Two ``jax.distributed`` processes (one CPU device each) stopped and resumed the ways a pod run is.

Against one uninterrupted 2-process run (module fixture; the runs share a JAX compilation cache):
stopped after N steps then resumed, SIGTERM to one process only, SIGKILL of both -- each rerun ends with
bit-identical final params.
"""

from __future__ import annotations

import re
import signal

import pytest
from runs import assert_same, final_params, finish, start_processes, wait_for

pytestmark = pytest.mark.slow

CONFIG = "tests/configs/tiny_train.py:steps=8,batch=2,ckpt=2,eval=2"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    wd = tmp_path_factory.mktemp("ref2")
    outs = finish(start_processes(wd, config=CONFIG, cache=cache))
    assert "devices: 2 (2 process(es))" in outs[0][0]
    return final_params(wd)


def test_stopped_after_n_steps_then_resumed_equals_uninterrupted(reference, tmp_path, cache):
    outs = finish(start_processes(tmp_path, "--max_steps=4", config=CONFIG, cache=cache))
    assert '"stopped_at": 4' in outs[0][0]
    outs = finish(start_processes(tmp_path, config=CONFIG, cache=cache))
    assert "resuming from step 4" in outs[0][0]
    assert_same(final_params(tmp_path), reference)


def test_sigterm_to_one_process_all_save_the_same_step_and_exit_143(reference, tmp_path, cache):
    procs = start_processes(tmp_path, config=CONFIG, cache=cache)
    wait_for(tmp_path / "single_stage" / "checkpoints" / "2" / "_CHECKPOINT_METADATA", procs)
    procs[1].send_signal(signal.SIGTERM)
    outs = finish(procs, expect=143)
    saved = [re.search(r"preempted: single_stage: saved step (\d+) after a stop signal", err) for _, err in outs]
    assert all(saved), [err[-2000:] for _, err in outs]
    assert saved[0].group(1) == saved[1].group(1)
    step = saved[0].group(1)
    outs = finish(start_processes(tmp_path, config=CONFIG, cache=cache))
    assert f"resuming from step {step}" in outs[0][0]
    assert_same(final_params(tmp_path), reference)


def test_sigkill_of_all_processes_then_rerun_is_exact(reference, tmp_path, cache):
    procs = start_processes(tmp_path, config=CONFIG, cache=cache)
    wait_for(tmp_path / "single_stage" / "checkpoints" / "4" / "_CHECKPOINT_METADATA", procs)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    finish(procs, expect=-signal.SIGKILL)
    outs = finish(start_processes(tmp_path, config=CONFIG, cache=cache))
    assert "resuming from step" in outs[0][0] and "taking over the stale lock" in outs[0][0]
    assert_same(final_params(tmp_path), reference)
