"""Image I/O with the official evaluation preprocessing, and PNG grids.

Eval preprocessing of 1d-tokenizer (``data/webdataset_reader.py``): resize the shorter side to the
crop size (bicubic, antialiased: torchvision ``Resize`` on PIL images), center crop, to float [0, 1].

``skimage:<name>`` loads a photograph bundled with scikit-image (works offline);
``skimage:all`` expands to all of them (see ``SKIMAGE_PHOTOS``).
"""

from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from titok_jax.errors import InputError

# RGB photographs that ship inside scikit-image (no download needed).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


class ImageError(InputError):
    pass


def _open(source: str) -> Tuple[str, Image.Image]:
    if source.startswith("skimage:"):
        name = source.split(":", 1)[1]
        if name not in SKIMAGE_PHOTOS:
            raise ImageError(f"unknown bundled photo {name!r}; choose from {', '.join(SKIMAGE_PHOTOS)} or 'all'")
        import skimage.data

        return name, Image.fromarray(getattr(skimage.data, name)())
    if not os.path.exists(source):
        raise ImageError(f"image not found: {source}")
    try:
        img = Image.open(source)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ImageError(f"cannot read image {source}: {e}") from None
    return os.path.splitext(os.path.basename(source))[0], img


def expand_sources(sources: Sequence[str]) -> List[str]:
    out: List[str] = []
    for s in sources:
        if s == "skimage:all":
            out += [f"skimage:{n}" for n in SKIMAGE_PHOTOS]
        else:
            out.append(s)
    return out


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the shorter side is ``size`` (bicubic, antialiased; torchvision's rounding)."""
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    return img


def resize_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """PIL image -> float32 [size, size, 3] in [0, 1] (official eval transform)."""
    img = resize_shorter(img.convert("RGB"), size)
    nw, nh = img.size
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.float32) / 255.0


def load_images(sources: Sequence[str], size: int) -> Tuple[List[str], np.ndarray]:
    """Paths or ``skimage:<name>`` -> (names, float32 [N, size, size, 3] in [0, 1])."""
    names, arrays = [], []
    for s in expand_sources(sources):
        name, img = _open(s)
        names.append(name)
        arrays.append(resize_center_crop(img, size))
    if not arrays:
        raise ImageError("no images given")
    return names, np.stack(arrays)


def validate_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Host-side check of a user batch: NHWC, 3 channels, float in [0, 1]. Returns float32."""
    x = np.asarray(images)
    if x.ndim == 3:
        raise ImageError(f"expected a batch [B, H, W, 3]; got one image {x.shape}: add a batch axis (x[None])")
    if x.ndim != 4:
        raise ImageError(f"expected a batch [B, H, W, 3]; got shape {x.shape}")
    if x.shape[-1] != 3:
        hint = " (looks like NCHW: use x.transpose(0, 2, 3, 1))" if x.shape[1] == 3 else ""
        raise ImageError(f"expected NHWC with 3 channels; got shape {x.shape}{hint}")
    if x.shape[1:3] != (size, size):
        raise ImageError(
            f"expected {size}x{size} images; got {x.shape[1]}x{x.shape[2]} (use titok_jax.images.load_images)"
        )
    if x.dtype == np.uint8:
        raise ImageError("got uint8 images; convert to float in [0, 1] with x / 255.0")
    if not np.issubdtype(x.dtype, np.floating):
        raise ImageError(f"expected float images in [0, 1]; got dtype {x.dtype}")
    lo, hi = float(np.min(x)), float(np.max(x))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ImageError("images contain NaN or Inf")
    if lo < -1e-3 or hi > 1.0 + 1e-3:
        hint = " (looks like [-1, 1]: use (x + 1) / 2)" if lo < 0 and hi <= 1.0 + 1e-3 else ""
        hint = hint or (" (looks like [0, 255]: divide by 255)" if hi > 1.5 else "")
        raise ImageError(f"images must be in [0, 1]; got values in [{lo:.3g}, {hi:.3g}]{hint}")
    return x.astype(np.float32)


def to_uint8(x):
    """Float images in [0, 1] -> uint8 by the official truncation ``floor(clip(x, 0, 1) * 255)`` (the
    official sampler and evaluator), computed in the input's float dtype (float32 stays float32, as
    torch does): 0.99999 -> 254, never rounded. NumPy in, NumPy out; a ``jax.Array`` (also inside
    ``jax.jit``) stays on the device."""
    xp = jnp if isinstance(x, jax.Array) else np
    x = xp.asarray(x)
    if x.dtype.name in ("bfloat16", "float16"):
        x = x.astype(xp.float32)
    if not xp.issubdtype(x.dtype, xp.floating):
        raise TypeError(f"to_uint8 expects float images in [0, 1], got {x.dtype}")
    return xp.floor(xp.clip(x, 0, 1) * xp.asarray(255, x.dtype)).astype(xp.uint8)


def save_png(x: np.ndarray, path: str) -> None:
    Image.fromarray(to_uint8(x)).save(path)


def grid(rows: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """rows: each [N, H, W, 3] -> one image with the rows stacked, white padding."""
    n = max(r.shape[0] for r in rows)
    h, w = rows[0].shape[1:3]
    out = np.ones((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), np.float32)
    for i, r in enumerate(rows):
        for j in range(r.shape[0]):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + h, x : x + w] = np.clip(r[j], 0.0, 1.0)
    return out
