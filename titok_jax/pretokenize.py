"""Pre-tokenization: a dataset -> sharded TiTok token ids + ``manifest.json`` (the generator's training data).

    python -m titok_jax.pretokenize --config=configs/titok_b64.py --workdir=runs/b64
    python -m titok_jax.pretokenize --config=configs/titok_b64.py --workdir=runs/b64 --out=/data/b64_tokens \\
        --config.pretokenize.tokenizer_weights=tokenizer_titok_b64.bin --config.pretokenize.allow_pickle=True

The official TiTok generator tokenizes its images on the fly with the frozen tokenizer
(official_titok.md section 7.4: Resize 256 -> CenterCrop 256 -> random flip); the official
``scripts/pretokenization.py`` (section 8) caches codes instead, every image twice: as is and
horizontally flipped. We do the latter with TiTok ids: each image gets the EVAL transform (resize
the shorter side, center crop), is tokenized, and with ``flip=True`` (default) its horizontal flip
is tokenized too and stored as a separate entry, so random-flip training becomes sampling among
the stored entries. Output format and reader: ``titok_jax.data.tokens``.

Work layout, resume, multi-host
-------------------------------
Shard ``s`` covers source indices ``[s * shard_size, min((s + 1) * shard_size, N))``; process ``p``
of ``P`` handles shards ``p, p + P, p + 2P, ...``. Every shard file is written atomically (a
temporary file, then ``os.replace``), so a shard either exists complete or not at all. A rerun
checks the existing shards (readable, right entries, same settings fingerprint) and computes only
the missing ones: a killed run continues where it stopped, with no duplicates and no gaps; shards
made with different settings (tokenizer, image size, flip, shard size) are an error, never mixed.
Unreadable images are skipped and recorded in their shard. When every process is done (a barrier
through ``jax.experimental.multihost_utils`` when ``jax.distributed`` runs several processes),
process 0 checks the union of all shards against the expected set of (image, flipped) entries and
writes ``manifest.json`` atomically; its presence marks a finished run. With several processes the
output directory must be on a file system that all of them see.

Encoding is data-parallel over the process's local devices (``make_encode_fn``: one jitted program,
the batch split over a 1-D mesh, the last batch of a shard padded to ``batch_size``). Host-side
decoding runs in a thread pool a few batches ahead of the device.

``config.pretokenize`` keys (``default_section``; missing keys take the defaults): ``out_dir``
(default WORKDIR/pretokenize), ``tokenizer_checkpoint`` (Orbax params from ``python -m titok_jax.port
import`` or a training stage's ``final/``; default: the last finished tokenizer stage under the
workdir: stage2, single_stage, stage1), ``tokenizer_weights`` (an official weight file, instead),
``allow_pickle`` (for PyTorch ``.bin`` weights), ``split`` ('train' | 'eval': the data config's eval
split), ``flip`` (True), ``shard_size`` (1024), ``batch_size`` (64 per process), ``num_threads`` (0:
min(8, CPU count)). Nothing imports TensorFlow.
"""

from __future__ import annotations

import collections
import concurrent.futures
import glob
import hashlib
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from titok_jax.data import tokens as tokens_lib
from titok_jax.data import transforms
from titok_jax.data.tokens import MANIFEST, shard_filename

# The TiTok parameter subtrees ``encode`` reads (a stage-1 checkpoint has no pixel decoder; none is needed).
ENCODE_PARTS = ("latent_tokens", "encoder", "quantize")


class PretokenizeError(ValueError):
    """Bad settings, or existing output that does not fit them."""


def default_section() -> Dict[str, Any]:
    """``config.pretokenize`` defaults (see the module docstring)."""
    return dict(out_dir="", tokenizer_checkpoint="", tokenizer_weights="", allow_pickle=False, split="train",
                flip=True, shard_size=1024, batch_size=64, num_threads=0)  # fmt: skip


