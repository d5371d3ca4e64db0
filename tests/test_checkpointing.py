"""The mechanics under a training stage's checkpoints, in-process and fast: integrity codes, fallback past
damaged steps (truncated and silently flipped data files), no commit of a non-finite state, the old
loader-state layout, the workdir lock and the resume-config check."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from titok_jax import checkpoint
from titok_jax import workdir as workdir_lib
from titok_jax.config import presets
from titok_jax.config.run import parse, resume_changes, with_changes
from titok_jax.errors import TrainingError
from titok_jax.train.checkpointing import StageCheckpoints, loader_state
from titok_jax.train.state import TrainState


def _state(step: int, scale: float = 1.0) -> TrainState:
    rng = np.random.default_rng(step)
    w = jnp.asarray(rng.standard_normal((64, 64)).astype(np.float32) * scale)
    return TrainState(step=jnp.int32(step), params={"w": w, "b": jnp.zeros((64,))}, opt_state={"m": w * 0.5},
                      ema_params={"w": w + 1.0, "b": jnp.ones((64,))}, rng=jax.random.key(step))  # fmt: skip


def _biggest_file(step_dir: pathlib.Path) -> pathlib.Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.fixture
def saved(tmp_path):
    """Steps 1, 2, 3 of a small random state in tmp_path/stage/checkpoints."""
    ckdir = tmp_path / "stage" / "checkpoints"
    ck = StageCheckpoints(str(ckdir), 5, "t")
    for s in (1, 2, 3):
        ck.save(s, _state(s), {"next_index": s}, {"eval_before": {"psnr": 1.0}}, "--config.t.lr=1e-4")
    ck.close()
    return ckdir


def test_checksums_change_with_any_word():
    tree = {"a": jnp.arange(12.0).reshape(3, 4), "b": jnp.ones((2,), jnp.bfloat16), "k": jax.random.key(0)}
    codes = checkpoint.checksums(tree)
    assert set(codes) == {"a", "b", "k"} and checkpoint.checksum_mismatches(tree, codes) == []
    moved = dict(tree, a=tree["a"].at[1, 2].set(np.nextafter(np.float32(6), np.float32(7))))
    assert checkpoint.checksum_mismatches(moved, codes) == ["a"]
    swapped = dict(tree, a=tree["a"][::-1])  # same words, other places
    assert checkpoint.checksum_mismatches(swapped, codes) == ["a"]


def test_restore_falls_back_past_truncated_and_flipped_steps(saved, caplog):
    target = jax.eval_shape(lambda: _state(0))
    f3 = _biggest_file(saved / "3")
    with open(f3, "r+b") as f:
        f.truncate(f3.stat().st_size // 2)
    f2 = _biggest_file(saved / "2")
    data = bytearray(f2.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the raw float data: Orbax alone would restore it silently
    f2.write_bytes(bytes(data))
    with ocp.StandardCheckpointer() as raw:  # the flip is silent to Orbax ...
        silently = raw.restore(saved / "2" / "state", target)
    assert checkpoint.checksum_mismatches(silently, checkpoint.checksums(_state(2)))  # some array changed
    ck = StageCheckpoints(str(saved), 5, "t")
    with caplog.at_level(logging.WARNING, logger="titok_jax"):
        state, data, step = ck.restore(target)  # ... but not to the checksums
    assert step == 1 and loader_state(data) == {"next_index": 1} and data["summary"]["eval_before"]["psnr"] == 1.0
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.asarray(_state(1).params["w"]))
    text = caplog.text
    assert "checkpoint step 3" in text and "checkpoint step 2" in text and "checksum mismatch" in text
    assert sorted(p.name.split("-")[0] for p in (saved.parent / "damaged_checkpoints").iterdir()) == ["2", "3"]
    ck.save(2, _state(2), {"next_index": 2}, {}, "lr")  # the damaged step numbers are free again
    ck.close()


def test_all_damaged_is_an_error_and_a_rerun_starts_over(saved):
    target = jax.eval_shape(lambda: _state(0))
    for s in (1, 2, 3):
        (_biggest_file(saved / str(s))).write_bytes(b"")
    ck = StageCheckpoints(str(saved), 5, "t")
    with pytest.raises(TrainingError, match=r"none of the checkpoints \[3, 2, 1\].*rerun to start the stage"):
        ck.restore(target)
    assert ck.restore(target) is None
    ck.close()


@pytest.mark.parametrize("bad", ["nan", "huge"])
def test_a_non_finite_state_is_never_committed(saved, bad):
    ck = StageCheckpoints(str(saved), 5, "t")
    state = _state(4, scale=1e30) if bad == "huge" else _state(4).replace(opt_state={"m": jnp.full((64, 64), jnp.nan)})
    with pytest.raises(TrainingError) as e:
        ck.save(4, state, {"next_index": 4}, {}, "--config.t.lr=1e-05")
    msg = str(e.value)
    assert "not finite" in msg and "step 3" in msg and "--config.t.lr=1e-05" in msg and "--allow_config_change" in msg
    assert ck.mngr.all_steps() == [1, 2, 3]
    ck.close()


def test_old_loader_layouts_still_restore():
    assert loader_state({"loader": {"next_index": 5}}) == {"next_index": 5}
    assert loader_state({"loaders": {"0": {"next_index": 7}}, "summary": {}}) == {"next_index": 7}
    assert loader_state({"next_index": 3}) == {"next_index": 3}


# ---------------------------------------------------------------------------------------------- the lock
def test_lock_refuses_a_second_run_and_takes_over_stale_ones(tmp_path, caplog):
    first = workdir_lib.WorkdirLock(tmp_path).acquire()
    held = json.loads((tmp_path / "RUN.lock").read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    with pytest.raises(workdir_lib.WorkdirBusy, match=rf"in use by another run \(host .*, pid {os.getpid()}"):
        workdir_lib.WorkdirLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / "RUN.lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"host": socket.gethostname(), "pid": int(dead.stdout), "heartbeat": time.time()}
    (tmp_path / "RUN.lock").write_text(json.dumps(stale))
    with caplog.at_level(logging.WARNING, logger="titok_jax"):
        with workdir_lib.WorkdirLock(tmp_path):
            assert json.loads((tmp_path / "RUN.lock").read_text())["pid"] == os.getpid()
    assert f"pid {stale['pid']} is not running" in caplog.text
    other = {"host": "elsewhere", "pid": 1, "heartbeat": time.time()}
    (tmp_path / "RUN.lock").write_text(json.dumps(other))
    with pytest.raises(workdir_lib.WorkdirBusy, match="host elsewhere"):
        workdir_lib.WorkdirLock(tmp_path).acquire()
    (tmp_path / "RUN.lock").write_text(json.dumps(dict(other, heartbeat=time.time() - 3600)))
    old = time.time() - 3600
    os.utime(tmp_path / "RUN.lock", (old, old))
    with workdir_lib.WorkdirLock(tmp_path):  # no heartbeat for an hour: the holder on the other host is gone
        pass


def test_resume_changes_name_training_fields_only():
    run = parse(presets.training_config("titok_tiny_vq", "seed=0"))
    saved = json.loads(json.dumps(run.to_dict()))
    changed = with_changes(run, stage1={"lr": 0.5, "log_every": 7, "checkpoint_every": 9}, stage2={"lr": 3.0},
                           data={"num_threads": 1}, eval={"batch_size": 2})  # fmt: skip
    assert resume_changes(saved, changed, ("stage1",)) == {"stage1.lr": (run.stage1.lr, 0.5)}
    assert resume_changes(saved, changed, ()) == {}
    seeded = changed.replace(seed=3)
    assert resume_changes(saved, seeded, ("stage1",))["seed"] == (0, 3)
