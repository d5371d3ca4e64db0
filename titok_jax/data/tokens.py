"""Pre-tokenized data for generator training: the shard format, ``TokenSource`` and the token loader.

``python -m titok_jax.pretokenize`` (``titok_jax.pretokenize``) writes a directory::

    DIR/manifest.json                    counts, seq_len, codebook_size, num_classes, flip, tokenizer meta
    DIR/tokens-00000-of-00042.npz        one shard per ``shard_size`` source images:
        tokens   int32 [n, K]   TiTok token ids
        labels   int32 [n]      class labels
        index    int64 [n]      source index of the image
        flipped  bool  [n]      True: the ids of the horizontally flipped image
        skipped_index / skipped_name / skipped_reason   [m]: unreadable images of the shard's range
        fingerprint              str: hash of the settings that made the shard (tokenizer, sizes, flip)

``TokenSource(DIR)`` validates the manifest and every shard once (counts, settings, and that each
shard holds exactly the source images ``[start, stop)`` the manifest gives it) and keeps all ids in memory.
``make_token_loader(DIR, ...)`` is the generator stage's data loader, with the same protocol as the
image ``Loader`` (``iter()`` / ``iterator(state)``, ``get_state()`` / ``set_state()`` with grain's
``{'next_index': k}``, ``stats()``, ``steps_per_epoch``), yielding per-process batches
``{'tokens': int32 [b, K], 'label': int32 [b]}``. Pipeline (grain ``MapDataset``, no worker
processes, no threads: a batch is a gather from memory)::

    range(N) -> shuffle(seed) [train] -> repeat(num_epochs) -> [:multiple of global batch] [finite]
      -> [process_index::process_count] -> batch(global_batch // process_count, drop_remainder) -> gather

so global batch ``k`` is the stream positions ``[k*B, (k+1)*B)`` (reshuffled every epoch), process
``p`` takes positions ``p, p + P, ...`` of it, and a batch is a pure function of (data, seed, k):
a restored iterator continues bit-exactly. Imports no TensorFlow.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import grain
import jax
import numpy as np

from titok_jax.data.loader import BatchStream
from titok_jax.data.sources import DataError

MANIFEST = "manifest.json"
FORMAT = "titok_jax.tokens/1"
SHARD_ARRAYS = ("tokens", "labels", "index", "flipped", "skipped_index", "skipped_name", "skipped_reason")
MANIFEST_KEYS = ("format", "num_examples", "num_shards", "shards", "seq_len", "codebook_size", "num_classes", "flip")

_HINT = (
    "make it with `python -m titok_jax.pretokenize --config=... --workdir=...` (or the 'pretokenize' step of "
    "`python -m titok_jax.main`); rerunning that command repairs an interrupted or damaged run"
)


class TokenDataError(DataError):
    """Pre-tokenized data are missing, damaged or inconsistent."""


def shard_filename(shard: int, num_shards: int) -> str:
    return f"tokens-{shard:05d}-of-{num_shards:05d}.npz"


def read_shard(path: str) -> Dict[str, np.ndarray]:
    """Load one shard file and check its arrays (names, dtypes, shapes agree); ``TokenDataError`` if not."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise TokenDataError(f"token shard {path} is missing; {_HINT}") from None
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError, ...
        raise TokenDataError(f"token shard {path} is unreadable ({type(e).__name__}: {e}); {_HINT}") from None
    missing = [k for k in SHARD_ARRAYS + ("fingerprint",) if k not in data]
    if missing:
        raise TokenDataError(f"token shard {path} lacks the array(s) {missing} (has {sorted(data)}); {_HINT}")
    tokens, labels, index, flipped = data["tokens"], data["labels"], data["index"], data["flipped"]
    expected = {"tokens": np.int32, "labels": np.int32, "index": np.int64, "flipped": np.bool_}
    for k, dt in expected.items():
        if data[k].dtype != dt:
            raise TokenDataError(f"token shard {path}: {k} has dtype {data[k].dtype}, expected {np.dtype(dt)}")
    n = tokens.shape[0] if tokens.ndim == 2 else -1
    if tokens.ndim != 2 or any(a.shape != (n,) for a in (labels, index, flipped)):
        raise TokenDataError(
            f"token shard {path}: inconsistent shapes tokens {tokens.shape}, labels {labels.shape}, index "
            f"{index.shape}, flipped {flipped.shape} (expected [n, K], [n], [n], [n])"
        )
    m = data["skipped_index"].shape
    if any(data[k].shape != m or len(m) != 1 for k in ("skipped_index", "skipped_name", "skipped_reason")):
        raise TokenDataError(f"token shard {path}: the skipped_* arrays disagree in shape")
    data["fingerprint"] = str(data["fingerprint"])
    return data


