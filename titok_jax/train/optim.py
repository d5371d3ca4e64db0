"""Optimizer, learning-rate schedule, weight-decay mask, freezing and EMA (official recipe).

* AdamW (optax) with the official weight-decay exclusion: a tensor is *not* decayed when it has
  ndim < 2 or its **official PyTorch name** contains any of ``ln, bias, latent_tokens, mask_token,
  embedding, norm, gamma, embed`` (1d-tokenizer ``utils/train_utils.py create_optimizer``). The
  official name of each Flax leaf comes from the model's explicit name map, so the rule is applied
  to exactly the names the official code sees (e.g. ``patch_embed.weight`` is not decayed).
* Cosine schedule with linear warmup (1d-tokenizer ``utils/lr_schedulers.py``): ``base * g / warmup``
  for g < warmup, then ``end + (base - end) * 0.5 * (1 + cos(pi * (g - warmup) / (max - warmup)))``;
  the first step uses lr 0.
* Global-norm gradient clipping before the AdamW update.
* Frozen subtrees get **zero updates** (``optax.set_to_zero``) and carry no optimizer state.
* EMA (diffusers-style ``EMAModel`` of the official code): the first update copies the parameters,
  the update after t >= 1 previous ones uses ``decay_t = min(decay, (1 + t) / (10 + t))``;
  ``ema <- ema - (1 - decay_t) * (ema - param)``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from titok_jax.porting.mapping import NameMap, flatten, unflatten

NO_DECAY_SUBSTRINGS = ("ln", "bias", "latent_tokens", "mask_token", "embedding", "norm", "gamma", "embed")


def cosine_schedule(base_lr: float, end_lr: float, warmup_steps: int, total_steps: int) -> Callable:
    """Official cosine-with-warmup schedule as an optax schedule (step -> lr)."""
    base_lr, end_lr = float(base_lr), float(end_lr)
    warmup_steps, total_steps = int(warmup_steps), int(total_steps)

    def schedule(step):
        g = jnp.asarray(step, jnp.float32)
        warm = base_lr * g / max(warmup_steps, 1)
        progress = (g - warmup_steps) / max(total_steps - warmup_steps, 1)
        progress = jnp.clip(progress, 0.0, 1.0)
        cos = end_lr + (base_lr - end_lr) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
        return jnp.where(g < warmup_steps, warm, cos)

    return schedule


def _official_names(name_map: Optional[NameMap]) -> dict:
    return {r.flax_path: r.external_key for r in name_map.rules} if name_map is not None else {}


def _decayed(name: str, ndim: int) -> bool:
    return ndim >= 2 and not any(s in name for s in NO_DECAY_SUBSTRINGS)


def decay_mask_fn(name_map: Optional[NameMap]) -> Callable:
    """A callable (params tree -> bool tree) for ``optax.adamw(mask=...)``; skips optax.MaskedNode."""
    names = _official_names(name_map)

    def mask_fn(tree):
        def one(path, leaf):
            if isinstance(leaf, optax.MaskedNode):
                return leaf
            key = tuple(getattr(k, "key", str(k)) for k in path)
            return _decayed(names.get(key, ".".join(key)), len(leaf.shape))

        return jax.tree_util.tree_map_with_path(one, tree, is_leaf=lambda x: isinstance(x, optax.MaskedNode))

    return mask_fn


def decay_mask(params: Mapping, name_map: Optional[NameMap]) -> Any:
    """True where the official recipe applies weight decay."""
    return decay_mask_fn(name_map)(params)


def trainable_mask(params: Mapping, frozen: Sequence[str]) -> Any:
    """'train' / 'frozen' label per leaf; ``frozen`` are regexes on '/'-joined Flax paths."""
    pats = [re.compile(p) for p in frozen]
    flat = flatten(params)
    return unflatten(
        {
            p: ("frozen" if any(r.fullmatch("/".join(p)) or r.match("/".join(p)) for r in pats) else "train")
            for p in flat
        }
    )


def make_optimizer(
    params: Mapping,
    *,
    lr_schedule: Callable,
    b1: float,
    b2: float,
    eps: float = 1e-8,
    weight_decay: float,
    grad_clip: Optional[float],
    name_map: Optional[NameMap] = None,
    frozen: Sequence[str] = (),
    accumulation_steps: int = 1,
) -> optax.GradientTransformation:
    """Clip -> AdamW (official decay mask); frozen subtrees get zero updates and no state."""
    chain = []
    if grad_clip:
        chain.append(optax.clip_by_global_norm(grad_clip))
    chain.append(
        optax.adamw(lr_schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=decay_mask_fn(name_map))
    )
    tx = optax.chain(*chain)
    if frozen:
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, trainable_mask(params, frozen))
    if accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulation_steps)
    return tx


def ema_decay(num_updates, decay: float):
    """Decay of the update after ``num_updates`` previous ones: 0 (copy) first, then (1+t)/(10+t) capped."""
    t = jnp.asarray(num_updates, jnp.float32)
    return jnp.where(t < 1, 0.0, jnp.minimum(decay, (1.0 + t) / (10.0 + t)))


def ema_update(ema_params, params, num_updates, decay: float):
    """One official EMA step (``modeling/modules/ema_model.py``); frozen leaves simply follow params."""
    d = ema_decay(num_updates, decay)
    return jax.tree.map(lambda e, p: e - (1.0 - d) * (e - p), ema_params, params)
