"""Per-example decoding and augmentation (numpy + PIL, no TensorFlow).

Every random choice comes from the ``np.random.Generator`` passed in, so an example's output is a
pure function of (image, rng seed): the loader seeds one generator per global stream position.

* ``train_transform`` with ``min_scale=None`` is the official 1d-tokenizer training transform
  (``data/webdataset_reader.py``): resize the shorter side to ``size`` (bicubic, antialiased: PIL's
  resampling filters widen with the scale factor, like torchvision ``Resize`` on PIL images),
  random ``size`` x ``size`` crop, horizontal flip with p = 0.5, float32 in [0, 1].
* ``train_transform`` with ``min_scale=s`` (0 < s <= 1) is a random-resized-crop for tiny demo
  resolutions (e.g. 64 px crops of 512 px photographs): a square crop whose side is uniform in
  [s, 1] x the image's shorter side, at a uniform random position, resized to ``size`` (bicubic,
  antialiased), then the same flip. Not part of the official recipe.
* ``eval_transform`` is ``titok_jax.images.resize_center_crop`` (the official eval transform).
"""

from __future__ import annotations

import io
import os
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from titok_jax.images import open_image, resize_center_crop, resize_shorter, to_rgb


def to_pil(image: Any) -> Image.Image:
    """uint8/uint16 array (HW, HW1, HW3, HW4) / encoded bytes / file path / PIL image -> 8-bit RGB PIL
    image (16-bit input scaled by its range: ``titok_jax.images.to_rgb``; images larger than
    ``titok_jax.images.max_pixels()`` refused before decoding).

    Raises (``ImageError``, OSError, ValueError, ...) on unreadable input; the loader turns those into
    skipped examples.
    """
    if isinstance(image, Image.Image):
        img = image
    elif isinstance(image, (bytes, bytearray, memoryview)):
        img = open_image(io.BytesIO(bytes(image)), "encoded image")
    elif isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            img = open_image(f, os.fspath(image))
    elif isinstance(image, np.ndarray):
        if image.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected a uint8 or uint16 image array, got dtype {image.dtype}")
        arr = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            raise ValueError(f"expected an image array [H, W], [H, W, 1|3|4]; got shape {image.shape}")
        if arr.dtype == np.uint16:  # PIL has no 16-bit RGB(A): scale to 8 bits here (65535 -> 255)
            arr = np.round(arr.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        img = Image.fromarray(arr)
    else:
        raise TypeError(f"cannot decode an image from {type(image).__name__}")
    if img.width < 1 or img.height < 1:
        raise ValueError(f"empty image ({img.width}x{img.height})")
    return to_rgb(img)


def _to_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def train_transform(
    img: Image.Image, size: int, rng: np.random.Generator, *, min_scale: Optional[float] = None, flip: bool = True
) -> np.ndarray:
    """RGB PIL image -> float32 [size, size, 3] in [0, 1] (see the module docstring)."""
    if min_scale is None:
        img = resize_shorter(img, size)
        w, h = img.size
        top = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(0, w - size + 1))
        img = img.crop((left, top, left + size, top + size))
    else:
        w, h = img.size
        short = min(w, h)
        side = max(1, min(short, int(round(float(rng.uniform(min_scale, 1.0)) * short))))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        img = img.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return _to_float(img)


def eval_transform(img: Image.Image, size: int) -> np.ndarray:
    """Official eval transform: resize the shorter side to ``size``, center crop, float32 [0, 1]."""
    return resize_center_crop(img, size)


def read_example(source, i: int, transform: Optional[Callable[[Image.Image], Any]] = None):
    """Read example ``i`` of ``source`` or skip it: ``(image, label, None)`` where ``image`` is the RGB
    PIL image (or ``transform(image)``), or ``(None, None, (name, reason))`` when the example cannot be
    read or decoded -- the one place where an unreadable image becomes a reported skip, not a crash."""
    name = None
    try:
        rec = source[i]
        name = rec.get("name")
        img = to_pil(rec["image"])
        return (img if transform is None else transform(img)), int(rec["label"]), None
    except Exception as e:  # corrupt / unreadable example: skipped and reported by the caller
        fallback = getattr(source, "fallback_name", None)
        name = name or (fallback(i) if fallback else f"example[{i}]")
        return None, None, (str(name), f"{type(e).__name__}: {e}")


def eval_reader(size: int) -> Callable[[Image.Image], np.ndarray]:
    """The eval transform at ``size`` as a one-argument function (for ``read_example``)."""
    return lambda img: eval_transform(img, size)
