"""Linear probing of frozen TiTok encoder features (the paper's representation-quality experiment).

    python -m titok_jax.linear_probe --config=configs/titok_b64.py --workdir=runs/b64 \\
        --config.data.source=folder --config.data.path=/data/train --config.data.eval_path=/data/val

A linear softmax classifier is trained on features of the frozen tokenizer and scored on the eval
split (top-1 / top-5). Per image, the feature is the mean over the K latent tokens of the encoder's
latent-token outputs before quantization (``linear_probe.feature``):

* ``'encoder'``: the ViT encoder's width-W outputs at the K latent positions after ``ln_post`` and
  before ``conv_out`` ([B, K, W] -> [B, W]). They are read with Flax ``capture_intermediates``
  (filtered to the encoder's ``ln_post``), so the model code is untouched. In ``TiTokEncoder`` the
  latent positions (after the class token and the grid*grid patches) are sliced before ``ln_post``,
  so its output is already per latent token; the legacy reshape of official_titok.md section 1.3
  happens after ``ln_post``, inside the projection, and does not affect these features.
* ``'latent'``: ``TiTok.encode_continuous``, the ``conv_out`` projection that the quantizer receives
  ([B, K, token_size] -> [B, token_size]); for VAE tokenizers the posterior mean (first half of the
  moments).

Both splits are read with the eval transform (resize the shorter side, center crop) through
``titok_jax.data.make_loader``; the examples that do not fill a last global batch are read from the
source directly, so every image is used once. Features are standardised with the train split's
mean/std. Multi-host: each process extracts the features of its share of the images on its local
devices, the features are gathered on every process, and every process trains the same (tiny)
classifier; process 0 writes ``WORKDIR/linear_probe/results.json`` (atomically).

``config.linear_probe`` keys (``default_section()``; missing keys take the defaults):
``feature`` ('encoder' | 'latent'), ``tokenizer_checkpoint`` (Orbax params: a stage's ``final/`` or
``python -m titok_jax.port import`` output; default: the latest finished tokenizer stage under the
workdir: stage2, single_stage, stage1), ``tokenizer_weights`` (an official weight file instead),
``allow_pickle`` (for PyTorch ``.bin`` weights), ``epochs``, ``batch_size``, ``lr``,
``weight_decay``, ``optimizer`` ('adamw' | 'sgd': SGD with ``momentum``), cosine learning-rate decay
to 0 over all steps, ``feature_batch_size`` (images per process per feature step), ``seed``. Results: ``top1``, ``top5``
(top-k with k = ``top5_k`` = min(5, number of classes)), ``train_top1``, losses, sizes and timings.
Only the encoder-side parameters (``latent_tokens``, ``encoder``, ``quantize``) are loaded.
Nothing imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

FEATURES = ("encoder", "latent")
OPTIMIZERS = ("adamw", "sgd")
# The TiTok parameter subtrees the encoder side reads (a stage-1 checkpoint has no pixel decoder; none is needed).
ENCODE_PARTS = ("latent_tokens", "encoder", "quantize")
RESULTS = "results.json"

_TYPES = dict(feature=str, tokenizer_checkpoint=str, tokenizer_weights=str, allow_pickle=bool, epochs=int,
              batch_size=int, lr=float, weight_decay=float, optimizer=str, momentum=float, feature_batch_size=int,
              seed=int)  # fmt: skip


class LinearProbeError(ValueError):
    """Bad settings, unlabelled data or a missing tokenizer."""


def default_section():
    """``config.linear_probe`` defaults (an ``ml_collections.ConfigDict``; see the module docstring)."""
    import ml_collections

    return ml_collections.ConfigDict(
        dict(feature="encoder", tokenizer_checkpoint="", tokenizer_weights="", allow_pickle=False, epochs=100,
             batch_size=256, lr=1e-3, weight_decay=1e-4, optimizer="adamw", momentum=0.9, feature_batch_size=64,
             seed=0)
    )  # fmt: skip


def _log(msg: str) -> None:
    print(f"[linear_probe] {msg}", flush=True)


def section(config) -> Dict[str, Any]:
    """``config.linear_probe`` merged over ``default_section()`` and checked; unknown keys are an error."""
    from titok_jax.presets import step_section

    out = step_section(config, "linear_probe", default_section().to_dict(), LinearProbeError)
    for k, t in _TYPES.items():
        try:
            out[k] = t(out[k])
        except (TypeError, ValueError):
            raise LinearProbeError(f"config.linear_probe.{k} must be a {t.__name__}, got {out[k]!r}") from None
    if out["feature"] not in FEATURES:
        raise LinearProbeError(f"config.linear_probe.feature must be one of {FEATURES}, got {out['feature']!r}")
    if out["optimizer"] not in OPTIMIZERS:
        raise LinearProbeError(f"config.linear_probe.optimizer must be one of {OPTIMIZERS}, got {out['optimizer']!r}")
    for k in ("epochs", "batch_size", "feature_batch_size"):
        if out[k] < 1:
            raise LinearProbeError(f"config.linear_probe.{k} must be >= 1, got {out[k]}")
    if out["lr"] <= 0 or out["weight_decay"] < 0:
        raise LinearProbeError(
            f"config.linear_probe needs lr > 0 and weight_decay >= 0, got {out['lr']} and {out['weight_decay']}"
        )
    return out


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
    import jax.numpy as jnp

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


def make_feature_fn(tokenizer_module, params, kind: str, *, batch_size: int, devices=None) -> Callable:
    """Jitted ``images float32 [batch_size, S, S, 3] -> features [batch_size, D]`` (a ``jax.Array``),
    data-parallel over ``devices`` (default: this process's local devices; params replicated)."""
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    devices = list(jax.local_devices() if devices is None else devices)
    if batch_size < 1 or batch_size % len(devices):
        raise LinearProbeError(
            f"feature_batch_size={batch_size} must be a positive multiple of the {len(devices)} local device(s) "
            "that share each batch; set config.linear_probe.feature_batch_size accordingly"
        )
    if kind not in FEATURES:
        raise LinearProbeError(f"feature kind must be one of {FEATURES}, got {kind!r}")
    mesh = Mesh(np.asarray(devices, dtype=object), ("data",))
    data_sh, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    params = jax.device_put(params, repl)
    size = tokenizer_module.config.image_size
    jitted = jax.jit(
        lambda p, x: extract_features(tokenizer_module, p, x, kind), in_shardings=(repl, data_sh), out_shardings=data_sh
    )

    def feature_fn(images: np.ndarray):
        x = np.asarray(images, np.float32)
        if x.shape != (batch_size, size, size, 3):
            raise LinearProbeError(f"feature_fn expects [{batch_size}, {size}, {size}, 3] images, got {x.shape}")
        return jitted(params, jax.device_put(x, data_sh))

    return feature_fn


def split_config(data_config, train: bool) -> Dict[str, Any]:
    """A copy of the data config whose *eval* split is the requested split, so that
    ``make_loader(..., train=False)`` reads it in order with the eval transform."""
    d = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
    if train:
        if d.get("source") == "folder":
            d["eval_path"] = d.get("path")
        else:
            d["eval_split"] = d.get("split") or "train"
    return d


def local_features(
    feature_fn: Callable,
    data_config,
    *,
    train: bool,
    image_size: int,
    batch_size: int,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Dict[str, Any]:
    """This process's share of one split: ``{'features' [n, D], 'labels' [n], 'positions' [n] (source
    indices), 'num_examples' (whole split), 'skipped' [(name, reason)]}``.

    Full global batches of ``batch_size * process_count`` come from ``make_loader`` (process ``p`` holds
    positions ``k*G + p + j*P`` of batch ``k``); the remaining ``< G`` examples are read from the source
    (positions ``p, p + P, ...`` of the remainder), padded to ``batch_size`` for the same compiled program.
    """
    from titok_jax import data as data_lib
    from titok_jax.data import transforms

    cfg = split_config(data_config, train)
    source = data_lib.make_source(cfg, train=False)
    n = len(source)
    g = batch_size * process_count
    full = n // g
    feats: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    positions: List[np.ndarray] = []
    skipped: List[Tuple[str, str]] = []
    if full:
        loader = data_lib.make_loader(
            cfg, global_batch_size=g, image_size=image_size, train=False, seed=seed, process_index=process_index,
            process_count=process_count,
        )  # fmt: skip
        pending: List[Any] = []
        rows = process_index + np.arange(batch_size) * process_count
        for k, batch in enumerate(loader):
            pending.append(feature_fn(batch["image"]))  # asynchronous; converted two batches later
            labels.append(np.asarray(batch["label"], np.int64))
            positions.append(k * g + rows)
            if len(pending) > 2:
                feats.append(np.asarray(pending.pop(0)))
        feats.extend(np.asarray(f) for f in pending)
        skipped.extend((str(a), str(b)) for a, b in loader.stats()["skipped"])
    rest = np.arange(full * g, n)[process_index::process_count]
    if rest.size:
        images, labs, pos = [], [], []
        for i in rest.tolist():
            rec = source[i]
            try:
                images.append(transforms.eval_transform(transforms.to_pil(rec["image"]), image_size))
            except Exception as e:  # unreadable: left out (reported), like the loader's skips
                skipped.append((str(rec.get("name", i)), f"{type(e).__name__}: {e}"))
                continue
            labs.append(int(rec["label"]))
            pos.append(i)
        if images:
            x = np.zeros((batch_size, image_size, image_size, 3), np.float32)
            x[: len(images)] = np.stack(images)
            feats.append(np.asarray(feature_fn(x))[: len(images)])
            labels.append(np.asarray(labs, np.int64))
            positions.append(np.asarray(pos, np.int64))
    if feats:
        out_f = np.concatenate(feats).astype(np.float32)
    else:
        out_f = np.zeros((0, 0), np.float32)
    out_l = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    out_p = np.concatenate(positions) if positions else np.zeros((0,), np.int64)
    return {"features": out_f, "labels": out_l, "positions": out_p, "num_examples": n, "skipped": skipped}


def _gather(local: Dict[str, Any], dim: int) -> Dict[str, Any]:
    """Concatenate every process's ``local_features`` (all processes call this)."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return local
    n = len(local["labels"])
    counts = np.asarray(multihost_utils.process_allgather(np.asarray([n], np.int64))).reshape(-1)
    m = max(int(counts.max()), 1)
    f = np.zeros((m, dim), np.float32)
    f[:n] = local["features"].reshape(n, dim)
    lp = np.full((m, 2), -1, np.int64)
    lp[:n, 0], lp[:n, 1] = local["labels"], local["positions"]
    all_f = np.asarray(multihost_utils.process_allgather(f))
    all_lp = np.asarray(multihost_utils.process_allgather(lp))
    keep = [slice(0, int(c)) for c in counts]
    return dict(
        local,
        features=np.concatenate([all_f[i][s] for i, s in enumerate(keep)]),
        labels=np.concatenate([all_lp[i][s, 0] for i, s in enumerate(keep)]),
        positions=np.concatenate([all_lp[i][s, 1] for i, s in enumerate(keep)]),
    )


def compute_features(feature_fn: Callable, data_config, *, train: bool, image_size: int, batch_size: int,
                     dim: int, seed: int = 0) -> Dict[str, Any]:  # fmt: skip
    """Features, labels and source positions of a whole split, gathered over processes, in source order."""
    import jax

    local = local_features(
        feature_fn, data_config, train=train, image_size=image_size, batch_size=batch_size, seed=seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )  # fmt: skip
    if local["features"].size == 0:
        local["features"] = np.zeros((0, dim), np.float32)
    out = _gather(local, dim)
    order = np.argsort(out["positions"], kind="stable")
    return dict(out, features=out["features"][order], labels=out["labels"][order], positions=out["positions"][order])


# ---------------------------------------------------------------------------------------------- classifier
def standardize(train_x: np.ndarray, *others: np.ndarray, eps: float = 1e-6):
    """(train, *others) scaled with the train mean/std per feature; returns (scaled arrays, mean, std)."""
    mean = train_x.mean(axis=0, dtype=np.float64)
    std = np.maximum(train_x.std(axis=0, dtype=np.float64), eps)
    scaled = [((x - mean) / std).astype(np.float32) for x in (train_x, *others)]
    return scaled, mean.astype(np.float32), std.astype(np.float32)


def _tx(optimizer: str, schedule, weight_decay: float, momentum: float):
    import optax

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
    import jax
    import jax.numpy as jnp
    import optax

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


# ---------------------------------------------------------------------------------------------- tokenizer
def _no_labels_error(n: int, label: int, where: str) -> LinearProbeError:
    return LinearProbeError(
        f"linear probing needs class labels, but all {n} training examples of {where} have label {label}: "
        "use labelled data, e.g. data.source='folder' with one sub-folder per class (data.path/<class>/*.jpg, "
        "data.eval_path likewise) or a tfds dataset with a label feature (data.label_key)"
    )


def check_labels_early(data_config) -> None:
    """Fail before any compilation when the train source lists its labels and they are all equal."""
    from titok_jax import data as data_lib

    source = data_lib.make_source(split_config(data_config, True), train=False)
    labels = getattr(source, "labels", None)
    if labels is not None and len(labels) and len(set(labels)) < 2:
        raise _no_labels_error(len(labels), int(labels[0]), repr(source))


def find_tokenizer_checkpoint(workdir: str, explicit: str = "") -> str:
    """``explicit`` if given (must exist), else the latest finished tokenizer stage under ``workdir``."""
    from titok_jax.train import stages

    try:
        return stages.tokenizer_checkpoint(workdir, explicit, section="linear_probe")
    except stages.StageError as e:
        raise LinearProbeError(str(e)) from None


def load_tokenizer(config, workdir: str, sec: Dict[str, Any]):
    """(ModelHandle, encoder-side params, description of where they came from)."""
    from titok_jax.models import registry
    from titok_jax.train import stages

    if config.get("model_kind", "titok") != "titok":
        raise LinearProbeError(f"linear probing needs a TiTok tokenizer config, got model_kind={config.model_kind!r}")
    handle = registry.from_config(config)
    if sec["tokenizer_weights"]:
        from titok_jax.porting.api import import_weights

        weights = os.path.abspath(os.path.expanduser(sec["tokenizer_weights"]))
        _, params, _ = import_weights(config, weights, allow_pickle=bool(sec["allow_pickle"]))
        return handle, {k: params[k] for k in ENCODE_PARTS if k in params}, weights
    path = find_tokenizer_checkpoint(workdir, sec["tokenizer_checkpoint"])
    return handle, stages.load_tokenizer_params(config, path, ENCODE_PARTS), path


# ---------------------------------------------------------------------------------------------- entry points
def _write_json(path: str, obj: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)


def run(config, workdir: str) -> Dict[str, Any]:
    """The ``linear_probe`` step (``config.linear_probe``, see the module docstring); returns the summary
    written to ``WORKDIR/linear_probe/results.json`` (there with the per-epoch loss history)."""
    import jax

    sec = section(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if not sec["tokenizer_weights"]:
        find_tokenizer_checkpoint(workdir, sec["tokenizer_checkpoint"])  # fail fast, before reading data
    check_labels_early(config.data)
    handle, params, tok_source = load_tokenizer(config, workdir, sec)
    kind, fbs = sec["feature"], sec["feature_batch_size"]
    dim = feature_dim(handle.config, kind)
    module = handle.module()
    feature_fn = make_feature_fn(module, params, kind, batch_size=fbs)
    common = dict(image_size=handle.image_size, batch_size=fbs, dim=dim, seed=int(sec["seed"]))
    t0 = time.time()
    tr = compute_features(feature_fn, config.data, train=True, **common)
    if len(tr["labels"]) == 0:
        raise LinearProbeError("the train split produced no readable images")
    if len(np.unique(tr["labels"])) < 2:
        raise _no_labels_error(len(tr["labels"]), int(tr["labels"][0]), "the train split")
    ev = compute_features(feature_fn, config.data, train=False, **common)
    if len(ev["labels"]) == 0:
        raise LinearProbeError("the eval split produced no readable images")
    t_feat = time.time() - t0
    _log(f"{kind} features (dim {dim}) of {len(tr['labels'])} train / {len(ev['labels'])} eval images "
         f"in {t_feat:.1f}s ({tok_source})")  # fmt: skip
    (x_tr, x_ev), _, _ = standardize(tr["features"], ev["features"])
    num_classes = int(max(tr["labels"].max(), ev["labels"].max())) + 1
    t1 = time.time()
    clf, history = train_classifier(
        x_tr, tr["labels"], num_classes, epochs=sec["epochs"], batch_size=sec["batch_size"], lr=sec["lr"],
        weight_decay=sec["weight_decay"], optimizer=sec["optimizer"], momentum=sec["momentum"], seed=sec["seed"],
    )  # fmt: skip
    t_train = time.time() - t1
    train_m = evaluate_classifier(clf, x_tr, tr["labels"])
    eval_m = evaluate_classifier(clf, x_ev, ev["labels"])
    k = min(5, num_classes)
    summary = {
        "feature": kind,
        "feature_dim": dim,
        "num_classes": num_classes,
        "num_train": int(len(tr["labels"])),
        "num_eval": int(len(ev["labels"])),
        "top1": eval_m["top1"],
        "top5": eval_m["top5"],
        "top5_k": k,
        "eval_loss": eval_m["loss"],
        "train_top1": train_m["top1"],
        "train_loss": train_m["loss"],
        "tokenizer": tok_source,
        "seconds_features": t_feat,
        "seconds_train": t_train,
    }
    skipped = tr["skipped"] + ev["skipped"]
    if skipped:
        summary["skipped_images"] = [list(s) for s in skipped]
        _log(f"skipped unreadable images: {skipped}")
    _log(f"top-1 {eval_m['top1']:.4f}, top-{k} {eval_m['top5']:.4f} on {summary['num_eval']} eval images "
         f"({num_classes} classes; train top-1 {train_m['top1']:.4f}; classifier {t_train:.1f}s)")  # fmt: skip
    if jax.process_index() == 0:
        settings = {key: sec[key] for key in ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "momentum",
                                              "feature_batch_size", "seed")}  # fmt: skip
        _write_json(os.path.join(workdir, "linear_probe", RESULTS),
                    dict(summary, settings=settings, loss_history=history))  # fmt: skip
    return summary


# ---------------------------------------------------------------------------------------------- CLI
def _define_flags():
    """Flags are defined only when run as a script (``titok_jax.main`` imports this module and has its own)."""
    from absl import flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. configs/titok_b64.py.", lock_config=False
    )
    flags.DEFINE_string("workdir", None, "Workdir: its finished tokenizer stage and WORKDIR/linear_probe/results.json.")
    from titok_jax import distributed

    distributed.define_flags()
    return config, flags.FLAGS


def main(argv: Sequence[str], config_flag, FLAGS) -> None:  # noqa: N803
    from absl import app, logging

    del argv
    logging.set_verbosity(logging.ERROR)
    config = config_flag.value
    if config is None or not FLAGS.workdir:
        raise app.UsageError("--config and --workdir are required")
    from titok_jax import distributed

    distributed.run_step_cli(run, config, FLAGS)


if __name__ == "__main__":
    from absl import app

    _config_flag, _FLAGS = _define_flags()
    app.run(lambda argv: main(argv, _config_flag, _FLAGS))
