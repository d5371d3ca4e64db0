"""Linear probing of frozen tokenizer features: the features and the classifier (the paper's
representation-quality experiment; the step that runs it over a dataset is ``titok_jax.steps.linear_probe``).

Per image, the feature is the mean over the K latent tokens of the encoder's latent-token outputs
before quantization:

* ``'encoder'``: the ViT encoder's width-W outputs at the K latent positions after ``ln_post`` and
  before ``conv_out`` ([B, K, W] -> [B, W]). They are read with Flax ``capture_intermediates``
  (filtered to the encoder's ``ln_post``), so the model code is untouched. In ``TiTokEncoder`` the
  latent positions are sliced before ``ln_post``; the legacy reshape of official_titok.md section 1.3
  happens after ``ln_post``, inside the projection, and does not affect these features.
* ``'latent'``: ``TiTok.encode_continuous``, the ``conv_out`` projection that the quantizer receives
  ([B, K, token_size] -> [B, token_size]); for VAE tokenizers the posterior mean.

The classifier is softmax regression trained with optax (AdamW, or SGD with momentum) and a cosine
decay of the learning rate to 0; features are standardised with the train split's statistics.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from titok_jax.config.sections import LINEAR_PROBE_FEATURES as FEATURES
from titok_jax.config.sections import LINEAR_PROBE_OPTIMIZERS as OPTIMIZERS
from titok_jax.errors import InputError


class LinearProbeError(InputError):
    """Bad settings, unlabelled data or a missing tokenizer."""


# ---------------------------------------------------------------------------------------------- features
def _is_encoder_ln_post(module, method_name: str) -> bool:
    return method_name == "__call__" and tuple(module.path) == ("encoder", "ln_post")


def encoder_token_features(tokenizer_module, params, images):
    """The encoder's outputs at the K latent positions after ``ln_post``, before ``conv_out``: [B, K, W]."""
    m = tokenizer_module
    _, state = m.apply(
        {"params": params},
        images,
        method=m.encode_continuous,
        capture_intermediates=_is_encoder_ln_post,
        mutable=["intermediates"],
    )
    try:
        out = state["intermediates"]["encoder"]["ln_post"]["__call__"][0]
    except (KeyError, IndexError, TypeError):
        raise LinearProbeError(
            "could not capture the output of the encoder's ln_post (expected the TiTok module layout "
            "encoder/ln_post); has the encoder been renamed?"
        ) from None
    c = m.config
    k, w, patches = c.num_latent_tokens, c.encoder_vit[0], c.grid_size**2
    if out.ndim == 3 and out.shape[1] == 1 + patches + k:  # ln_post over the whole sequence: keep the latents
        out = out[:, 1 + patches :]
    if tuple(out.shape[1:]) != (k, w):
        raise LinearProbeError(f"encoder ln_post output has shape {tuple(out.shape)}, expected [B, {k}, {w}]")
    return out


def extract_features(tokenizer_module, params, images, kind: str):
    """Per-image features [B, D] float32: the mean over the K latent tokens of ``kind``'s token outputs.

    ``tokenizer_module``: a ``TiTok``; ``params``: its parameters (``ENCODE_PARTS`` suffice); ``images``
    float [B, S, S, 3] in [0, 1]; ``kind``: 'encoder' (D = encoder width) or 'latent' (D = token_size).
    Pure and jit-able.
    """
    m = tokenizer_module
    if kind == "encoder":
        tokens = encoder_token_features(m, params, images)
    elif kind == "latent":
        tokens = m.apply({"params": params}, images, method=m.encode_continuous)
        if m.config.quantize_mode == "vae":
            tokens = tokens[..., : m.config.token_size]  # posterior mean (moments = [mean, logvar])
    else:
        raise LinearProbeError(f"feature kind must be one of {FEATURES}, got {kind!r}")
    return jnp.mean(tokens.astype(jnp.float32), axis=1)


