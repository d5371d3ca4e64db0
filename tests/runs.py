"""Running the training command as users do, in subprocesses (shared by the training-loop tests).

``env(cache=DIR)`` points JAX's persistent compilation cache at DIR, so the runs of one test module
compile each program once (a cached executable is the one compiled: results stay bit-identical).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import List, Optional

import numpy as np
from conftest import REPO

from titok_jax import checkpoint
from titok_jax.porting.mapping import flatten


def main_cmd(workdir, *extra, config):
    return [sys.executable, "-m", "titok_jax.main", f"--config={config}", f"--workdir={workdir}", *extra]


def env(devices: int = 1, cache=None):
    e = dict(os.environ, PYTHONPATH=str(REPO))
    flags = e.get("XLA_FLAGS", "")
    e["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    if cache is not None:
        e.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")  # fmt: skip
    return e


def run(cmd, expect=0, devices=1, timeout=900, cache=None):
    p = subprocess.run(cmd, cwd=REPO, env=env(devices, cache), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == expect, f"exit {p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}"
    return p


def start(cmd, cache=None, devices=1) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=env(devices, cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def wait_for(path, procs, timeout=900.0, poll=0.02) -> None:
    """Until ``path`` exists; fails when a process of ``procs`` ended first."""
    procs = procs if isinstance(procs, list) else [procs]
    deadline = time.time() + timeout
    while not os.path.exists(path):
        ended = [p for p in procs if p.poll() is not None]
        if ended or time.time() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
            out = [p.communicate() for p in procs]
            raise AssertionError(f"{path} did not appear (exit codes {[p.returncode for p in procs]}): {out}")
        time.sleep(poll)


def final_params(workdir, stage="single_stage"):
    return {
        "/".join(k): np.asarray(v)
        for k, v in flatten(checkpoint.load_params(os.path.join(workdir, stage, "final"))).items()
    }


def assert_same(got, ref):
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(workdir, *extra, config, n=2, cache=None) -> List[subprocess.Popen]:
    """``n`` processes of one run joined by ``jax.distributed`` (one CPU device each)."""
    dist = [f"--coordinator_address=127.0.0.1:{free_port()}", f"--num_processes={n}"]
    return [start(main_cmd(workdir, *dist, f"--process_id={i}", *extra, config=config), cache) for i in range(n)]


def finish(procs, expect: Optional[int] = 0, timeout=900):
    """(stdout, stderr) of every process; asserts their exit codes equal ``expect`` (unless None)."""
    outs = [p.communicate(timeout=timeout) for p in procs]
    if expect is not None:
        for i, (p, (out, err)) in enumerate(zip(procs, outs)):
            assert p.returncode == expect, f"process {i}: exit {p.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return outs
