"""Training/eval data pipeline: random-access sources -> grain -> per-process numpy batches.

No TensorFlow is imported (tfds is imported lazily, only by the ``tfds`` source, and is used through
its array_record data sources, which do not need TensorFlow).

Usage::

    loader = make_loader(run.data, global_batch_size=256, image_size=256, train=True, seed=0)
    it = iter(loader)                      # grain DatasetIterator: get_state() / set_state()
    batch = next(it)                       # {'image': float32 [256 // P, 256, 256, 3] in [0, 1], 'label': int32}
    x = parallel.to_global_array(batch, mesh)     # global jax.Array per leaf (all processes call it)
    loader.stats()                         # {'skipped': [(name, reason)], 'skipped_count', 'examples'}

Checkpointing the position with orbax (restores in place, bit-exact)::

    mngr.save(step, args=ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointSave(it)))
    mngr.restore(step, args=ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointRestore(it)))

``data`` config keys (``titok_jax.config.sections.DataConfig``; unknown keys are an error when the
config is parsed, keys for other sources are ignored, ``None`` means the default)
------------------------------------------------------------------------------------------------
source         'photos' | 'folder' | 'tfds' (required).
               photos: the RGB photographs bundled with scikit-image (offline demo; 7 photos,
                 ``titok_jax.images.SKIMAGE_PHOTOS``). Train = random crops of the left part of every
                 photo; eval = fixed tiles of a held-out right-hand strip (see ``sources`` docstring).
               folder: every image file under ``path`` (recursive, sorted); label = first-level
                 sub-folder (sorted class names), files directly in ``path`` are label 0.
               tfds: a prepared tfds dataset read with ``tfds`` data sources (array_record format).
shuffle        train only: shuffle the examples, reshuffled every epoch (default True). Eval never shuffles.
num_epochs     train only: passes over the data, None = repeat forever (default). Eval is always one pass.
min_scale      train only: None (default) = the official transform (resize shorter side to image_size,
               bicubic + antialias, random image_size crop, flip). A float in (0, 1] switches to a
               random-resized-crop: square side uniform in [min_scale, 1] x shorter side, resized to
               image_size -- meant for tiny demo resolutions (e.g. 0.125 for 64 px crops of the
               ~512 px photos, which the official transform would shrink to nearly the whole photo).
flip           train only: random horizontal flip with p = 0.5 (default True).
max_skip       how many consecutive unreadable examples may be replaced by the next index before the
               loader gives up with an error (default 64).
num_threads    grain read threads, each building whole batches (default min(8, CPU count); threads,
               never worker processes; PIL decoding/resizing releases the GIL). 0 = no threads.
prefetch       batches read ahead per process (default max(2, num_threads)).
split          photos: 'train' | 'eval' used when train=True (default 'train');
               tfds: split for train=True (default 'train'; tfds slicing syntax allowed).
eval_split     photos: split for train=False (default 'eval'); tfds: (default 'validation').
photos         photos: subset of ``SKIMAGE_PHOTOS`` names (default all).
eval_fraction  photos: width fraction of each photo held out as the eval strip, in (0, 0.5] (default 0.25).
path           folder: root of the training images (required for source='folder').
eval_path      folder: root of the eval images (default: ``path``).
name           tfds: dataset name, optionally 'name/config:version' (e.g. 'imagenet2012').
data_dir       tfds: directory holding the prepared dataset (default: tfds's, $TFDS_DATA_DIR or
               ~/tensorflow_datasets). Nothing is ever downloaded or prepared by the loader; for
               imagenet2012 download the tars manually and prepare with tfds (array_record).
image_key      tfds: image feature (default 'image').
label_key      tfds: label feature (default 'label' when present, else all labels 0).
name_key       tfds: feature used as the example name in skip reports (default 'file_name' when present).

Batches: b = global_batch_size // process_count examples per process, ``drop_remainder`` (eval drops
the last partial global batch too). Each process reads only its own positions of the global stream;
see ``loader`` for the layout and the determinism/resume guarantees.
"""

from titok_jax.config.sections import DataConfig
from titok_jax.data.loader import Loader, LoaderStats
from titok_jax.data.pipeline import SOURCES, make_loader, make_source
from titok_jax.data.sources import IMAGE_EXTENSIONS, DataError, FolderSource, PhotosSource, TfdsSource
from titok_jax.data.transforms import eval_reader, eval_transform, read_example, resize_shorter, to_pil, train_transform

__all__ = [
    "DataConfig",
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "DataError",
    "FolderSource",
    "Loader",
    "LoaderStats",
    "PhotosSource",
    "TfdsSource",
    "eval_transform",
    "make_loader",
    "make_source",
    "eval_reader",
    "read_example",
    "resize_shorter",
    "to_pil",
    "train_transform",
]
