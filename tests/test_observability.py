"""Progress displays (rate, ETA, process 0 only) and the profiler window (the persistent compilation cache:
tests/test_hub.py, through a command line)."""

import logging

import numpy as np
import pytest
from logcapture import Lines

from titok_jax import data as data_lib
from titok_jax import logs
from titok_jax.config.sections import DataConfig
from titok_jax.steps import pretokenize as pt


@pytest.fixture(autouse=True)
def no_terminal(monkeypatch):  # log lines, as in log files and notebooks, even when pytest runs in a terminal
    monkeypatch.setattr(logs, "_terminal", lambda: False)


@pytest.fixture
def progress_lines():
    handler, logger = Lines(), logging.getLogger("titok_jax.progress")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_progress_line_has_rate_and_eta(monkeypatch, progress_lines):
    clock = iter([100.0, 101.0, 111.0, 200.0, 300.0])
    monkeypatch.setattr(logs, "_clock", lambda: next(clock))
    bar = logs.progress(100, "evaluate", "img", interval=30.0, enabled=True)  # t0 = 100
    bar.update(10)  # t = 101: first update, logged at once (the job has started)
    bar.update(20)  # t = 111: 20 img in 10 s after the first update -> 2 img/s; < 30 s since the last line
    assert progress_lines == ["[evaluate] 10/100 img (10%), elapsed 00:01"]
    bar.update(70)  # t = 200: logged (interval passed)
    bar.close()  # t = 300: the closing line
    assert progress_lines[1].startswith("[evaluate] 100/100 img (100%), elapsed 01:40, 0.909 img/s")
    assert "ETA" not in progress_lines[1]
    assert progress_lines[2].startswith("[evaluate] 100/100 img (100%), elapsed 03:20")


def test_progress_eta(monkeypatch):
    clock = iter([0.0, 5.0, 15.0, 15.0])
    monkeypatch.setattr(logs, "_clock", lambda: next(clock))
    bar = logs.progress(1000, "sample", "img", enabled=True)
    bar.update(100)
    bar.update(100)  # 100 img in 10 s -> 10 img/s; 800 left -> ETA 80 s
    assert bar.line() == "[sample] 200/1,000 img (20%), elapsed 00:15, 10 img/s, ETA 01:20"


def test_progress_is_silent_when_disabled(progress_lines):
    with logs.progress(3, "x", enabled=False) as bar:
        bar.update(3)
    assert progress_lines == []


def test_pretokenize_reports_progress(tmp_path, progress_lines):
    source = data_lib.make_source(DataConfig(source="photos", split="train", eval_split="eval"), train=True)

    def encode_fn(x):
        return np.zeros((x.shape[0], 4), np.int32)

    pt.pretokenize(encode_fn, source, tmp_path, image_size=32, shard_size=3, batch_size=4, codebook_size=16)
    assert progress_lines[0].startswith("[pretokenize] ") and f"/{len(source)} img" in progress_lines[0]
    assert progress_lines[-1].startswith(f"[pretokenize] {len(source)}/{len(source)} img (100%)")


def test_profiler_window_traces_the_chosen_steps(tmp_path, caplog):
    """ProfileWindow as the training loop drives it: steps 1..2 of 4 traced into the stage's logs folder."""
    import jax
    import jax.numpy as jnp

    from titok_jax.train.metrics import ProfileWindow

    step_fn = jax.jit(lambda s: s * 1.01 + 1.0)
    state = jnp.ones((64, 64))
    window = ProfileWindow(1, 2, str(tmp_path / "logs"), "stage")
    with caplog.at_level(logging.INFO, logger="titok_jax.train.metrics"):
        for step in range(4):
            window.before_step(step, state)
            assert window.active == (step in (1, 2))
            state = step_fn(state)
        window.close(state)
    traces = list((tmp_path / "logs" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert "[stage] profiling steps 1..2" in caplog.text
    off = ProfileWindow(0, 0, str(tmp_path / "off"), "stage")
    off.before_step(0, state)
    assert not off.active and not (tmp_path / "off").exists()
