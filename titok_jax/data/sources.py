"""Random-access image sources: bundled photographs, a folder of images, a prepared tfds dataset.

Every source has ``__len__`` and ``__getitem__(i) -> {'image', 'label', 'name'}`` where ``image`` is
a uint8 HWC array, encoded bytes or a file path (decoded later by ``transforms.to_pil`` so that a
corrupt file becomes a skipped example, not a crash), ``label`` an int and ``name`` a str used in
logs and skip reports. ``__getitem__`` must be cheap and thread-safe; heavy decoding happens in the
loader's map step.

Held-out split of the ``photos`` source (``PhotosSource``)
---------------------------------------------------------
Each photograph is cut into two disjoint column ranges. The rightmost ``round(eval_fraction * W)``
columns form the *eval strip*; everything left of it is the *train region*. ``split='train'``
returns the train regions (one example per photo; the loader's random crop picks the view, so
training never sees a pixel of any eval strip, and resampling filters never reach into it because
the region is cut out before resizing). ``split='eval'`` returns fixed square tiles cut from the eval
strip: side = strip width (or the photo height if smaller), as many as fit vertically, centred; the
eval transform then resizes each tile to the model resolution. With the default
``eval_fraction=0.25`` and all 7 photos that is 20 tiles. The scenes are the same (8 real scenes in
all), so this measures reconstruction of unseen pixels of seen scenes, not generalisation to new
images; it is a demo/smoke-test split, not a benchmark.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from titok_jax import workdir
from titok_jax.errors import InputError
from titok_jax.images import SKIMAGE_PHOTOS


class DataError(InputError):
    """A data source cannot be built (missing/empty/unprepared input, bad config)."""


Example = Dict[str, Any]

OFFLINE_HINT = "for an offline demo use the bundled photographs instead: data.source='photos'"

# ----------------------------------------------------------------------------------------- photos


@functools.lru_cache(maxsize=None)
def _load_photo(name: str) -> np.ndarray:
    import skimage.data

    arr = np.ascontiguousarray(getattr(skimage.data, name)(), dtype=np.uint8)
    arr.setflags(write=False)
    return arr


Box = Tuple[int, int, int, int]  # top, left, height, width (pixels of the original photo)


class PhotosSource:
    """The RGB photographs bundled with scikit-image, split into train regions / held-out eval tiles."""

    def __init__(self, split: str = "train", photos: Optional[Sequence[str]] = None, eval_fraction: float = 0.25):
        if split not in ("train", "eval"):
            raise DataError(f"photos: split must be 'train' or 'eval', got {split!r}")
        names = tuple(photos) if photos else SKIMAGE_PHOTOS
        unknown = [n for n in names if n not in SKIMAGE_PHOTOS]
        if unknown:
            raise DataError(f"photos: unknown photo(s) {unknown}; choose from {', '.join(SKIMAGE_PHOTOS)}")
        if not 0.0 < float(eval_fraction) <= 0.5:
            raise DataError(f"photos: eval_fraction must be in (0, 0.5], got {eval_fraction}")
        self.split = split
        self.photos = names
        self.photo_sizes: Dict[str, Tuple[int, int]] = {}  # name -> (height, width)
        self.train_boxes: Dict[str, Box] = {}
        self.eval_boxes: Dict[str, List[Box]] = {}
        self._items: List[Tuple[str, int, Box]] = []
        for label, name in enumerate(names):
            h, w = _load_photo(name).shape[:2]
            strip = max(1, int(round(float(eval_fraction) * w)))
            x0 = w - strip
            side = min(strip, h)
            n = h // side
            top0 = (h - n * side) // 2
            self.photo_sizes[name] = (h, w)
            self.train_boxes[name] = (0, 0, h, x0)
            self.eval_boxes[name] = [(top0 + k * side, x0, side, side) for k in range(n)]
            if split == "train":
                self._items.append((name, label, self.train_boxes[name]))
            else:
                self._items += [(f"{name}/eval{k}", label, b) for k, b in enumerate(self.eval_boxes[name])]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> Example:
        name, label, (top, left, h, w) = self._items[i]
        photo = _load_photo(name.split("/")[0])
        return {"image": photo[top : top + h, left : left + w], "label": label, "name": name}

    def __repr__(self) -> str:
        return f"PhotosSource(split={self.split!r}, {len(self)} examples from {len(self.photos)} photos)"


# ----------------------------------------------------------------------------------------- folder

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


class FolderSource:
    """All image files under ``path`` (recursive, sorted by relative path, hidden files skipped).

    Label: index of the file's first-level sub-folder in the sorted list of first-level
    sub-folders that hold images; files directly in ``path`` belong to the class ``''``, which sorts
    first, so a flat folder is all label 0. ``class_names`` lists the classes in label order.
    """

    def __init__(self, path: Optional[str]):
        if not path:
            raise DataError(
                "data.path is required for source='folder': a directory of images, optionally one "
                f"sub-folder per class; {OFFLINE_HINT}"
            )
        root = os.path.abspath(os.path.expanduser(str(path)))
        if not os.path.exists(root):
            raise DataError(
                f"image folder {root} does not exist: put the images there (optionally one sub-folder per "
                f"class, any depth below that) or point data.path elsewhere; {OFFLINE_HINT}"
            )
        if not os.path.isdir(root):
            raise DataError(f"data.path {root} is not a directory")
        self.root = root
        files: List[str] = []
        seen = set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:  # symlink cycle
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, root)
            for f in filenames:
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(f if rel_dir == "." else os.path.join(rel_dir, f).replace(os.sep, "/"))
        if not files:
            raise DataError(
                f"image folder {root} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); put the images "
                f"there (optionally one sub-folder per class); {OFFLINE_HINT}"
            )
        files.sort()
        self.files = files
        cls = [f.split("/", 1)[0] if "/" in f else "" for f in files]
        self.class_names = sorted(set(cls))
        index = {c: k for k, c in enumerate(self.class_names)}
        self.labels = [index[c] for c in cls]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Example:
        return {"image": os.path.join(self.root, self.files[i]), "label": self.labels[i], "name": self.files[i]}

    def __repr__(self) -> str:
        return f"FolderSource({self.root!r}, {len(self)} images, {len(self.class_names)} classes)"


# ------------------------------------------------------------------------------------------- tfds


def _prepare_hint(name: str, data_dir: str) -> str:
    base = name.split(":")[0].split("/")[0]
    if base.startswith("imagenet2012"):
        how = (
            "ImageNet cannot be downloaded automatically: get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
            f"from https://image-net.org, put them in {os.path.join(data_dir, 'downloads', 'manual')}, then prepare "
            f"it once with tfds in array_record format, e.g. `tfds build {name} --data_dir={data_dir} "
            "--file_format=array_record` (preparing needs TensorFlow; reading it afterwards does not)"
        )
    else:
        how = (
            f"prepare it once with tfds in array_record format, e.g. `tfds build {name} --data_dir={data_dir} "
            "--file_format=array_record`, or from Python `tfds.builder(name, data_dir=..., "
            "file_format='array_record').download_and_prepare()`"
        )
    return f"{how}; {OFFLINE_HINT}"


class TfdsSource:
    """A prepared tfds dataset read through ``tfds`` data sources (array_record; no TensorFlow).

    Images stay encoded (``tfds.decode.SkipDecoding``) and are decoded with PIL by the loader, so a
    corrupt record is skipped like a corrupt file. Never downloads or prepares anything. ``data_dir``
    may be a local path or a ``gs://`` URL (checked through ``etils.epath``, as tfds reads it).
    """

    def __init__(
        self,
        name: Optional[str],
        split: str,
        data_dir: Optional[str] = None,
        image_key: str = "image",
        label_key: Optional[str] = None,
        name_key: Optional[str] = None,
    ):
        if not name:
            raise DataError(f"data.name is required for source='tfds' (e.g. 'imagenet2012'); {OFFLINE_HINT}")
        import tensorflow_datasets as tfds  # lazy: heavy, and only this source needs it
        from tensorflow_datasets.core import constants

        data_dir = workdir.resolve(str(data_dir or constants.DATA_DIR))  # a local path or a gs:// URL
        if not workdir.is_dir(data_dir):
            raise DataError(
                f"tfds data_dir {data_dir} does not exist, so dataset {name!r} is not prepared there; "
                + _prepare_hint(name, data_dir)
            )
        base = name.split(":")[0]
        prepared = workdir.path(data_dir) / base
        # NAME/VERSION/ or NAME/CONFIG/VERSION/ (epath refuses a recursive ** glob, which on gs:// means many RPCs)
        infos = [p for pat in ("*/dataset_info.json", "*/*/dataset_info.json") for p in prepared.glob(pat)]
        if not (prepared.is_dir() and infos):
            try:
                tfds.builder_cls(base.split("/")[0])
                known = True
            except Exception:  # tfds.core.registered.DatasetNotFoundError
                known = False
            if not known:
                raise DataError(
                    f"unknown tfds dataset {name!r}: it is neither a registered tfds dataset nor prepared in "
                    f"{data_dir} (no {os.path.join(data_dir, base)}/<version>/dataset_info.json); check data.name "
                    f"and data.data_dir; {OFFLINE_HINT}"
                )
            raise DataError(
                f"tfds dataset {name!r} is not prepared in {data_dir} (no {os.path.join(data_dir, base)}/<version>/"
                "dataset_info.json); " + _prepare_hint(name, data_dir)
            )
        try:
            builder = tfds.builder(name, data_dir=data_dir)
            features = builder.info.features
        except Exception as e:
            raise DataError(f"cannot open tfds dataset {name!r} in {data_dir}: {e}") from e
        if image_key not in features:
            raise DataError(
                f"tfds dataset {name!r} has no feature {image_key!r} (data.image_key); has {list(features)}"
            )
        if label_key is not None and label_key not in features:
            raise DataError(
                f"tfds dataset {name!r} has no feature {label_key!r} (data.label_key); has {list(features)}"
            )
        if name_key is not None and name_key not in features:
            raise DataError(f"tfds dataset {name!r} has no feature {name_key!r} (data.name_key); has {list(features)}")
        self.label_key = label_key if label_key is not None else ("label" if "label" in features else None)
        self.name_key = name_key if name_key is not None else ("file_name" if "file_name" in features else None)
        self.image_key = image_key
        decoders = (
            {image_key: tfds.decode.SkipDecoding()} if isinstance(features[image_key], tfds.features.Image) else None
        )
        splits = sorted(builder.info.splits.keys())
        try:
            self._src = builder.as_data_source(split=split, decoders=decoders)
        except NotImplementedError as e:
            raise DataError(
                f"tfds dataset {name!r} in {data_dir} is not in a random-access format ({e}); re-prepare it with "
                f"file_format='array_record'; {OFFLINE_HINT}"
            ) from e
        except Exception as e:
            raise DataError(f"tfds dataset {name!r}: cannot open split {split!r} (splits: {splits}): {e}") from e
        if len(self._src) == 0:
            raise DataError(f"tfds dataset {name!r} split {split!r} in {data_dir} is empty")
        self.name, self.split, self.data_dir = name, split, data_dir

    def __len__(self) -> int:
        return len(self._src)

    def __getitem__(self, i: int) -> Example:
        rec = self._src[i]
        label = int(rec[self.label_key]) if self.label_key else 0
        name = rec.get(self.name_key) if self.name_key else None
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return {"image": rec[self.image_key], "label": label, "name": str(name) if name else self.fallback_name(i)}

    def fallback_name(self, i: int) -> str:
        return f"{self.name}:{self.split}[{i}]"

    def __repr__(self) -> str:
        return f"TfdsSource({self.name!r}, split={self.split!r}, {len(self)} examples, data_dir={self.data_dir!r})"
