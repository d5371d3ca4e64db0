"""Orbax checkpoints of model parameters (the hand-off format between commands and stages).

Layout (an ``ocp.CheckpointManager`` directory, written atomically by Orbax):

    CKPT_DIR/<step>/params/...   the Flax parameter tree
    CKPT_DIR/<step>/meta/...     JSON: model name/kind, the model config, where the weights came from

``load_params`` restores the latest step (or a given one), optionally straight into a target
sharding by passing an abstract tree of ``jax.ShapeDtypeStruct`` with shardings. Directories may be
local paths or ``gs://`` URLs (``etils.epath``).

``checksums(tree)`` is a per-array integrity code computed on the devices (one pass over the arrays,
two 32-bit sums per array: the words, and the words times odd position weights, so that any single
changed word is always detected): the training loop stores it with every checkpoint and checks it
after a restore.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from titok_jax import workdir


class CheckpointError(ValueError):
    pass


def save_params(ckpt_dir: str, params: Any, meta: Dict[str, Any], step: int = 0) -> str:
    """Save ``params`` (+ JSON ``meta``) as step ``step``; returns the step directory."""
    ckpt_dir = workdir.resolve(ckpt_dir)
    params = jax.tree.map(lambda x: np.asarray(x) if not isinstance(x, jax.Array) else x, params)
    options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True)
    with ocp.CheckpointManager(ckpt_dir, options=options) as mngr:
        if step in mngr.all_steps():
            raise CheckpointError(f"{ckpt_dir} already holds step {step}; choose a new --out directory")
        mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()
    return os.fspath(epath.Path(ckpt_dir) / str(step))


def _manager(ckpt_dir: str, pytree: bool = False) -> ocp.CheckpointManager:
    """Read-only manager; ``pytree=True`` reads ``params`` with the PyTree handler (partial restore)."""
    ckpt_dir = workdir.resolve(ckpt_dir)
    if not workdir.is_dir(ckpt_dir):
        raise CheckpointError(f"checkpoint directory not found: {ckpt_dir}")
    params_handler = ocp.PyTreeCheckpointHandler() if pytree else ocp.StandardCheckpointHandler()
    return ocp.CheckpointManager(
        epath.Path(ckpt_dir),
        options=ocp.CheckpointManagerOptions(create=False, read_only=True),
        item_handlers={"params": params_handler, "meta": ocp.JsonCheckpointHandler()},
    )


def _short(e: Exception, limit: int = 400) -> str:
    msg = str(e)
    return msg if len(msg) <= limit else msg[:limit] + " ..."


def abstract_from_metadata(ckpt_dir: str, step: Optional[int] = None) -> Any:
    """Shapes/dtypes stored in a checkpoint, placed on this process's first device (any topology)."""
    step = latest_step(ckpt_dir) if step is None else step
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    with _manager(ckpt_dir) as mngr:
        meta = mngr.item_metadata(step)["params"]
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), meta)


def latest_step(ckpt_dir: str) -> int:
    with _manager(ckpt_dir) as mngr:
        step = mngr.latest_step()
    if step is None:
        raise CheckpointError(f"no finished checkpoint in {ckpt_dir} (is it a titok_jax checkpoint directory?)")
    return step


def load_meta(ckpt_dir: str, step: Optional[int] = None) -> Dict[str, Any]:
    step = latest_step(ckpt_dir) if step is None else step
    with _manager(ckpt_dir) as mngr:
        return dict(mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)


def _with_sharding(x) -> jax.ShapeDtypeStruct:
    sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


def load_params(ckpt_dir: str, abstract: Any = None, step: Optional[int] = None) -> Any:
    """Restore the parameter tree.

    ``abstract``: a tree of ShapeDtypeStruct (shapes are checked; shardings, when given, place the
    arrays). Without it the stored shapes are used and everything lands on this process's first
    device, whatever topology wrote the checkpoint.
    """
    step = latest_step(ckpt_dir) if step is None else step
    with _manager(ckpt_dir) as mngr:
        if step not in mngr.all_steps():
            raise CheckpointError(f"{ckpt_dir} has no step {step}; available: {sorted(mngr.all_steps())}")
    if abstract is None:
        abstract = abstract_from_metadata(ckpt_dir, step)
    restore = ocp.args.StandardRestore(jax.tree.map(_with_sharding, abstract))
    with _manager(ckpt_dir) as mngr:
        try:
            out = mngr.restore(step, args=ocp.args.Composite(params=restore))
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"checkpoint {ckpt_dir} (step {step}) does not fit the model of this config: {_short(e)}"
            ) from None
    return out.params


def load_subtrees(ckpt_dir: str, target: Any, step: Optional[int] = None) -> Any:
    """Orbax *partial* restore of some top-level subtrees of the ``params`` item.

    ``target``: ``{name: tree of arrays or ShapeDtypeStruct}`` — only these subtrees are read, with
    the shapes (and shardings, when the leaves carry them) of ``target``.
    """
    step = latest_step(ckpt_dir) if step is None else step

    item = jax.tree.map(_with_sharding, dict(target))
    with _manager(ckpt_dir, pytree=True) as mngr:
        try:
            out = mngr.restore(
                step,
                args=ocp.args.Composite(
                    params=ocp.args.PyTreeRestore(
                        item=item,
                        restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                        partial_restore=True,
                    )
                ),
            )
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"{ckpt_dir} (step {step}) lacks or mismatches the requested subtrees: {_short(e)}"
            ) from None
    return dict(out.params)


# ---------------------------------------------------------------------------------------------- integrity
def _words(x: jax.Array) -> jax.Array:
    """The array's bits as uint32 words of the same shape (a trailing axis for 64-bit types)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    bits = jnp.dtype(x.dtype).itemsize * 8
    if bits >= 32:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{bits}")).astype(jnp.uint32)


def _code(x: jax.Array) -> jax.Array:
    """[sum of words, sum of words * (2 * position + 1)] mod 2**32 (no reshape: sharded arrays stay put)."""
    w = _words(x)
    pos = jnp.zeros(w.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(w.ndim)):
        pos = pos + jax.lax.broadcasted_iota(jnp.uint32, w.shape, axis) * jnp.uint32(stride & 0xFFFFFFFF)
        stride *= w.shape[axis]
    return jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * (pos * 2 + 1), dtype=jnp.uint32)])


def code_tree(tree: Any) -> Any:
    """The integrity code (uint32 [2]) of every array of ``tree``; jittable (``checksums`` runs it)."""
    return jax.tree.map(_code, tree)


def format_codes(codes: Any) -> Dict[str, str]:
    """Host codes from ``code_tree`` -> ``{'params/encoder/...': 'xxxxxxxx-yyyyyyyy'}``."""
    flat, _ = jax.tree_util.tree_flatten_with_path(codes)
    return {jax.tree_util.keystr(k, simple=True, separator="/"): "%08x-%08x" % tuple(int(v) for v in np.asarray(c))
            for k, c in flat}  # fmt: skip


_codes = jax.jit(code_tree)


def checksums(tree: Any) -> Dict[str, str]:
    """The integrity code of every array of ``tree`` by its path (computed where the arrays live; every
    process gets the same codes)."""
    return format_codes(jax.device_get(_codes(tree)))


def checksum_mismatches(tree: Any, expected: Dict[str, str]) -> list:
    """The array paths of ``tree`` whose code differs from ``expected`` (missing ones included)."""
    got = checksums(tree)
    return sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