def feature_dim(tokenizer_config, kind: str) -> int:
    return tokenizer_config.encoder_vit[0] if kind == "encoder" else tokenizer_config.token_size


# ---------------------------------------------------------------------------------------------- classifier
def standardize(train_x: np.ndarray, *others: np.ndarray, eps: float = 1e-6):
    """(train, *others) scaled with the train mean/std per feature; returns (scaled arrays, mean, std)."""
    mean = train_x.mean(axis=0, dtype=np.float64)
    std = np.maximum(train_x.std(axis=0, dtype=np.float64), eps)
    scaled = [((x - mean) / std).astype(np.float32) for x in (train_x, *others)]
    return scaled, mean.astype(np.float32), std.astype(np.float32)


def _tx(optimizer: str, schedule, weight_decay: float, momentum: float):
    decay_mask = {"kernel": True, "bias": False}
    if optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask)
    return optax.chain(optax.masked(optax.add_decayed_weights(weight_decay), decay_mask),
                       optax.sgd(schedule, momentum=momentum))  # fmt: skip


def train_classifier(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    optimizer: str = "adamw",
    momentum: float = 0.9,
    seed: int = 0,
) -> Tuple[Dict[str, np.ndarray], List[float]]:
    """Softmax regression on ``x`` [N, D] / integer labels ``y`` [N] with optax (``optimizer`` + cosine
    decay of ``lr`` to 0, decoupled weight decay on the kernel only). One jitted program per epoch (a
    ``lax.scan`` over the mini-batches of a seeded permutation; the last partial batch is masked).
    Returns ({'kernel' [D, C], 'bias' [C]}, mean training loss per epoch)."""
    if optimizer not in OPTIMIZERS:
        raise LinearProbeError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    n, d = x.shape
    bs = min(batch_size, n)
    steps = -(-n // bs)
    schedule = optax.cosine_decay_schedule(lr, decay_steps=max(1, epochs * steps))
    tx = _tx(optimizer, schedule, weight_decay, momentum)
    params = {"kernel": jnp.zeros((d, num_classes), jnp.float32), "bias": jnp.zeros((num_classes,), jnp.float32)}
    opt_state = tx.init(params)
    xs, ys = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)

    @jax.jit
    def epoch(params, opt_state, order, weights):
        def step(carry, batch):
            p, o = carry
            idx, w = batch

            def loss_fn(p):
                logits = xs[idx] @ p["kernel"] + p["bias"]
                ce = optax.softmax_cross_entropy_with_integer_labels(logits, ys[idx])
                return jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1.0)

            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, o = tx.update(grads, o, p)
            return (optax.apply_updates(p, updates), o), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (order, weights))
        return params, opt_state, jnp.mean(losses)

    history = []
    for e in range(epochs):
        perm = np.random.default_rng([seed, e]).permutation(n)
        order = np.zeros(steps * bs, np.int32)
        order[:n] = perm
        weights = (np.arange(steps * bs) < n).astype(np.float32)
        params, opt_state, loss = epoch(params, opt_state, order.reshape(steps, bs), weights.reshape(steps, bs))
        history.append(loss)
    return jax.tree.map(np.asarray, params), [float(v) for v in history]


def evaluate_classifier(params: Dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> Dict[str, Any]:
    """{'top1', 'top5', 'loss'}: top-1 and top-k accuracy (reported as 'top5' with k capped at the number
    of classes) and the mean cross-entropy."""
    logits = x.astype(np.float64) @ params["kernel"].astype(np.float64) + params["bias"].astype(np.float64)
    k = min(5, logits.shape[1])
    topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    valid = (y >= 0) & (y < logits.shape[1])
    ce = -logp[np.arange(len(y))[valid], y[valid]]
    return {
        "top1": float(np.mean(topk[:, 0] == y)) if len(y) else float("nan"),
        "top5": float(np.mean(np.any(topk == y[:, None], axis=1))) if len(y) else float("nan"),
        "loss": float(np.mean(ce)) if ce.size else float("nan"),
    }
