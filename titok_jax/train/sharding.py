"""Device mesh and shardings for training (axes ``data`` and ``fsdp``).

Parameters, optimizer state and EMA are sharded FSDP-style (big_vision's ``fsdp`` strategy): each
array is split along its largest dimension that the ``fsdp`` axis size divides, and replicated over
``data``; small arrays (fewer than ``min_size`` elements) and scalars are replicated. Batches are
split along the batch axis over both mesh axes. No model annotations are needed, so the same rule
shards the tokenizer, the teacher, the discriminator and the perceptual network.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(shape: Sequence[int] = (-1, 1), devices=None) -> Mesh:
    """Mesh ('data', 'fsdp') of all devices (``-1`` = the remaining devices). Axis types are Auto."""
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if len(shape) != 2:
        raise ValueError(f"mesh shape must have 2 entries (data, fsdp), got {shape}")
    if shape.count(-1) > 1:
        raise ValueError("at most one mesh axis may be -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot form a mesh of shape {shape}")
        shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"mesh shape {shape} needs {int(np.prod(shape))} devices, {len(devices)} available")
    arr = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(arr, BATCH_AXES)


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


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
    n = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % n:
        raise ValueError(
            f"global batch size {global_batch} is not divisible by the {n} devices of the mesh {dict(mesh.shape)}"
        )
    if global_batch % jax.process_count():
        raise ValueError(f"global batch size {global_batch} is not divisible by the {jax.process_count()} processes")
