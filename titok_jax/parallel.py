"""Devices, meshes and processes: the one place that knows how work is split across them.

* Meshes: ``make_mesh((data, fsdp))`` (``jax.make_mesh``, Auto axes); ``state_shardings`` shards
  parameters, optimizer state and EMA FSDP-style (big_vision's ``fsdp`` rule: each array split along
  its largest dimension that the ``fsdp`` axis divides, replicated over ``data``; small arrays and
  scalars replicated), so no model needs annotations; batches are split over both axes.
* Global arrays: ``to_global_array`` assembles a global ``jax.Array`` from each process's batch.
* Processes: ``process_share(n)`` is this process's contiguous slice of n items; ``gather_rows``
  concatenates every process's rows (row counts may differ), on every process; ``any_process`` /
  ``all_processes`` / ``from_process_0`` agree on a flag or a number.
* ``data_parallel(fn, params, batch_size)``: ``fn(params, x)`` jitted over this process's local
  devices (params replicated, the batch split), with a shape check -- the tokenizer's encode, the
  linear probe's features.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from titok_jax.errors import ConfigError, InputError

BATCH_AXES = ("data", "fsdp")


def make_mesh(shape: Sequence[int] = (-1, 1), devices: Optional[Sequence[Any]] = None) -> Mesh:
    """Mesh ('data', 'fsdp') over ``devices`` (default: all devices of all processes); ``-1`` = the
    remaining devices. Built with ``jax.make_mesh`` (topology-aware device order), Auto axis types."""
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if len(shape) != 2:
        raise ConfigError(f"mesh shape must have 2 entries (data, fsdp), got {shape}")
    if shape.count(-1) > 1:
        raise ConfigError("at most one mesh axis may be -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if len(devices) % known:
            raise ConfigError(f"{len(devices)} devices cannot form a mesh of shape {shape}")
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        raise ConfigError(f"mesh shape {shape} needs {int(np.prod(shape))} devices, {len(devices)} available")
    auto = (jax.sharding.AxisType.Auto,) * 2
    return jax.make_mesh(tuple(shape), BATCH_AXES, axis_types=auto, devices=devices)


def fsdp_spec(shape: Sequence[int], fsdp_size: int, min_size: int = 2**12) -> P:
    if fsdp_size <= 1 or int(np.prod(shape or (1,))) < min_size:
        return P()
    order = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in order:
        if shape[i] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[i] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(abstract_tree: Any, mesh: Mesh, min_size: int = 2**12) -> Any:
    """NamedSharding per leaf of an abstract (eval_shape) tree."""
    fsdp = mesh.shape["fsdp"]

    def one(x):
        shape = getattr(x, "shape", ())
        if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
            return NamedSharding(mesh, P())
        return NamedSharding(mesh, fsdp_spec(tuple(shape), fsdp, min_size))

    return jax.tree.map(one, abstract_tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "batch_size") -> None:
    n = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % n:
        raise ConfigError(
            f"{what}={global_batch} is not divisible by the {n} devices of the mesh {dict(mesh.shape)}: "
            f"use a multiple of {n}"
        )
    if global_batch % jax.process_count():
        raise ConfigError(f"{what}={global_batch} is not divisible by the {jax.process_count()} processes")


def to_global_array(batch: Dict[str, np.ndarray], mesh: Mesh, pspec=None) -> Dict[str, Any]:
    """Assemble the global ``jax.Array`` of each leaf from this process's batch (all processes call it).

    ``pspec``: a ``PartitionSpec`` for every leaf (default: the batch axis over both mesh axes), or a
    pytree of them matching ``batch``.
    """
    if pspec is None:
        pspec = P(BATCH_AXES)
    if isinstance(pspec, P):
        sharding = NamedSharding(mesh, pspec)
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
    return jax.tree.map(
        lambda x, s: jax.make_array_from_process_local_data(NamedSharding(mesh, s), np.asarray(x)), batch, pspec
    )


# ---------------------------------------------------------------------------------------------- processes
def process_share(n: int) -> slice:
    """This process's contiguous share of ``n`` items (all of them with one process)."""
    bounds = np.linspace(0, n, jax.process_count() + 1).astype(int)
    i = jax.process_index()
    return slice(int(bounds[i]), int(bounds[i + 1]))


def steps_for_share(n: int, batch_size: int) -> int:
    """Batches every process must run over its share of ``n`` items so that all make the same number
    of calls (collectives stay in step; a trailing batch may be empty)."""
    per_process = -(-n // jax.process_count())
    return max(1, -(-per_process // batch_size))


def gather_rows(x: np.ndarray) -> np.ndarray:
    """Every process's rows of ``x``, concatenated in process order, on every process (one process:
    ``x`` unchanged). Row counts may differ between processes; every process must call this."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x
    counts = np.asarray(multihost_utils.process_allgather(np.asarray([x.shape[0]], np.int64))).reshape(-1)
    pad = int(counts.max()) - x.shape[0]
    padded = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    allx = np.asarray(multihost_utils.process_allgather(padded))
    return np.concatenate([allx[i, : int(c)] for i, c in enumerate(counts)])


def sync(name: str) -> None:
    """A barrier across processes (no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any of them (every process must call this)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.asarray([int(bool(flag))], np.int32))))


def all_processes(flag: bool) -> bool:
    """True on every process when ``flag`` is True on all of them (every process must call this)."""
    return not any_process(not flag)


def from_process_0(value: int) -> int:
    """Process 0's ``value`` on every process (every process must call this)."""
    if jax.process_count() == 1:
        return int(value)
    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))


# ---------------------------------------------------------------------------------------------- local data parallel
def data_parallel(
    fn: Callable[[Any, Any], Any],
    params: Any,
    batch_size: int,
    *,
    item_shape: Sequence[int],
    what: str = "batch_size",
    devices: Optional[Sequence[Any]] = None,
) -> Callable[[np.ndarray], Any]:
    """``x [batch_size, *item_shape] -> fn(params, x)`` jitted over ``devices`` (default: this process's
    local devices): params replicated, the batch split over a 1-D mesh. ``batch_size`` must be a
    multiple of the device count (``what`` names the setting in the error). Returns ``jax.Array`` (async)."""
    devices = list(jax.local_devices() if devices is None else devices)
    if batch_size < 1 or batch_size % len(devices):
        raise ConfigError(
            f"{what}={batch_size} must be a positive multiple of the {len(devices)} local device(s) that share "
            "each batch"
        )
    mesh = Mesh(np.asarray(devices, dtype=object), ("data",))
    data_sh, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    params = jax.device_put(params, repl)
    jitted = jax.jit(fn, in_shardings=(repl, data_sh), out_shardings=data_sh)
    want = (batch_size,) + tuple(item_shape)

    def call(x: np.ndarray):
        x = np.asarray(x, np.float32)
        if x.shape != want:
            raise InputError(f"expected a batch of shape {list(want)}, got {list(x.shape)}")
        return jitted(params, jax.device_put(x, data_sh))

    return call
