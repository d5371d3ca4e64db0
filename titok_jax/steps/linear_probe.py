"""The ``linear_probe`` step: a linear classifier on frozen tokenizer features, scored on the eval split.

Features and classifier: ``titok_jax.evaluation.linear_probe``. Both splits are read with the eval
transform (resize the shorter side, center crop) through ``titok_jax.data.make_loader``; the examples
that do not fill a last global batch are read from the source directly, so every image is used once.
Multi-host: each process extracts the features of its share of the images on its local devices, the
features are gathered on every process, and every process trains the same (tiny) classifier; process
0 writes ``WORKDIR/linear_probe/results.json`` (atomically). Only the encoder-side parameters are
loaded. Settings: ``config.linear_probe`` (``LinearProbeConfig``). Results: ``top1``, ``top5`` (top-k
with k = ``top5_k`` = min(5, number of classes)), ``train_top1``, losses, sizes and timings.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Dict, List, Tuple

import jax
import numpy as np

from titok_jax import data as data_lib
from titok_jax import logs, parallel
from titok_jax import workdir as workdir_lib
from titok_jax.api import ENCODE_PARTS, Tokenizer
from titok_jax.config.run import RunConfig
from titok_jax.config.sections import DataConfig
from titok_jax.evaluation.linear_probe import (
    LinearProbeError,
    evaluate_classifier,
    extract_features,
    feature_dim,
    standardize,
    train_classifier,
)

log = logging.getLogger(__name__)
RESULTS = "results.json"


def split_config(data: DataConfig, train: bool) -> DataConfig:
    """A copy of the data config whose *eval* split is the requested split, so that
    ``make_loader(..., train=False)`` reads it in order with the eval transform."""
    if not train:
        return data
    if data.source == "folder":
        return dataclasses.replace(data, eval_path=data.path)
    return dataclasses.replace(data, eval_split=data.split or "train")


def local_features(
    feature_fn: Callable,
    data: DataConfig,
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
    cfg = split_config(data, train)
    source = data_lib.make_source(cfg, train=False)
    n = len(source)
    g = batch_size * process_count
    full = n // g
    feats: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    positions: List[np.ndarray] = []
    skipped: List[Tuple[str, str]] = []
    bar = logs.progress(-(-n // process_count), f"linear_probe {'train' if train else 'eval'} features", "img")
    if full:
        loader = data_lib.make_loader(
            cfg,
            global_batch_size=g,
            image_size=image_size,
            train=False,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
        )
        pending: List[Any] = []
        rows = process_index + np.arange(batch_size) * process_count
        for k, batch in enumerate(loader):
            pending.append(feature_fn(batch["image"]))  # asynchronous; converted two batches later
            labels.append(np.asarray(batch["label"], np.int64))
            positions.append(k * g + rows)
            if len(pending) > 2:
                feats.append(np.asarray(pending.pop(0)))
                bar.update(batch_size)
        feats.extend(np.asarray(f) for f in pending)
        bar.update(batch_size * len(pending))
        skipped.extend((str(a), str(b)) for a, b in loader.stats()["skipped"])
    rest = np.arange(full * g, n)[process_index::process_count]
    if rest.size:
        read = data_lib.eval_reader(image_size)
        images, labs, pos = [], [], []
        for i in rest.tolist():
            img, label, skip = data_lib.read_example(source, i, read)
            if skip is not None:  # unreadable: left out (reported), like the loader's skips
                skipped.append(skip)
                continue
            images.append(img)
            labs.append(label)
            pos.append(i)
        if images:
            x = np.zeros((batch_size, image_size, image_size, 3), np.float32)
            x[: len(images)] = np.stack(images)
            feats.append(np.asarray(feature_fn(x))[: len(images)])
            labels.append(np.asarray(labs, np.int64))
            positions.append(np.asarray(pos, np.int64))
        bar.update(rest.size)
    bar.close()
    out_f = np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, 0), np.float32)
    out_l = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    out_p = np.concatenate(positions) if positions else np.zeros((0,), np.int64)
    return {"features": out_f, "labels": out_l, "positions": out_p, "num_examples": n, "skipped": skipped}


def compute_features(
    feature_fn: Callable, data: DataConfig, *, train: bool, image_size: int, batch_size: int, dim: int, seed: int = 0
) -> Dict[str, Any]:
    """Features, labels and source positions of a whole split, gathered over processes, in source order."""
    local = local_features(
        feature_fn,
        data,
        train=train,
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    feats = local["features"].reshape(len(local["labels"]), dim)
    lp = np.stack([local["labels"], local["positions"]], axis=1) if len(local["labels"]) else np.zeros((0, 2), np.int64)
    feats, lp = parallel.gather_rows(feats), parallel.gather_rows(lp)
    order = np.argsort(lp[:, 1], kind="stable")
    return dict(local, features=feats[order], labels=lp[order, 0], positions=lp[order, 1])


def _no_labels_error(n: int, label: int, where: str) -> LinearProbeError:
    return LinearProbeError(
        f"linear probing needs class labels, but all {n} training examples of {where} have label {label}: "
        "use labelled data, e.g. data.source='folder' with one sub-folder per class (data.path/<class>/*.jpg, "
        "data.eval_path likewise) or a tfds dataset with a label feature (data.label_key)"
    )


def check_labels_early(data: DataConfig) -> None:
    """Fail before any compilation when the train source lists its labels and they are all equal."""
    source = data_lib.make_source(split_config(data, True), train=False)
    labels = getattr(source, "labels", None)
    if labels is not None and len(labels) and len(set(labels)) < 2:
        raise _no_labels_error(len(labels), int(labels[0]), repr(source))


def run(run_config: RunConfig, workdir: str) -> Dict[str, Any]:
    """The ``linear_probe`` step; returns the summary written to ``WORKDIR/linear_probe/results.json``
    (there with the per-epoch loss history)."""
    sec = run_config.linear_probe
    if run_config.model_kind != "titok":
        raise LinearProbeError(
            f"linear probing needs a TiTok tokenizer config, got model_kind={run_config.model_kind!r}"
        )
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if not sec.tokenizer_weights:
        workdir_lib.tokenizer_checkpoint(workdir, sec.tokenizer_checkpoint, "linear_probe")  # fail fast
    check_labels_early(run_config.data)
    tok = Tokenizer.load(run_config, workdir, sec, section="linear_probe", parts=ENCODE_PARTS)
    kind, fbs = sec.feature, sec.feature_batch_size
    dim = feature_dim(tok.handle.config, kind)
    module, size = tok.module, tok.image_size
    feature_fn = parallel.data_parallel(
        lambda p, x: extract_features(module, p, x, kind),
        tok.params,
        fbs,
        item_shape=(size, size, 3),
        what="config.linear_probe.feature_batch_size",
    )
    common = dict(image_size=size, batch_size=fbs, dim=dim, seed=sec.seed)
    t0 = time.time()
    tr = compute_features(feature_fn, run_config.data, train=True, **common)
    if len(tr["labels"]) == 0:
        raise LinearProbeError("the train split produced no readable images")
    if len(np.unique(tr["labels"])) < 2:
        raise _no_labels_error(len(tr["labels"]), int(tr["labels"][0]), "the train split")
    ev = compute_features(feature_fn, run_config.data, train=False, **common)
    if len(ev["labels"]) == 0:
        raise LinearProbeError("the eval split produced no readable images")
    t_feat = time.time() - t0
    log.info(
        "[linear_probe] %s features (dim %d) of %d train / %d eval images in %.1fs (%s)",
        kind,
        dim,
        len(tr["labels"]),
        len(ev["labels"]),
        t_feat,
        tok.meta["weights"],
    )
    (x_tr, x_ev), _, _ = standardize(tr["features"], ev["features"])
    num_classes = int(max(tr["labels"].max(), ev["labels"].max())) + 1
    t1 = time.time()
    clf, history = train_classifier(
        x_tr,
        tr["labels"],
        num_classes,
        epochs=sec.epochs,
        batch_size=sec.batch_size,
        lr=sec.lr,
        weight_decay=sec.weight_decay,
        optimizer=sec.optimizer,
        momentum=sec.momentum,
        seed=sec.seed,
    )
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
        "tokenizer": tok.meta["weights"],
        "seconds_features": t_feat,
        "seconds_train": t_train,
    }
    skipped = tr["skipped"] + ev["skipped"]
    if skipped:
        summary["skipped_images"] = [list(s) for s in skipped]
        log.warning("[linear_probe] skipped unreadable images: %s", skipped)
    log.info(
        "[linear_probe] top-1 %.4f, top-%d %.4f on %d eval images (%d classes; train top-1 %.4f; classifier %.1fs)",
        eval_m["top1"],
        k,
        eval_m["top5"],
        summary["num_eval"],
        num_classes,
        train_m["top1"],
        t_train,
    )
    if jax.process_index() == 0:
        settings = {
            key: getattr(sec, key)
            for key in (
                "epochs",
                "batch_size",
                "lr",
                "weight_decay",
                "optimizer",
                "momentum",
                "feature_batch_size",
                "seed",
            )
        }
        workdir_lib.write_json_atomic(
            os.path.join(workdir, "linear_probe", RESULTS), dict(summary, settings=settings, loss_history=history)
        )
    return summary
