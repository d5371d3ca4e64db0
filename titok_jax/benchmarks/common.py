"""What both benchmarks share: the machine header, timing of compiled programs, FLOPs and the matmul peak.

Timing rules (``time_calls``): compilation is timed apart, one warm-up call is never counted, every
timed call is waited on (``block_until_ready``) and the median of the timed calls is reported.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any, Callable, Dict, List

import jax
import jax.numpy as jnp

from titok_jax import parallel


def block(x: Any) -> Any:
    return jax.tree.map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def processor() -> str:
    """The CPU model (``/proc/cpuinfo``'s ``model name``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_threads() -> int:
    """CPUs this process may run on (XLA's CPU thread pool and the comparison's torch threads use this)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> str:
    try:
        return "load average %.2f, %.2f, %.2f" % os.getloadavg()
    except OSError:
        return "load average n/a"


def describe_device() -> str:
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", "")
    return f"{dev.platform} {kind} x{jax.device_count()}".strip()


def header_lines() -> List[str]:
    """Device, processor, threads, versions, the CPU matmul backend and the load average, one per line."""
    lines = [
        f"device: {describe_device()}",
        f"processor: {processor()}; threads: {cpu_threads()}",
        f"jax {jax.__version__}; XLA CPU matmul backend: {parallel.cpu_matmul()}",
        f"time: {time.strftime('%Y-%m-%d %H:%M:%S')}; {load_average()}",
    ]
    return lines


def flops(compiled) -> float:
    """FLOPs of a compiled program from XLA's cost analysis (nan where the backend has no cost model)."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # some backends have no cost model
        return float("nan")
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", float("nan")))


def compile_fn(fn: Callable, args) -> Dict[str, Any]:
    """``jax.jit(fn)`` compiled for ``args``: {'call': a no-argument blocking call, 'compile_s', 'flops'}."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    return {"call": lambda: block(compiled(*args)), "compile_s": compile_s, "flops": flops(compiled)}


def time_call(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def time_calls(call: Callable[[], Any], iters: int) -> List[float]:
    """One warm-up call (not counted), then ``iters`` timed calls."""
    call()
    return [time_call(call) for _ in range(iters)]


def median(times: List[float]) -> float:
    return float(statistics.median(times))


def matmul_peak(dtype, n: int, iters: int = 5) -> float:
    """Sustained FLOP/s of an n x n x n matmul chain in ``dtype`` on the default device (median of ``iters``)."""
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n), dtype)
    b = jax.random.normal(k2, (n, n), dtype)
    reps = 8

    def chain(a, b):
        def body(_, x):
            return (x @ b) * jnp.asarray(1e-3, dtype)

        return jax.lax.fori_loop(0, reps, body, a)

    c = compile_fn(chain, (a, b))
    return 2.0 * n**3 * reps / median(time_calls(c["call"], iters))