def entry_keys(index: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """(index, flipped) -> one sortable int64 key per entry."""
    return np.asarray(index, np.int64) * 2 + np.asarray(flipped, np.int64)


def expected_keys(start: int, stop: int, skipped: Sequence[int], flip: bool) -> np.ndarray:
    idx = np.setdiff1d(np.arange(start, stop, dtype=np.int64), np.asarray(list(skipped), np.int64))
    views = (0, 1) if flip else (0,)
    return np.sort(np.concatenate([idx * 2 + v for v in views]))


def check_shard(data: Dict[str, np.ndarray], path: str, start: int, stop: int, flip: bool) -> None:
    """Entries of a shard are exactly its range (less its skipped images) x views; ``TokenDataError`` if not."""
    got = np.sort(entry_keys(data["index"], data["flipped"]))
    want = expected_keys(start, stop, data["skipped_index"], flip)
    if got.shape != want.shape or not np.array_equal(got, want):
        stray = np.setdiff1d(got, want)
        example = f"; e.g. it holds image {int(stray[0]) // 2}" if len(stray) else ""
        raise TokenDataError(
            f"token shard {path} does not cover the images it should: it holds {len(got)} entries, expected "
            f"{len(want)} (source images [{start}, {stop}) less {len(data['skipped_index'])} skipped, "
            f"x{2 if flip else 1}){example}"
        )


def read_manifest(directory: str) -> Dict[str, Any]:
    path = os.path.join(directory, MANIFEST)
    if not os.path.isdir(directory):
        raise TokenDataError(f"pre-tokenized data directory {directory} does not exist; {_HINT}")
    if not os.path.exists(path):
        raise TokenDataError(
            f"{path} not found: {directory} holds no finished pre-tokenization (the manifest is written last, "
            f"after every shard); {_HINT}"
        )
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise TokenDataError(f"{path} is not valid JSON ({e}); {_HINT}") from None
    if not isinstance(manifest, dict):
        raise TokenDataError(f"{path} must hold a JSON object; {_HINT}")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise TokenDataError(f"{path} lacks the key(s) {missing}; {_HINT}")
    if manifest["format"] != FORMAT:
        raise TokenDataError(f"{path} has format {manifest['format']!r}; this version reads {FORMAT!r}; {_HINT}")
    shards = manifest["shards"]
    if not isinstance(shards, list) or len(shards) != manifest["num_shards"]:
        raise TokenDataError(f"{path}: 'shards' must list num_shards={manifest['num_shards']} entries")
    for s in shards:
        if not isinstance(s, dict) or not isinstance(s.get("file"), str) or not isinstance(s.get("count"), int):
            raise TokenDataError(f"{path}: bad shard entry {s!r} (expected {{'file': str, 'count': int, ...}})")
        if os.path.basename(s["file"]) != s["file"]:
            raise TokenDataError(f"{path}: shard file {s['file']!r} must be a plain file name inside {directory}")
    if sum(s["count"] for s in shards) != manifest["num_examples"]:
        raise TokenDataError(f"{path}: the shard counts do not add up to num_examples={manifest['num_examples']}")
    return manifest


class TokenSource:
    """All pre-tokenized examples of ``directory`` in memory (validated once).

    Arrays (concatenated in manifest order): ``tokens`` int32 [N, K], ``labels`` int32 [N],
    ``index`` int64 [N] (source image), ``flipped`` bool [N]. ``source[i]`` gives
    ``{'tokens': int32 [K], 'label': int32}``.
    """

    def __init__(self, directory: str):
        directory = os.path.abspath(os.path.expanduser(str(directory)))
        self.directory = directory
        self.manifest = m = read_manifest(directory)
        k, cb, nc = int(m["seq_len"]), int(m["codebook_size"]), int(m["num_classes"])
        if k < 1 or cb < 1 or nc < 1:
            raise TokenDataError(f"{directory}/{MANIFEST}: bad seq_len={k}, codebook_size={cb}, num_classes={nc}")
        parts: Dict[str, List[np.ndarray]] = {"tokens": [], "labels": [], "index": [], "flipped": []}
        fingerprint = m.get("fingerprint")
        covered = 0
        for s in m["shards"]:
            path = os.path.join(directory, s["file"])
            d = read_shard(path)
            n = d["tokens"].shape[0]
            if n != s["count"]:
                raise TokenDataError(
                    f"token shard {path} holds {n} examples but {MANIFEST} says {s['count']}: the directory mixes "
                    f"files of different runs or a shard was replaced; {_HINT}"
                )
            if n and d["tokens"].shape[1] != k:
                raise TokenDataError(f"token shard {path} has {d['tokens'].shape[1]} tokens per example, not {k}")
            if fingerprint is not None and d["fingerprint"] != fingerprint:
                raise TokenDataError(f"token shard {path} was made with other settings than {MANIFEST}; {_HINT}")
            if "start" in s and "stop" in s:  # the source images the manifest says this shard covers
                if s["start"] != covered:
                    raise TokenDataError(f"{MANIFEST}: shard {s['file']} starts at image {s['start']}, not {covered}")
                check_shard(d, path, int(s["start"]), int(s["stop"]), bool(m["flip"]))
                covered = int(s["stop"])
            if n and (d["tokens"].min() < 0 or d["tokens"].max() >= cb):
                raise TokenDataError(f"token shard {path} has ids outside [0, {cb}) (codebook_size in {MANIFEST})")
            if n and (d["labels"].min() < 0 or d["labels"].max() >= nc):
                raise TokenDataError(f"token shard {path} has labels outside [0, {nc}) (num_classes in {MANIFEST})")
            for name in parts:
                parts[name].append(d[name].reshape((n, k)) if name == "tokens" else d[name])
        if covered and "num_images" in m and covered != m["num_images"]:
            raise TokenDataError(f"{directory}/{MANIFEST}: the shards cover images [0, {covered}), not all "
                                 f"{m['num_images']}; {_HINT}")  # fmt: skip
        self.tokens = np.concatenate(parts["tokens"]) if parts["tokens"] else np.zeros((0, k), np.int32)
        self.labels = np.concatenate(parts["labels"]) if parts["labels"] else np.zeros((0,), np.int32)
        self.index = np.concatenate(parts["index"]) if parts["index"] else np.zeros((0,), np.int64)
        self.flipped = np.concatenate(parts["flipped"]) if parts["flipped"] else np.zeros((0,), bool)
        if len(self.tokens) != m["num_examples"]:
            raise TokenDataError(f"{directory}: read {len(self.tokens)} examples, {MANIFEST} says {m['num_examples']}")
        if len(self.tokens) == 0:
            raise TokenDataError(f"{directory} holds no examples (every image was skipped?); see {MANIFEST}")
        for a in (self.tokens, self.labels, self.index, self.flipped):
            a.setflags(write=False)

    @property
    def seq_len(self) -> int:
        return int(self.manifest["seq_len"])

    @property
    def codebook_size(self) -> int:
        return int(self.manifest["codebook_size"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def flip(self) -> bool:
        return bool(self.manifest["flip"])

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> Dict[str, np.ndarray]:
        return {"tokens": self.tokens[i], "label": self.labels[i]}

    def __repr__(self) -> str:
        return (
            f"TokenSource({self.directory!r}, {len(self)} examples x {self.seq_len} tokens, "
            f"codebook {self.codebook_size}, {self.num_classes} classes)"
        )


class _Gather:
    """Batch of row indices -> {'tokens': int32 [b, K], 'label': int32 [b]} (one fancy-index per array)."""

    def __init__(self, source: TokenSource):
        self.source = source

    def __call__(self, rows: np.ndarray) -> Dict[str, np.ndarray]:
        rows = np.asarray(rows, np.int64)
        return {"tokens": self.source.tokens[rows], "label": self.source.labels[rows]}


class TokenLoader(BatchStream):
    """Per-process batches of pre-tokenized ids; the image ``Loader``'s protocol (see module docstring)."""

    def __init__(
        self,
        source: TokenSource,
        *,
        global_batch_size: int,
        seed: int,
        process_index: int,
        process_count: int,
        shuffle: bool = True,
        num_epochs: Optional[int] = None,
    ):
        stream = self._index_stream(
            source, global_batch_size=global_batch_size, seed=seed, process_index=process_index,
            process_count=process_count, shuffle=shuffle, num_epochs=num_epochs,
            read_options=grain.ReadOptions(num_threads=0, prefetch_buffer_size=0),
        )  # fmt: skip
        self.rows: grain.MapDataset = stream[self.process_index :: self.process_count].batch(
            self.batch_size, drop_remainder=True
        )
        self.dataset: grain.MapDataset = self.rows.map(_Gather(source))

    def indices(self, k: int) -> np.ndarray:
        """Rows of ``source`` in this process's batch ``k`` (int64 [b]); ``source.index[rows]`` are images."""
        return np.asarray(self.rows[k], np.int64)

    def stats(self) -> Dict[str, Any]:
        """Same keys as ``Loader.stats`` (nothing is skipped at load time) + the pre-tokenization's skips."""
        skipped = self.source.manifest.get("skipped", [])
        return {"skipped": [], "skipped_count": 0, "examples": len(self.source), "pretokenize_skipped": len(skipped)}

    def __repr__(self) -> str:
        return (
            f"TokenLoader({self.source!r}, global_batch={self.global_batch_size}, local_batch={self.batch_size}, "
            f"process {self.process_index}/{self.process_count}, shuffle={self.shuffle}, epochs={self.num_epochs})"
        )


def make_token_loader(
    directory: Any,
    *,
    global_batch_size: int,
    seed: int,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    train: bool = True,
    shuffle: bool = True,
    num_epochs: Optional[int] = None,
) -> TokenLoader:
    """Token loader over ``directory`` (a path or an already loaded ``TokenSource``).

    Train: shuffled when ``shuffle`` (reshuffled every epoch), ``num_epochs`` passes (None: forever).
    Eval (``train=False``): never shuffled, one pass unless ``num_epochs`` says otherwise.
    ``process_index``/``process_count`` default to ``jax.process_index()``/``jax.process_count()``.
    """
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    source = directory if isinstance(directory, TokenSource) else TokenSource(directory)
    return TokenLoader(
        source,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        shuffle=bool(shuffle) if train else False,
        num_epochs=num_epochs if train or num_epochs is not None else 1,
    )
