"""The training loop as users run it (``python -m titok_jax.main``), in subprocesses.

A 24-step single-stage tiny run on the bundled photos is the reference; against it:
SIGKILL mid-run + rerun gives bit-identical params; 8 forced CPU devices on a 4x2 (data, fsdp)
mesh and 2 ``jax.distributed`` processes give the same params; bad input fails clearly.
"""

import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import REPO
from runs import env, final_params, finish, start_processes
from runs import main_cmd as _main_cmd
from runs import run as _run

pytestmark = pytest.mark.slow

CONFIG = "tests/configs/tiny_train.py:steps=24,batch=8,ckpt=4"


def main_cmd(workdir, *extra, config=CONFIG):
    return _main_cmd(workdir, *extra, config=config)


def run(cmd, expect=0, devices=1, timeout=900):
    return _run(cmd, expect=expect, devices=devices, timeout=timeout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    wd = tmp_path_factory.mktemp("ref")
    p = run(main_cmd(wd))
    assert "[single_stage] done: eval before: psnr" in p.stdout and "skipping" not in p.stdout
    return wd, final_params(wd)


def test_rerun_skips_completed_stage(reference):
    wd, _ = reference
    p = run(main_cmd(wd))
    assert "already complete" in p.stdout


def test_sigkill_then_rerun_is_bit_identical(reference, tmp_path):
    _, ref = reference
    wd = tmp_path / "killed"
    proc = subprocess.Popen(main_cmd(wd), cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marker = wd / "single_stage" / "checkpoints" / "8" / "_CHECKPOINT_METADATA"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (wd / "single_stage" / "DONE.json").exists()
    p = run(main_cmd(wd))
    assert "resuming from step" in p.stdout
    got = final_params(wd)
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def _close(got, ref):
    worst = max(float(np.max(np.abs(got[k] - ref[k]))) / max(1.0, float(np.max(np.abs(ref[k])))) for k in ref)
    assert worst <= 1e-5, f"max relative difference {worst:.3g}"
    return worst


def test_eight_devices_fsdp_mesh_matches_one_device(reference, tmp_path):
    _, ref = reference
    p = run(main_cmd(tmp_path, "--config.mesh=(4, 2)"), devices=8)
    assert "devices: 8" in p.stdout and "'data': 4, 'fsdp': 2" in p.stdout
    _close(final_params(tmp_path), ref)


def test_two_process_distributed_matches_single_process(reference, tmp_path):
    _, ref = reference
    outs = finish(start_processes(tmp_path, config=CONFIG))
    assert "devices: 2 (2 process(es))" in outs[0][0]
    _close(final_params(tmp_path), ref)


def test_bad_input_fails_clearly(tmp_path):
    p = run(
        main_cmd(tmp_path / "a", "--config.data.source=folder", f"--config.data.path={tmp_path / 'nope'}"), expect=2
    )
    assert "nope" in p.stderr and "error:" in p.stderr
    (tmp_path / "empty").mkdir()
    p = run(
        main_cmd(tmp_path / "b", "--config.data.source=folder", f"--config.data.path={tmp_path / 'empty'}"), expect=2
    )
    assert "empty" in p.stderr
    p = run(main_cmd(tmp_path / "c", "--config.single_stage.lrr=1"), expect=2)
    assert "error: --config.single_stage.lrr: unknown config key 'lrr'" in p.stderr and "Traceback" not in p.stderr
    photos = ["--config.data.source=photos", "--config.data.split=train", "--config.data.eval_split=eval"]
    p = run(main_cmd(tmp_path / "d", *photos, config="configs/titok_tiny.py"), expect=2)  # stage1 without a teacher
    assert "no teacher" in p.stderr and "configs/demo.py" in p.stderr
    tfds_dir = "--config.data.data_dir=" + str(tmp_path / "tfds")
    p = run(main_cmd(tmp_path / "e", tfds_dir, config="configs/titok_b64.py"),
            expect=2)  # fmt: skip
    assert "imagenet2012" in p.stderr and "photos" in p.stderr
    p = run(main_cmd(tmp_path / "f", "--config.single_stage.batch_size=3"), expect=2, devices=2)  # before compiling
    assert "error: config.single_stage.batch_size=3 is not divisible by the 2 devices" in p.stderr


def test_corrupt_images_are_skipped_and_reported(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(root / f"ok_{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    args = ["--config.data.source=folder", f"--config.data.path={root}", "--config.single_stage.num_steps=4",
            "--config.single_stage.disc_start=2", "--config.eval.batch_size=4"]  # fmt: skip
    p = run(main_cmd(tmp_path / "w", *args))
    assert "broken.png" in p.stdout and "skipped unreadable images" in p.stdout


def test_sigterm_saves_and_rerun_finishes_identically(reference, tmp_path):
    """Preemption: SIGTERM -> checkpoint after the current step, exit 143; rerun resumes bit-exactly."""
    _, ref = reference
    wd = tmp_path / "preempted"
    proc = subprocess.Popen(
        main_cmd(wd), cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    marker = wd / "single_stage" / "checkpoints" / "4" / "_CHECKPOINT_METADATA"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 143, out[-3000:]
    assert "saving a checkpoint after the current step" in out and "rerun to resume" in out
    p = run(main_cmd(wd))
    assert "resuming from step" in p.stdout
    got = final_params(wd)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
