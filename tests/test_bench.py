"""The benchmark's mechanics: the CPU matmul backend choice, warm-up and median, the alternating official
comparison and its table, and the command line's refusals (no full-size model is run here)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

from titok_jax import parallel
from titok_jax.benchmarks import common, compare, inference
from titok_jax.errors import ConfigError

FLAG = parallel.CPU_MATMUL_FLAG


def test_cpu_matmul_default_never_overrides_xla_flags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    parallel.choose_cpu_matmul()  # jaxlib 0.10 here: the measured default is added, other flags kept
    assert os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", FLAG + "="]
    assert parallel.cpu_matmul() == "eigen"
    for own in (f"{FLAG}=default", f"{FLAG}=dot,convolution"):
        monkeypatch.setenv("XLA_FLAGS", own)
        parallel.choose_cpu_matmul()
        assert os.environ["XLA_FLAGS"] == own  # the user's value wins, even jaxlib's own default
        assert parallel.cpu_matmul().startswith("ynnpack")
    monkeypatch.setattr(parallel, "CPU_MATMUL_JAXLIB", ())  # a jaxlib where the flag was not measured
    monkeypatch.setenv("XLA_FLAGS", "")
    parallel.choose_cpu_matmul()
    assert os.environ["XLA_FLAGS"] == "" and parallel.cpu_matmul() == "ynnpack"


def test_cpu_matmul_explicit_choice_replaces_the_flag(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--xla_cpu_use_thunk_runtime=true {FLAG}=default")
    parallel.choose_cpu_matmul("eigen")
    assert os.environ["XLA_FLAGS"].split() == ["--xla_cpu_use_thunk_runtime=true", FLAG + "="]
    parallel.choose_cpu_matmul("ynnpack")
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_thunk_runtime=true" and parallel.cpu_matmul() == "ynnpack"
    with pytest.raises(ConfigError, match="eigen"):
        parallel.choose_cpu_matmul("mkl")


def test_time_calls_excludes_the_warm_up_and_reports_the_median():
    calls = []
    times = common.time_calls(lambda: calls.append(1), 4)
    assert len(calls) == 5 and len(times) == 4  # one warm-up call, never counted
    assert common.median([3.0, 1.0, 2.0]) == 2.0
    assert "threads:" in common.header_lines()[1] and "CPU matmul backend" in common.header_lines()[2]


class _Official:
    """The comparison's view of the official worker (a child process in real use): it records its calls."""

    def __init__(self, log):
        self.log = log

    def call(self, row):
        self.log.append(("official", row))
        return 2.0


def test_comparison_alternates_and_reports_the_ratio():
    log = []
    task = inference.Task("titok_b64", "tokenize", 8, "float32", lambda: log.append(("ours", "tokenize")), 1.5, 60.0)
    times = compare.time_both(task, _Official(log), iters=3)
    assert [side for side, _ in log] == ["ours", "official"] * 4  # warm-up of both, then alternating
    assert len(times["ours"]) == 3 and times["official"] == [2.0, 2.0, 2.0]
    r = compare.result(task, {"ours": [1.0, 0.5, 4.0], "official": [2.0, 2.0, 2.0]})
    assert r["ratio"] == 2.0 and r["ours_images_per_s"] == 8.0 and r["official_images_per_s"] == 4.0
    row = compare.table_row(r)
    assert row.startswith("| titok_b64 | tokenize | 8 | 8.000 | 4.000 | 2.00x |")
    assert row.count("|") == compare.table_head().splitlines()[0].count("|")


def _bench(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "titok_jax.cli.bench", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_bench_refuses_what_it_cannot_compare(tmp_path):
    p = _bench("--compare_official=.", "--dtypes=bfloat16")
    assert p.returncode == 1 and "float32" in p.stderr, p.stderr[-2000:]
    p = _bench(f"--compare_official={tmp_path}", f"--json={tmp_path / 'out.json'}")
    assert p.returncode == 2 and "not a checkout of bytedance/1d-tokenizer" in p.stderr, p.stderr[-2000:]
    p = _bench("--models=titok_x", "--rows=tokenize")
    assert p.returncode == 1 and "titok_x" in p.stderr, p.stderr[-2000:]
