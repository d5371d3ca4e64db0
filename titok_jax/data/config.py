"""``make_loader``: build a source + ``Loader`` from the ``data`` section of a config (keys: see ``titok_jax.data``)."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from titok_jax.data.loader import Loader
from titok_jax.data.sources import DataError, FolderSource, PhotosSource, TfdsSource

SOURCES = ("photos", "folder", "tfds")

# key -> default (None: unset). Source-specific keys are ignored by the other sources.
DEFAULTS: Dict[str, Any] = {
    "source": None,
    # common
    "shuffle": True,
    "num_epochs": None,
    "min_scale": None,
    "flip": True,
    "max_skip": 64,
    "num_threads": None,
    "prefetch": None,
    # photos + tfds
    "split": None,
    "eval_split": None,
    # photos
    "photos": None,
    "eval_fraction": 0.25,
    # folder
    "path": None,
    "eval_path": None,
    # tfds
    "name": None,
    "data_dir": None,
    "image_key": "image",
    "label_key": None,
    "name_key": None,
}

_SPLITS = {"photos": ("train", "eval"), "tfds": ("train", "validation")}


def _as_dict(data_config: Any) -> Dict[str, Any]:
    if data_config is None:
        raise DataError(f"no data config given; set data.source to one of {SOURCES}")
    if hasattr(data_config, "to_dict"):
        data_config = data_config.to_dict()
    if not isinstance(data_config, Mapping):
        raise DataError(f"data config must be a dict or ConfigDict, got {type(data_config).__name__}")
    cfg = dict(data_config)
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise DataError(f"unknown data config key(s) {unknown}; valid keys: {sorted(DEFAULTS)}")
    out = dict(DEFAULTS)
    out.update({k: v for k, v in cfg.items() if v is not None})
    return out


def make_source(data_config: Any, *, train: bool):
    """The random-access source for the train or eval split described by ``data_config``."""
    c = _as_dict(data_config)
    source = c["source"]
    if source not in SOURCES:
        raise DataError(f"unknown data.source {source!r}; choose one of {', '.join(SOURCES)}")
    if source == "folder":
        path = c["path"] if train or c["eval_path"] is None else c["eval_path"]
        return FolderSource(path)
    default_train, default_eval = _SPLITS[source]
    split = (c["split"] or default_train) if train else (c["eval_split"] or default_eval)
    if source == "photos":
        return PhotosSource(split=split, photos=c["photos"], eval_fraction=c["eval_fraction"])
    return TfdsSource(
        c["name"],
        split,
        data_dir=c["data_dir"],
        image_key=c["image_key"],
        label_key=c["label_key"],
        name_key=c["name_key"],
    )


def make_loader(
    data_config: Any,
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
    c = _as_dict(data_config)
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    source = make_source(c, train=train)
    return Loader(
        source,
        global_batch_size=global_batch_size,
        image_size=image_size,
        train=train,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        shuffle=bool(c["shuffle"]) if train else False,
        num_epochs=c["num_epochs"] if train else 1,
        min_scale=c["min_scale"],
        flip=c["flip"],
        max_skip=c["max_skip"],
        num_threads=c["num_threads"],
        prefetch=c["prefetch"],
    )
