"""The grain input pipeline: global-order stream -> per-process shard -> decode+augment -> batches.

Pipeline (all ``grain.MapDataset``, random access, no worker processes)::

    range(len(source)) -> shuffle(seed) [train] -> repeat(num_epochs) -> [:multiple of global batch] [finite]
      -> (position, source index) -> [process_index::process_count] -> map(read + decode + augment)
      -> batch(global_batch // process_count, drop_remainder=True)

Global batch ``k`` is the stream positions ``[k*B, (k+1)*B)``; process ``p`` takes positions
``p, p + P, p + 2P, ...`` of it, so the union over processes is exactly the batch a single process
would produce (same images, same augmentation), whatever the process count. Each example's random
crop/flip comes from ``np.random.default_rng([seed, position, 1])``, so a batch is a pure function
of (config, seed, step): the iterator state is only grain's ``{'next_index': k}``.
"""

from __future__ import annotations

import copy
import os
import threading
from typing import Any, Dict, Optional, Tuple

import grain
import numpy as np
from PIL import Image

from titok_jax.data import transforms
from titok_jax.data.sources import DataError

_AUG_SALT = 1


class LoaderStats:
    """Thread-safe counters the training loop can log (includes examples read ahead by prefetching)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._skipped: Dict[str, str] = {}
        self._skip_events = 0
        self._examples = 0

    def example(self) -> None:
        with self._lock:
            self._examples += 1

    def skip(self, name: str, reason: str) -> None:
        with self._lock:
            self._skip_events += 1
            self._skipped.setdefault(name, reason)

    def as_dict(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "skipped": sorted(self._skipped.items()),
                "skipped_count": self._skip_events,
                "examples": self._examples,
            }


class _ReadAugment:
    """(position, source index) -> {'image': float32 [S, S, 3], 'label': int32}, skipping unreadable examples."""

    def __init__(self, source, *, image_size, train, seed, min_scale, flip, max_skip, stats):
        self.source, self.image_size, self.train, self.seed = source, image_size, train, seed
        self.min_scale, self.flip, self.max_skip, self.stats = min_scale, flip, max_skip, stats

    def _read(self, index: int) -> Tuple[Image.Image, int]:
        n = len(self.source)
        tries = min(n, self.max_skip + 1)
        for attempt in range(tries):
            j = (index + attempt) % n
            img, label, skip = transforms.read_example(self.source, j)
            if skip is None:
                return img, label
            self.stats.skip(*skip)  # corrupt / unreadable example: replaced by the next index
        raise DataError(
            f"{tries} consecutive unreadable examples starting at index {index} of {self.source!r} "
            f"(data.max_skip={self.max_skip}); see loader.stats()['skipped']"
        )

    def __call__(self, item: Tuple[int, int]) -> Dict[str, np.ndarray]:
        position, index = item
        img, label = self._read(int(index))
        if self.train:
            rng = np.random.default_rng([self.seed, int(position), _AUG_SALT])
            image = transforms.train_transform(img, self.image_size, rng, min_scale=self.min_scale, flip=self.flip)
        else:
            image = transforms.eval_transform(img, self.image_size)
        self.stats.example()
        return {"image": image, "label": np.int32(label)}


class BatchStream:
    """The checkpointable per-process batch stream shared by ``Loader`` (images) and
    ``titok_jax.data.tokens.TokenLoader`` (pre-tokenized ids): validation of the process layout, the
    index stream (shuffle per epoch with ``seed``, repeat, whole global batches), and the iterator
    protocol — ``iter()`` / ``iterator(state)``, ``get_state()`` / ``set_state()`` with a JSON-able
    ``{'next_index': k}`` (k batches consumed, the same on every process), ``batch(k)``.
    Subclasses set ``self.dataset`` (a batched grain ``MapDataset``) after ``_index_stream``."""

    dataset: grain.MapDataset

    def _index_stream(
        self,
        source,
        *,
        global_batch_size: int,
        seed,
        process_index: int,
        process_count: int,
        shuffle: bool,
        num_epochs: Optional[int],
        read_options: grain.ReadOptions,
    ) -> grain.MapDataset:
        if process_count < 1 or not 0 <= process_index < process_count:
            raise DataError(f"bad process layout: process_index={process_index}, process_count={process_count}")
        if global_batch_size < 1 or global_batch_size % process_count:
            raise DataError(
                f"global_batch_size={global_batch_size} must be a positive multiple of process_count={process_count}"
            )
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise DataError(f"seed must be a non-negative int, got {seed!r}")
        if num_epochs is not None and num_epochs < 1:
            raise DataError(f"num_epochs must be None (repeat forever) or >= 1, got {num_epochs}")
        self.source = source
        self.global_batch_size = int(global_batch_size)
        self.batch_size = self.global_batch_size // process_count
        self.seed, self.shuffle, self.num_epochs = int(seed), bool(shuffle), num_epochs
        self.process_index, self.process_count = int(process_index), int(process_count)
        self._start_state: Optional[Dict[str, Any]] = None
        self._last: Optional[grain.DatasetIterator] = None
        self._read_options = read_options
        n = len(source)
        if n == 0:
            raise DataError(f"{source!r} is empty")
        stream = grain.MapDataset.range(n)
        if self.shuffle:
            stream = stream.shuffle(seed=self.seed)
        stream = stream.repeat(num_epochs)
        if num_epochs is not None:
            total = (n * num_epochs // self.global_batch_size) * self.global_batch_size
            if total == 0:
                raise DataError(
                    f"{source!r} has {n} examples x {num_epochs} epoch(s), fewer than one global batch of "
                    f"{self.global_batch_size}; use a smaller batch or more data"
                )
            stream = stream[:total]
        return stream

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per pass over the source (at least 1)."""
        return max(1, len(self.source) // self.global_batch_size)

    @property
    def num_batches(self) -> Optional[int]:
        """Batches this iterator yields before stopping, or None when it repeats forever."""
        return None if self.num_epochs is None else len(self.dataset)

    def __len__(self) -> int:
        if self.num_epochs is None:
            raise TypeError("this loader repeats forever (num_epochs=None); see steps_per_epoch")
        return len(self.dataset)

    def _new_iterator(self) -> grain.DatasetIterator:
        return iter(self.dataset.to_iter_dataset(self._read_options))

    def iterator(self, state: Optional[Dict[str, Any]] = None) -> grain.DatasetIterator:
        """A new grain iterator, positioned at ``state`` or else at the loader's position (see
        ``set_state``; the start by default). It becomes the iterator ``get_state`` reports on."""
        it = self._new_iterator()
        start = state if state is not None else self._start_state
        if start is not None:
            it.set_state(copy.deepcopy(start))
        self._last = it
        return it

    def __iter__(self):
        return self.iterator()

    def get_state(self) -> Dict[str, Any]:
        """JSON-able position of the most recent ``iter(loader)`` iterator (``{'next_index': k}``:
        ``k`` batches consumed, the same number on every process), else the loader's position."""
        if self._last is not None:
            return self._last.get_state()
        if self._start_state is not None:
            return copy.deepcopy(self._start_state)
        return self._new_iterator().get_state()

    def set_state(self, state: Dict[str, Any]) -> None:
        """Move the loader (and its most recent iterator, if any) to ``state`` from ``get_state``;
        every later ``iter(loader)`` starts there."""
        if not isinstance(state, dict):
            raise DataError(f"loader state must be a dict from get_state(), got {type(state).__name__}")
        try:  # validate before adopting it
            self._new_iterator().set_state(copy.deepcopy(state))
        except Exception as e:
            raise DataError(f"invalid loader state {state!r} (expected get_state()'s dict): {e}") from e
        self._start_state = copy.deepcopy(state)
        if self._last is not None:
            self._last.set_state(copy.deepcopy(state))

    def batch(self, k: int) -> Dict[str, np.ndarray]:
        """Random access to this process's batch ``k`` (no iterator, no prefetch)."""
        return self.dataset[k]


class Loader(BatchStream):
    """Per-process batches ``{'image': float32 [b, S, S, 3] in [0, 1], 'label': int32 [b]}``.

    ``iter(loader)`` (or ``loader.iterator()``) returns a new grain ``DatasetIterator`` with
    ``get_state()`` / ``set_state(state)``; the iterator also works with
    ``grain.checkpoint.CheckpointSave`` / ``CheckpointRestore`` inside an orbax ``ocp.args.Composite``.
    The loader itself has ``get_state()`` (position of its most recent iterator) and
    ``set_state(state)`` (where later iterators start), for saving the position as JSON. A restored
    iterator yields exactly the batches the uninterrupted one would have (same config, seed, global
    batch size; the state counts batches, so it is the same on every process).
    """

    def __init__(
        self,
        source,
        *,
        global_batch_size: int,
        image_size: int,
        train: bool,
        seed: int,
        process_index: int,
        process_count: int,
        shuffle: bool,
        num_epochs: Optional[int],
        min_scale: Optional[float] = None,
        flip: bool = True,
        max_skip: int = 64,
        num_threads: Optional[int] = None,
        prefetch: Optional[int] = None,
    ):
        if image_size < 1:
            raise DataError(f"image_size must be positive, got {image_size}")
        if min_scale is not None and not 0.0 < float(min_scale) <= 1.0:
            raise DataError(f"min_scale must be None or in (0, 1], got {min_scale}")
        self.image_size, self.train = int(image_size), bool(train)
        self._stats = LoaderStats()
        num_threads = min(8, os.cpu_count() or 1) if num_threads is None else int(num_threads)
        prefetch = max(2, num_threads) if prefetch is None else int(prefetch)
        read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
        stream = self._index_stream(
            source, global_batch_size=global_batch_size, seed=seed, process_index=process_index,
            process_count=process_count, shuffle=shuffle, num_epochs=num_epochs, read_options=read_options,
        )  # fmt: skip
        stream = stream.map_with_index(lambda position, index: (position, index))
        stream = stream[self.process_index :: self.process_count]
        fn = _ReadAugment(
            source,
            image_size=self.image_size,
            train=self.train,
            seed=self.seed,
            min_scale=None if min_scale is None else float(min_scale),
            flip=bool(flip),
            max_skip=int(max_skip),
            stats=self._stats,
        )
        self.dataset: grain.MapDataset = stream.map(fn).batch(self.batch_size, drop_remainder=True)

    def stats(self) -> Dict[str, Any]:
        """{'skipped': sorted [(name, reason)] of unreadable examples (each once), 'skipped_count': skip
        events, 'examples': examples produced (both include read-ahead; reset when a new Loader is built)}."""
        return self._stats.as_dict()

    def __repr__(self) -> str:
        return (
            f"Loader({self.source!r}, train={self.train}, global_batch={self.global_batch_size}, "
            f"local_batch={self.batch_size}, process {self.process_index}/{self.process_count}, "
            f"image_size={self.image_size})"
        )
