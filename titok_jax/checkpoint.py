"""Orbax checkpoints of model parameters (the hand-off format between commands and stages).

Layout (an ``ocp.CheckpointManager`` directory, written atomically by Orbax):

    CKPT_DIR/<step>/params/...   the Flax parameter tree
    CKPT_DIR/<step>/meta/...     JSON: model name/kind, the model config, where the weights came from

``load_params`` restores the latest step (or a given one), optionally straight into a target
sharding by passing an abstract tree of ``jax.ShapeDtypeStruct`` with shardings.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
    pass


def save_params(ckpt_dir: str, params: Any, meta: Dict[str, Any], step: int = 0) -> str:
    """Save ``params`` (+ JSON ``meta``) as step ``step``; returns the step directory."""
    ckpt_dir = os.path.abspath(ckpt_dir)
    params = jax.tree.map(lambda x: np.asarray(x) if not isinstance(x, jax.Array) else x, params)
    options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True)
    with ocp.CheckpointManager(ckpt_dir, options=options) as mngr:
        if step in mngr.all_steps():
            raise CheckpointError(f"{ckpt_dir} already holds step {step}; choose a new --out directory")
        mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()
    return os.path.join(ckpt_dir, str(step))


def _manager(ckpt_dir: str) -> ocp.CheckpointManager:
    ckpt_dir = os.path.abspath(ckpt_dir)
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(f"checkpoint directory not found: {ckpt_dir}")
    return ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False, read_only=True))


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


def load_params(ckpt_dir: str, abstract: Any = None, step: Optional[int] = None) -> Any:
    """Restore the parameter tree. ``abstract``: a tree of ShapeDtypeStruct (shapes are checked)."""
    step = latest_step(ckpt_dir) if step is None else step
    with _manager(ckpt_dir) as mngr:
        if step not in mngr.all_steps():
            raise CheckpointError(f"{ckpt_dir} has no step {step}; available: {sorted(mngr.all_steps())}")
        if abstract is None:
            restore = ocp.args.StandardRestore()
        else:
            abstract = jax.tree.map(
                lambda x: (
                    jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
                    if getattr(x, "sharding", None) is not None
                    else jax.ShapeDtypeStruct(
                        x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])
                    )
                ),
                abstract,
            )
            restore = ocp.args.StandardRestore(abstract)
        try:
            out = mngr.restore(step, args=ocp.args.Composite(params=restore))
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"checkpoint {ckpt_dir} (step {step}) does not fit the model of this config: {e}"
            ) from None
    return out.params


def load_subtrees(ckpt_dir: str, target: Any, step: Optional[int] = None) -> Any:
    """Orbax *partial* restore of some top-level subtrees of the ``params`` item.

    ``target``: ``{name: tree of arrays or ShapeDtypeStruct}`` — only these subtrees are read, with
    the shapes (and shardings, when the leaves carry them) of ``target``.
    """
    step = latest_step(ckpt_dir) if step is None else step

    def spec(x):
        sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    item = jax.tree.map(spec, dict(target))
    with _manager(ckpt_dir) as mngr:
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
            raise CheckpointError(f"{ckpt_dir} (step {step}) lacks or mismatches the requested subtrees: {e}") from None
    return dict(out.params)