def _log(msg: str) -> None:
    print(f"[pretokenize] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------- layout
def num_shards(num_images: int, shard_size: int) -> int:
    return max(1, -(-num_images // shard_size))


def shard_range(shard: int, num_images: int, shard_size: int) -> Tuple[int, int]:
    """Source indices ``[start, stop)`` of ``shard``."""
    return shard * shard_size, min((shard + 1) * shard_size, num_images)


def process_shards(total: int, process_index: int, process_count: int) -> List[int]:
    return list(range(process_index, total, process_count))


def _entry_keys(index: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """(index, flipped) -> one sortable int64 key per entry."""
    return np.asarray(index, np.int64) * 2 + np.asarray(flipped, np.int64)


def _expected_keys(start: int, stop: int, skipped: Sequence[int], flip: bool) -> np.ndarray:
    idx = np.setdiff1d(np.arange(start, stop, dtype=np.int64), np.asarray(list(skipped), np.int64))
    views = (0, 1) if flip else (0,)
    return np.sort(np.concatenate([idx * 2 + v for v in views]))


def fingerprint(*, num_images: int, image_size: int, flip: bool, shard_size: int, meta: Dict[str, Any]) -> str:
    """Hash of everything that determines the shards' content (mixing runs of different settings is refused)."""
    blob = json.dumps(
        dict(num_images=num_images, image_size=image_size, flip=flip, shard_size=shard_size, meta=meta),
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_shard(data: Dict[str, np.ndarray], path: str, start: int, stop: int, flip: bool) -> None:
    """Entries of a shard are exactly its range (less its skipped images) x views; ``TokenDataError`` if not."""
    got = np.sort(_entry_keys(data["index"], data["flipped"]))
    want = _expected_keys(start, stop, data["skipped_index"], flip)
    if got.shape != want.shape or not np.array_equal(got, want):
        raise tokens_lib.TokenDataError(
            f"token shard {path} holds {len(got)} entries, expected {len(want)} (source images [{start}, {stop}) "
            f"less {len(data['skipped_index'])} skipped, x{2 if flip else 1})"
        )


# ---------------------------------------------------------------------------------------------- reading
def _read_image(source, i: int, image_size: int):
    """-> (float32 [S, S, 3], label, None) or (None, None, (name, reason)) for an unreadable example."""
    name = None
    try:
        rec = source[i]
        name = rec.get("name")
        img = transforms.to_pil(rec["image"])
        return transforms.eval_transform(img, image_size), int(rec["label"]), None
    except Exception as e:  # corrupt / unreadable example: skipped and reported
        fallback = getattr(source, "fallback_name", None)
        name = name or (fallback(i) if fallback else f"example[{i}]")
        return None, None, (str(name), f"{type(e).__name__}: {e}")


def _write_atomic(path: str, write: Callable[[Any], None], process_index: int) -> None:
    tmp = f"{path}.tmp-{process_index}-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------------------------- encoding
def make_encode_fn(handle, params, *, batch_size: int, devices=None) -> Callable[[np.ndarray], Any]:
    """Jitted ``images float32 [batch_size, S, S, 3] in [0, 1] -> ids int32 [batch_size, K]``, data-parallel.

    ``handle``: a ``registry.ModelHandle`` (a VQ TiTok, or the MaskGIT-VQGAN: ids flattened to
    [B, h*w]); ``params``: its parameters (for a TiTok, ``ENCODE_PARTS`` suffice). The batch is split
    over a 1-D mesh of ``devices`` (default: this process's local devices) and the params replicated
    on it, so ``batch_size`` must be a multiple of the device count. Returns a ``jax.Array`` (async).
    """
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    devices = list(jax.local_devices() if devices is None else devices)
    if batch_size < 1 or batch_size % len(devices):
        raise PretokenizeError(
            f"batch_size={batch_size} must be a positive multiple of the {len(devices)} local device(s) that "
            "share each batch; set config.pretokenize.batch_size accordingly"
        )
    if handle.kind == "titok" and handle.config.quantize_mode != "vq":
        raise PretokenizeError("pre-tokenization needs a VQ tokenizer (discrete ids); this TiTok is a VAE")
    if handle.kind not in ("titok", "maskgit_vqgan"):
        raise PretokenizeError(f"cannot pre-tokenize with a {handle.kind!r} model; use a VQ TiTok")
    mesh = Mesh(np.asarray(devices, dtype=object), ("data",))
    data_sh, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    params = jax.device_put(params, repl)
    m = handle.module()
    size = handle.image_size

    def encode(p, x):
        if handle.kind == "titok":
            ids = m.apply({"params": p}, x, method=m.encode)[1]["min_encoding_indices"]
        else:
            ids = m.apply({"params": p}, x, method=m.encode)[1]
        return ids.reshape(ids.shape[0], -1).astype(np.int32)

    jitted = jax.jit(encode, in_shardings=(repl, data_sh), out_shardings=data_sh)

    def encode_fn(images: np.ndarray):
        x = np.asarray(images, np.float32)
        if x.shape != (batch_size, size, size, 3):
            raise PretokenizeError(f"encode_fn expects [{batch_size}, {size}, {size}, 3] images, got {x.shape}")
        return jitted(params, jax.device_put(x, data_sh))

    return encode_fn


# ---------------------------------------------------------------------------------------------- core
def _existing_ok(path: str, start: int, stop: int, flip: bool, fp: str) -> bool:
    """True if ``path`` is a complete shard of these settings; False if absent or damaged (recompute)."""
    if not os.path.exists(path):
        return False
    try:
        data = tokens_lib.read_shard(path)
    except tokens_lib.TokenDataError as e:
        _log(f"recomputing damaged shard: {e}")
        return False
    if data["fingerprint"] != fp:
        raise PretokenizeError(
            f"{path} was made with other settings (fingerprint {data['fingerprint']}, these settings: {fp}: a "
            "different tokenizer, image size, flip, shard size or dataset); use a new output directory or delete "
            f"the old tokens-*.npz and {MANIFEST} there"
        )
    try:
        _check_shard(data, path, start, stop, flip)
    except tokens_lib.TokenDataError as e:
        _log(f"recomputing inconsistent shard: {e}")
        return False
    return True


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
    (e.g. ``make_encode_fn``); ``meta``: JSON-able description of the tokenizer (config dict,
    weights path), stored in the manifest and part of the settings fingerprint; ``codebook_size``
    (default ``meta['config']['codebook_size']``) and ``num_classes`` (default: the source's
    ``num_classes`` / ``class_names``, else max label + 1) go into the manifest. ``finalize=False``
    (or a process other than 0) stops after the shards; ``finalize_manifest`` can then be called
    once every shard exists. Returns a summary dict.
    """
    import jax

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
    total = num_shards(n, shard_size)
    fp = fingerprint(num_images=n, image_size=image_size, flip=flip, shard_size=shard_size, meta=meta)
    t0 = time.time()

    mine = process_shards(total, process_index, process_count)
    todo = []
    for s in mine:
        start, stop = shard_range(s, n, shard_size)
        if not _existing_ok(os.path.join(out_dir, shard_filename(s, total)), start, stop, flip, fp):
            todo.append(s)
    tag = f"process {process_index}/{process_count}: " if process_count > 1 else ""
    _log(f"{tag}{n} images of {source!r} -> {out_dir}: {total} shard(s) in all, {len(mine)} for this process, "
         f"{len(mine) - len(todo)} already done")  # fmt: skip
    written = _encode_shards(
        encode_fn, source, out_dir, todo, total=total, n=n, image_size=image_size, flip=flip,
        shard_size=shard_size, batch_size=batch_size, process_index=process_index, fp=fp,
        codebook_size=int(codebook_size), num_threads=num_threads, tag=tag,
    )  # fmt: skip
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
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("titok_jax.pretokenize:shards")
    if finalize and process_index == 0:
        manifest = finalize_manifest(
            source, out_dir, image_size=image_size, flip=flip, shard_size=shard_size, meta=meta,
            codebook_size=int(codebook_size), num_classes=num_classes,
        )  # fmt: skip
        summary.update(num_examples=manifest["num_examples"], skipped_images=len(manifest["skipped"]),
                       seq_len=manifest["seq_len"], num_classes=manifest["num_classes"])  # fmt: skip
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("titok_jax.pretokenize:manifest")
    return summary


def _encode_shards(encode_fn, source, out_dir, todo, *, total, n, image_size, flip, shard_size, batch_size,
                   process_index, fp, codebook_size, num_threads, tag) -> Dict[str, int]:  # fmt: skip
    """Read (thread pool, a few chunks ahead) -> encode -> write each shard of ``todo``."""
    views = 2 if flip else 1
    per_chunk = max(1, batch_size // views)  # source images per encode call
    work = []  # (shard, source indices of one encode call, last chunk of the shard?)
    for s in todo:
        start, stop = shard_range(s, n, shard_size)
        chunks = [range(a, min(a + per_chunk, stop)) for a in range(start, stop, per_chunk)]
        work += [(s, c, k == len(chunks) - 1) for k, c in enumerate(chunks)]
    threads = num_threads or min(8, os.cpu_count() or 1)
    stats = {"images": 0, "skipped": 0}
    x = np.zeros((batch_size, image_size, image_size, 3), np.float32)
    acc: Dict[str, list] = collections.defaultdict(list)
    t_shard = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        pending: collections.deque = collections.deque()
        ahead = 2

        def submit(k):
            if k < len(work):
                pending.append([pool.submit(_read_image, source, i, image_size) for i in work[k][1]])

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
                    _log(f"{tag}skipping unreadable image {skip[0]} (index {i}): {skip[1]}")
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
            if last:
                stats["skipped"] += len(acc["skipped_index"])
                _write_shard(out_dir, s, total, acc, fp, process_index)
                dt = time.time() - t_shard
                m = len(acc["index"])
                _log(f"{tag}wrote {shard_filename(s, total)}: {m} entries ({m / max(dt, 1e-9):.1f}/s)")
                acc = collections.defaultdict(list)
                t_shard = time.time()
    return stats


def _write_shard(out_dir: str, s: int, total: int, acc: Dict[str, list], fp: str, process_index: int) -> None:
    toks = acc["tokens"]
    k = toks[0].shape[1] if toks else 0
    arrays = dict(
        tokens=np.concatenate(toks).astype(np.int32) if toks else np.zeros((0, k), np.int32),
        labels=np.asarray(acc["labels"], np.int32),
        index=np.asarray(acc["index"], np.int64),
        flipped=np.asarray(acc["flipped"], bool),
        skipped_index=np.asarray(acc["skipped_index"], np.int64),
        skipped_name=np.asarray(acc["skipped_name"], dtype=str),
        skipped_reason=np.asarray(acc["skipped_reason"], dtype=str),
        fingerprint=np.asarray(fp),
    )
    path = os.path.join(out_dir, shard_filename(s, total))
    _write_atomic(path, lambda f: np.savez(f, **arrays), process_index)


def _source_num_classes(source) -> Optional[int]:
    nc = getattr(source, "num_classes", None)
    if isinstance(nc, (int, np.integer)) and nc > 0:
        return int(nc)
    names = getattr(source, "class_names", None)
    return len(names) if names else None


def finalize_manifest(
    source,
    out_dir: str,
    *,
    image_size: int,
    flip: bool,
    shard_size: int,
    meta: Optional[Dict[str, Any]],
    codebook_size: int,
    num_classes: Optional[int] = None,
) -> Dict[str, Any]:
    """Check every shard and their union, then write ``manifest.json`` atomically (process 0, once all
    shards exist). Raises ``PretokenizeError`` naming what is missing or wrong."""
    meta = dict(meta or {})
    n = len(source)
    out_dir = os.path.abspath(os.path.expanduser(str(out_dir)))
    total = num_shards(n, shard_size)
    fp = fingerprint(num_images=n, image_size=image_size, flip=flip, shard_size=shard_size, meta=meta)
    names = [shard_filename(s, total) for s in range(total)]
    missing = [f for f in names if not os.path.exists(os.path.join(out_dir, f))]
    if missing:
        raise PretokenizeError(
            f"{len(missing)} of {total} shard(s) missing in {out_dir} (e.g. {missing[:3]}): a process has not "
            "finished; rerun the same command (every process) to complete them"
        )
    shards, keys, skipped = [], [], []
    seq_len, max_label = None, -1
    for s, name in enumerate(names):
        path = os.path.join(out_dir, name)
        start, stop = shard_range(s, n, shard_size)
        try:
            data = tokens_lib.read_shard(path)
            _check_shard(data, path, start, stop, flip)
        except tokens_lib.TokenDataError as e:
            raise PretokenizeError(f"{e}; rerun the command to recompute it") from None
        if data["fingerprint"] != fp:
            raise PretokenizeError(f"{path} was made with other settings than this run; use a new output directory")
        count = int(data["tokens"].shape[0])
        if count:
            if seq_len is None:
                seq_len = int(data["tokens"].shape[1])
            elif data["tokens"].shape[1] != seq_len:
                raise PretokenizeError(f"{path} has {data['tokens'].shape[1]} tokens per entry, others {seq_len}")
            max_label = max(max_label, int(data["labels"].max()))
        keys.append(_entry_keys(data["index"], data["flipped"]))
        sk = data["skipped_index"].tolist()
        skipped += [
            {"index": int(i), "name": str(nm), "reason": str(r)}
            for i, nm, r in zip(sk, data["skipped_name"], data["skipped_reason"])
        ]
        shards.append({"file": name, "count": count, "start": start, "stop": stop, "skipped": len(sk)})
    views = 2 if flip else 1
    found = int(sum(s["count"] for s in shards))
    expected = (n - len(skipped)) * views
    union = np.sort(np.concatenate(keys)) if keys else np.zeros((0,), np.int64)
    want = _expected_keys(0, n, [d["index"] for d in skipped], flip)
    if found != expected or union.shape != want.shape or not np.array_equal(union, want):
        raise PretokenizeError(
            f"count check failed in {out_dir}: the shards hold {found} entries (unique {len(np.unique(union))}), "
            f"expected ({n} images - {len(skipped)} skipped) x {views} = {expected}; delete the shards and rerun"
        )
    if seq_len is None:
        raise PretokenizeError(f"every image of {source!r} was unreadable: nothing was tokenized")
    nc = num_classes or _source_num_classes(source) or max_label + 1
    if max_label >= nc:
        raise PretokenizeError(f"labels go up to {max_label} but num_classes is {nc}")
    manifest = {
        "format": tokens_lib.FORMAT,
        "num_examples": found,
        "num_images": n,
        "num_shards": total,
        "shards": shards,
        "seq_len": seq_len,
        "codebook_size": int(codebook_size),
        "num_classes": int(nc),
        "flip": bool(flip),
        "image_size": int(image_size),
        "shard_size": int(shard_size),
        "transform": "eval (resize shorter side, center crop)" + (" + horizontal flip copies" if flip else ""),
        "source": repr(source),
        "tokenizer": meta,
        "fingerprint": fp,
        "skipped": skipped,
        "count_check": {"expected": expected, "found": found, "ok": True},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = os.path.join(out_dir, MANIFEST)
    _write_atomic(path, lambda f: f.write(json.dumps(manifest, indent=1, default=str).encode()), 0)
    for stale in glob.glob(os.path.join(out_dir, "tokens-*.npz.tmp-*")) + glob.glob(path + ".tmp-*"):
        os.remove(stale)  # left by killed runs; every process is past its writes here
    _log(f"{path}: {found} entries ({n} images - {len(skipped)} skipped, x{views}), {total} shard(s), "
         f"{seq_len} tokens each")  # fmt: skip
    if skipped:
        _log(f"skipped unreadable images: {[(d['name'], d['reason']) for d in skipped]}")
    return manifest


# ---------------------------------------------------------------------------------------------- config entry
def section(config) -> Dict[str, Any]:
    """``config.pretokenize`` merged over ``default_section()``; unknown keys are an error."""
    from titok_jax.presets import step_section

    out = step_section(config, "pretokenize", default_section(), PretokenizeError)
    if out["split"] not in ("train", "eval"):
        raise PretokenizeError(f"config.pretokenize.split must be 'train' or 'eval', got {out['split']!r}")
    return out


def load_tokenizer(config, workdir: str, sec: Dict[str, Any]):
    """(handle, encoder-side params, meta) from ``tokenizer_weights`` or an Orbax checkpoint."""
    from titok_jax.models import registry
    from titok_jax.train import stages

    handle = registry.from_config(config)
    if handle.kind == "titok" and handle.config.quantize_mode != "vq":
        raise PretokenizeError("pre-tokenization needs a VQ tokenizer (discrete ids); this TiTok is a VAE")
    meta = {"kind": handle.kind, "model_name": handle.name, "dtype": handle.dtype, "config": handle.config.to_dict()}
    if sec["tokenizer_weights"]:
        from titok_jax.porting.api import import_weights

        weights = os.path.abspath(os.path.expanduser(sec["tokenizer_weights"]))
        _, params, _ = import_weights(config, weights, allow_pickle=bool(sec["allow_pickle"]))
        if handle.kind == "titok":
            params = {k: params[k] for k in ENCODE_PARTS if k in params}
        meta.update(weights=weights, weights_format="official")
        return handle, params, meta
    if handle.kind == "titok":
        path = stages.tokenizer_checkpoint(workdir, sec["tokenizer_checkpoint"], section="pretokenize")
        params = stages.load_tokenizer_params(config, path, ENCODE_PARTS)
    else:
        if not sec["tokenizer_checkpoint"]:
            raise PretokenizeError("set config.pretokenize.tokenizer_checkpoint to the MaskGIT-VQGAN's Orbax params")
        from titok_jax import checkpoint

        path = os.path.expanduser(sec["tokenizer_checkpoint"])
        params = checkpoint.load_params(path, handle.abstract())
    meta.update(weights=os.path.abspath(path), weights_format="orbax")
    return handle, params, meta


def run(config, workdir: str) -> Dict[str, Any]:
    """Pre-tokenize the configured data with the configured tokenizer (see the module docstring)."""
    import jax

    from titok_jax import data as data_lib

    sec = section(config)
    workdir = os.path.abspath(os.path.expanduser(workdir))
    out_dir = os.path.expanduser(sec["out_dir"]) if sec["out_dir"] else os.path.join(workdir, "pretokenize")
    handle, params, meta = load_tokenizer(config, workdir, sec)
    encode_fn = make_encode_fn(handle, params, batch_size=int(sec["batch_size"]))
    _log(f"tokenizer {handle.name} ({meta['weights']}); batches of {sec['batch_size']} split over "
         f"{jax.local_device_count()} local device(s)")  # fmt: skip
    source = data_lib.make_source(config.data, train=sec["split"] == "train")
    meta["split"] = sec["split"]
    codebook_size = handle.config.codebook_size
    summary = pretokenize(
        encode_fn, source, out_dir, image_size=handle.image_size, flip=bool(sec["flip"]),
        shard_size=int(sec["shard_size"]), batch_size=int(sec["batch_size"]), process_index=jax.process_index(),
        process_count=jax.process_count(), meta=meta, codebook_size=codebook_size,
        num_threads=int(sec["num_threads"] or 0),
    )  # fmt: skip
    return summary


# ---------------------------------------------------------------------------------------------- CLI
def _define_flags():
    from absl import flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. configs/titok_b64.py.", lock_config=False
    )
    flags.DEFINE_string(
        "workdir", None, "Training workdir (its finished tokenizer stage; default output: WORKDIR/pretokenize)."
    )
    flags.DEFINE_string("out", None, "Output directory (overrides config.pretokenize.out_dir).")
    from titok_jax import distributed

    distributed.define_flags()
    return config, flags.FLAGS


def main(argv, config_flag, FLAGS) -> None:  # noqa: N803
    from absl import app, logging

    del argv
    logging.set_verbosity(logging.ERROR)
    config = config_flag.value
    if config is None or not FLAGS.workdir:
        raise app.UsageError("--config and --workdir are required")
    import ml_collections

    from titok_jax import distributed

    if FLAGS.out:
        with config.unlocked():
            if "pretokenize" not in config:
                config.pretokenize = ml_collections.ConfigDict(default_section())
            config.pretokenize.out_dir = FLAGS.out
    distributed.run_step_cli(run, config, FLAGS)


if __name__ == "__main__":
    from absl import app

    _config_flag, _FLAGS = _define_flags()
    app.run(lambda argv: main(argv, _config_flag, _FLAGS))
