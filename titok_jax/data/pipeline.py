"""``make_source`` / ``make_loader``: a source and its ``Loader`` from a typed ``DataConfig``.

The keys are those of ``titok_jax.config.sections.DataConfig`` (documented in ``titok_jax.data``).
"""

from __future__ import annotations

from typing import Optional

import jax

from titok_jax.config.sections import DataConfig
from titok_jax.data.loader import Loader
from titok_jax.data.sources import DataError, FolderSource, PhotosSource, TfdsSource

SOURCES = ("photos", "folder", "tfds")
_SPLITS = {"photos": ("train", "eval"), "tfds": ("train", "validation")}


def make_source(data: DataConfig, *, train: bool):
    """The random-access source for the train or eval split described by ``data``."""
    if not isinstance(data, DataConfig):
        raise DataError(f"expected a titok_jax.config.sections.DataConfig, got {type(data).__name__}")
    if data.source not in SOURCES:
        raise DataError(f"unknown data.source {data.source!r}; choose one of {', '.join(SOURCES)}")
    if data.source == "folder":
        return FolderSource(data.path if train or data.eval_path is None else data.eval_path)
    default_train, default_eval = _SPLITS[data.source]
    split = (data.split or default_train) if train else (data.eval_split or default_eval)
    if data.source == "photos":
        return PhotosSource(split=split, photos=data.photos, eval_fraction=data.eval_fraction)
    return TfdsSource(data.name, split, data_dir=data.data_dir, image_key=data.image_key, label_key=data.label_key,
                      name_key=data.name_key)  # fmt: skip


def make_loader(
    data: DataConfig,
    *,
    global_batch_size: int,
    image_size: int,
    train: bool,
    seed: int,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
) -> Loader:
    """Source + grain pipeline for this process. ``process_index``/``process_count`` default to
    ``jax.process_index()``/``jax.process_count()``; the per-process batch is
    ``global_batch_size // process_count``. Train: shuffled (``data.shuffle``), augmented, repeats
    ``data.num_epochs`` times (default forever). Eval: one pass in source order, eval transform."""
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return Loader(
        make_source(data, train=train),
        global_batch_size=global_batch_size,
        image_size=image_size,
        train=train,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        shuffle=data.shuffle if train else False,
        num_epochs=data.num_epochs if train else 1,
        min_scale=data.min_scale,
        flip=data.flip,
        max_skip=data.max_skip,
        num_threads=data.num_threads,
        prefetch=data.prefetch,
    )
