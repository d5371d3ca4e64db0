"""Writing pre-tokenized shards: the layout, the settings fingerprint, atomic shard files and the manifest.

The reader side (format, ``TokenSource``, the loader) is ``titok_jax.data.tokens``; the step that
encodes images into shards is ``titok_jax.steps.pretokenize``.

Shard ``s`` covers source indices ``[s * shard_size, min((s + 1) * shard_size, N))``; process ``p``
of ``P`` handles shards ``p, p + P, p + 2P, ...``. Every shard file is written atomically (a
temporary file, then ``os.replace``), so a shard either exists complete or not at all; a rerun keeps
the shards that check out (readable, the right entries, the same settings fingerprint) and recomputes
the rest. ``finalize_manifest`` checks the union of all shards against the expected set of
(image, flipped) entries and writes ``manifest.json`` last, atomically: its presence marks a
finished run.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from titok_jax.data import tokens as tokens_lib
from titok_jax.data.tokens import MANIFEST, check_shard, entry_keys, expected_keys, shard_filename
from titok_jax.errors import InputError

log = logging.getLogger(__name__)


class PretokenizeError(InputError):
    """Bad settings, or existing output that does not fit them."""


def num_shards(num_images: int, shard_size: int) -> int:
    return max(1, -(-num_images // shard_size))


def shard_range(shard: int, num_images: int, shard_size: int) -> Tuple[int, int]:
    """Source indices ``[start, stop)`` of ``shard``."""
    return shard * shard_size, min((shard + 1) * shard_size, num_images)


def process_shards(total: int, process_index: int, process_count: int) -> List[int]:
    return list(range(process_index, total, process_count))


def fingerprint(*, num_images: int, image_size: int, flip: bool, shard_size: int, meta: Dict[str, Any]) -> str:
    """Hash of everything that determines the shards' content (mixing runs of different settings is refused)."""
    blob = json.dumps(
        dict(num_images=num_images, image_size=image_size, flip=flip, shard_size=shard_size, meta=meta),
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_atomic(path: str, write: Callable[[Any], None], process_index: int) -> None:
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


def existing_ok(path: str, start: int, stop: int, flip: bool, fp: str) -> bool:
    """True if ``path`` is a complete shard of these settings; False if absent or damaged (recompute)."""
    if not os.path.exists(path):
        return False
    try:
        data = tokens_lib.read_shard(path)
    except tokens_lib.TokenDataError as e:
        log.info(f"recomputing damaged shard: {e}")
        return False
    if data["fingerprint"] != fp:
        raise PretokenizeError(
            f"{path} was made with other settings (fingerprint {data['fingerprint']}, these settings: {fp}: a "
            "different tokenizer, image size, flip, shard size or dataset); use a new output directory or delete "
            f"the old tokens-*.npz and {MANIFEST} there"
        )
    try:
        check_shard(data, path, start, stop, flip)
    except tokens_lib.TokenDataError as e:
        log.info(f"recomputing inconsistent shard: {e}")
        return False
    return True


def write_shard(out_dir: str, s: int, total: int, acc: Dict[str, list], fp: str, process_index: int) -> None:
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
    write_atomic(path, lambda f: np.savez(f, **arrays), process_index)


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
            check_shard(data, path, start, stop, flip)
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
        keys.append(entry_keys(data["index"], data["flipped"]))
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
    want = expected_keys(0, n, [d["index"] for d in skipped], flip)
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
    write_atomic(path, lambda f: f.write(json.dumps(manifest, indent=1, default=str).encode()), 0)
    for stale in glob.glob(os.path.join(out_dir, "tokens-*.npz.tmp-*")) + glob.glob(path + ".tmp-*"):
        os.remove(stale)  # left by killed runs; every process is past its writes here
    log.info(f"{path}: {found} entries ({n} images - {len(skipped)} skipped, x{views}), {total} shard(s), "
         f"{seq_len} tokens each")  # fmt: skip
    if skipped:
        log.info(f"skipped unreadable images: {[(d['name'], d['reason']) for d in skipped]}")
    return manifest
