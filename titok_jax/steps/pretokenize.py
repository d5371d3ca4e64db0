"""Pre-tokenization: a dataset -> sharded TiTok token ids + ``manifest.json`` (the generator's training data).

The official TiTok generator tokenizes its images on the fly with the frozen tokenizer
(official_titok.md section 7.4: Resize 256 -> CenterCrop 256 -> random flip); the official
``scripts/pretokenization.py`` (section 8) caches codes instead, every image twice: as is and
horizontally flipped. We do the latter with TiTok ids: each image gets the EVAL transform (resize
the shorter side, center crop), is tokenized, and with ``flip=True`` (default) its horizontal flip
is tokenized too and stored as a separate entry, so random-flip training becomes sampling among
the stored entries. Shard layout, resume and the manifest check: ``titok_jax.data.token_shards``;
reader: ``titok_jax.data.tokens``.

Multi-host: process ``p`` of ``P`` handles shards ``p, p + P, ...``; when every process is done (a
barrier), process 0 checks the union of all shards and writes ``manifest.json``. The output directory
must be on a file system all processes see. Encoding is data-parallel over the process's local
devices (``Tokenizer.ids_fn``: one jitted program, the last batch of a shard padded); host-side
decoding runs in a thread pool a few batches ahead of the device.

Settings: ``config.pretokenize`` (``titok_jax.config.sections.PretokenizeConfig``).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import time
from typing import Any, Callable, Dict, Optional

import jax
import numpy as np

from titok_jax import data as data_lib
from titok_jax import logs, parallel
from titok_jax.api import ENCODE_PARTS, Tokenizer
from titok_jax.config.run import RunConfig
from titok_jax.data import token_shards as shards_lib
from titok_jax.data.token_shards import PretokenizeError
from titok_jax.data.tokens import TokenSource, shard_filename
from titok_jax.evaluation import metrics

log = logging.getLogger(__name__)


def pretokenize(
    encode_fn: Callable[[np.ndarray], Any],
    source,
    out_dir: str,
    *,
    image_size: int,
    flip: bool = True,
    shard_size: int = 1024,
    batch_size: int = 64,
    process_index: int = 0,
    process_count: int = 1,
    meta: Optional[Dict[str, Any]] = None,
    codebook_size: Optional[int] = None,
    num_classes: Optional[int] = None,
    num_threads: int = 0,
    finalize: bool = True,
) -> Dict[str, Any]:
    """Tokenize this process's shards of ``source`` into ``out_dir``; process 0 then writes the manifest.

    ``encode_fn(images float32 [batch_size, S, S, 3] in [0, 1]) -> ids int [batch_size, K]``
    (e.g. ``Tokenizer.ids_fn``); ``meta``: JSON-able description of the tokenizer (config dict,
    weights path), stored in the manifest and part of the settings fingerprint; ``codebook_size``
    (default ``meta['config']['codebook_size']``) and ``num_classes`` (default: the source's
    ``num_classes`` / ``class_names``, else max label + 1) go into the manifest. ``finalize=False``
    (or a process other than 0) stops after the shards. Returns a summary dict.
    """
    meta = dict(meta or {})
    if codebook_size is None:
        codebook_size = (meta.get("config") or {}).get("codebook_size")
    if codebook_size is None:
        raise PretokenizeError("codebook_size unknown: pass codebook_size= or meta={'config': {'codebook_size': K}}")
    if shard_size < 1 or batch_size < 1:
        raise PretokenizeError(f"shard_size ({shard_size}) and batch_size ({batch_size}) must be positive")
    if process_count < 1 or not 0 <= process_index < process_count:
        raise PretokenizeError(f"bad process layout: process_index={process_index}, process_count={process_count}")
    n = len(source)
    if n == 0:
        raise PretokenizeError(f"{source!r} is empty: nothing to tokenize")
    out_dir = os.path.abspath(os.path.expanduser(str(out_dir)))
    os.makedirs(out_dir, exist_ok=True)
    total = shards_lib.num_shards(n, shard_size)
    fp = shards_lib.fingerprint(num_images=n, image_size=image_size, flip=flip, shard_size=shard_size, meta=meta)
    t0 = time.time()

    mine = shards_lib.process_shards(total, process_index, process_count)
    todo = []
    for s in mine:
        start, stop = shards_lib.shard_range(s, n, shard_size)
        if not shards_lib.existing_ok(os.path.join(out_dir, shard_filename(s, total)), start, stop, flip, fp):
            todo.append(s)
    tag = f"process {process_index}/{process_count}: " if process_count > 1 else ""
    log.info(
        "[pretokenize] %s%d images of %r -> %s: %d shard(s) in all, %d for this process, %d already done",
        tag,
        n,
        source,
        out_dir,
        total,
        len(mine),
        len(mine) - len(todo),
        extra=logs.EVERY_PROCESS,
    )
    written = _encode_shards(
        encode_fn,
        source,
        out_dir,
        todo,
        total=total,
        n=n,
        image_size=image_size,
        flip=flip,
        shard_size=shard_size,
        batch_size=batch_size,
        process_index=process_index,
        fp=fp,
        codebook_size=int(codebook_size),
        num_threads=num_threads,
        tag=tag,
    )
    seconds = time.time() - t0
    summary: Dict[str, Any] = {
        "out_dir": out_dir,
        "num_shards": total,
        "shards_written": len(todo),
        "shards_reused": len(mine) - len(todo),
        "images_encoded": written["images"],
        "skipped_here": written["skipped"],
        "seconds": seconds,
        "images_per_second": written["images"] / seconds if seconds > 0 else 0.0,
    }
    parallel.sync("titok_jax.pretokenize:shards")
    if finalize and process_index == 0:
        manifest = shards_lib.finalize_manifest(
            source,
            out_dir,
            image_size=image_size,
            flip=flip,
            shard_size=shard_size,
            meta=meta,
            codebook_size=int(codebook_size),
            num_classes=num_classes,
        )
        summary.update(
            num_examples=manifest["num_examples"],
            skipped_images=len(manifest["skipped"]),
            seq_len=manifest["seq_len"],
            num_classes=manifest["num_classes"],
        )
    parallel.sync("titok_jax.pretokenize:manifest")
    return summary


def _encode_shards(
    encode_fn,
    source,
    out_dir,
    todo,
    *,
    total,
    n,
    image_size,
    flip,
    shard_size,
    batch_size,
    process_index,
    fp,
    codebook_size,
    num_threads,
    tag,
) -> Dict[str, int]:
    """Read (thread pool, a few chunks ahead) -> encode -> write each shard of ``todo``."""
    views = 2 if flip else 1
    per_chunk = max(1, batch_size // views)  # source images per encode call
    work = []  # (shard, source indices of one encode call, last chunk of the shard?)
    for s in todo:
        start, stop = shards_lib.shard_range(s, n, shard_size)
        chunks = [range(a, min(a + per_chunk, stop)) for a in range(start, stop, per_chunk)]
        work += [(s, c, k == len(chunks) - 1) for k, c in enumerate(chunks)]
    threads = num_threads or min(8, os.cpu_count() or 1)
    read = data_lib.eval_reader(image_size)
    stats = {"images": 0, "skipped": 0}
    x = np.zeros((batch_size, image_size, image_size, 3), np.float32)
    acc: Dict[str, list] = collections.defaultdict(list)
    t_shard = time.time()
    bar = logs.progress(sum(len(c) for _, c, _ in work), "pretokenize", "img")
    with bar, concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        pending: collections.deque = collections.deque()
        ahead = 2

        def submit(k):
            if k < len(work):
                pending.append([pool.submit(data_lib.read_example, source, i, read) for i in work[k][1]])

        for k in range(ahead):
            submit(k)
        for k, (s, chunk, last) in enumerate(work):
            results = [f.result() for f in pending.popleft()]
            submit(k + ahead)
            rows, labels, index, flipped = 0, [], [], []
            for i, (img, label, skip) in zip(chunk, results):
                if skip is not None:
                    acc["skipped_index"].append(i)
                    acc["skipped_name"].append(skip[0])
                    acc["skipped_reason"].append(skip[1])
                    log.warning("[pretokenize] %sskipping unreadable image %s (index %d): %s", tag, skip[0], i, skip[1])
                    continue
                x[rows] = img
                rows += 1
                if flip:
                    x[rows] = img[:, ::-1]
                    rows += 1
                labels += [label] * views
                index += [i] * views
                flipped += [False, True] if flip else [False]
            if rows:
                x[rows:] = 0.0  # padding of a short batch, dropped below
                ids = np.asarray(encode_fn(x))
                if ids.ndim != 2 or ids.shape[0] != batch_size or not np.issubdtype(ids.dtype, np.integer):
                    raise PretokenizeError(
                        f"encode_fn returned {ids.dtype} {ids.shape}; expected int [{batch_size}, K]"
                    )
                ids = ids[:rows].astype(np.int32)
                if ids.size and (ids.min() < 0 or ids.max() >= codebook_size):
                    raise PretokenizeError(f"encode_fn returned ids outside [0, {codebook_size})")
                acc["tokens"].append(ids)
                acc["labels"] += labels
                acc["index"] += index
                acc["flipped"] += flipped
                stats["images"] += rows // views
            bar.update(len(chunk))
            if last:
                stats["skipped"] += len(acc["skipped_index"])
                shards_lib.write_shard(out_dir, s, total, acc, fp, process_index)
                dt = time.time() - t_shard
                m = len(acc["index"])
                log.info(
                    "[pretokenize] %swrote %s: %d entries (%.1f/s)",
                    tag,
                    shard_filename(s, total),
                    m,
                    m / max(dt, 1e-9),
                    extra=logs.EVERY_PROCESS,
                )
                acc = collections.defaultdict(list)
                t_shard = time.time()
    return stats


def run(run_config: RunConfig, workdir: str) -> Dict[str, Any]:
    """The ``pretokenize`` step: the configured data through the configured tokenizer (``config.pretokenize``)."""
    sec = run_config.pretokenize
    workdir = os.path.abspath(os.path.expanduser(workdir))
    out_dir = os.path.expanduser(sec.out_dir) if sec.out_dir else os.path.join(workdir, "pretokenize")
    tok = Tokenizer.load(run_config, workdir, sec, section="pretokenize", parts=ENCODE_PARTS)
    if not tok.is_vq:
        raise PretokenizeError("pre-tokenization needs a VQ tokenizer (discrete ids); this TiTok is a VAE")
    h = tok.handle
    meta = {
        "kind": h.kind,
        "model_name": h.name,
        "dtype": h.dtype,
        "config": h.config.to_dict(),
        "weights": tok.meta["weights"],
        "weights_format": tok.meta["weights_format"],
        "split": sec.split,
    }
    encode_fn = tok.ids_fn(sec.batch_size, what="config.pretokenize.batch_size")
    log.info(
        "[pretokenize] tokenizer %s (%s); batches of %d split over %d local device(s)",
        h.name,
        meta["weights"],
        sec.batch_size,
        jax.local_device_count(),
    )
    source = data_lib.make_source(run_config.data, train=sec.split == "train")
    summary = pretokenize(
        encode_fn,
        source,
        out_dir,
        image_size=h.image_size,
        flip=sec.flip,
        shard_size=sec.shard_size,
        batch_size=sec.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        meta=meta,
        codebook_size=tok.codebook_size,
        num_threads=sec.num_threads,
    )
    if jax.process_index() == 0:  # codebook use of the whole pre-tokenized set
        tokens = TokenSource(out_dir).tokens
        usage, bits = metrics.codebook_usage(tokens, tok.codebook_size)
        summary.update(distinct_ids=int(len(np.unique(tokens))), codebook_usage=usage, perplexity=float(2.0**bits))
        log.info("[pretokenize] %d distinct ids of %d (perplexity %.1f)", summary["distinct_ids"], tok.codebook_size,
                 summary["perplexity"])  # fmt: skip
    return summary
