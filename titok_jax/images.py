"""Image I/O with the official evaluation preprocessing, and PNG grids.

Eval preprocessing of 1d-tokenizer (``data/webdataset_reader.py``): resize the shorter side to the
crop size (bicubic, antialiased: torchvision ``Resize`` on PIL images), center crop, to float [0, 1].

``skimage:<name>`` loads a photograph bundled with scikit-image (works offline);
``skimage:all`` expands to all of them (see ``SKIMAGE_PHOTOS``).

``to_rgb`` is the one conversion of any decoded image to 8-bit RGB: 16-bit and 32-bit integer
images (e.g. 16-bit grayscale PNGs, PIL mode ``I;16``) are scaled to 0..255 by their bit depth --
PIL's own ``convert('RGB')`` would clip them to white. ``check_size`` bounds an image's pixel count
(``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million) before it is decoded.
"""

from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from PIL import Image, UnidentifiedImageError

from titok_jax.errors import InputError

# RGB photographs that ship inside scikit-image (no download needed).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


class ImageError(InputError):
    pass


def max_pixels() -> int:
    """The largest image (width x height) read: PIL's decompression-bomb limit, settable there."""
    return int(Image.MAX_IMAGE_PIXELS or 2**62)


def check_size(img: Image.Image, name: str) -> None:
    """``ImageError`` when ``img`` (opened, not yet decoded) has more than ``max_pixels()`` pixels."""
    w, h = img.size
    if w * h > max_pixels():
        raise ImageError(
            f"{name} is too large to read: {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels():,} "
            "(PIL.Image.MAX_IMAGE_PIXELS); downscale it first, or raise that limit if the file is trusted"
        )


def open_image(f, name: str) -> Image.Image:
    """Open and decode an image file (path or binary file object), size-checked first; ``ImageError``
    for anything that is not a readable image."""
    try:
        img = Image.open(f)
        check_size(img, name)
        img.load()
    except Image.DecompressionBombError as e:  # PIL's own guard (more than twice its limit)
        raise ImageError(f"{name} is too large to read: {e}; downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read image {name}: {e}") from None
    return img


_INT_BITS = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 16}


def to_rgb(img: Image.Image) -> Image.Image:
    """Any decoded image -> 8-bit RGB. Integer images of more than 8 bits are scaled by their range
    (16-bit: 65535 -> 255; PIL's 32-bit mode 'I' holds 16-bit PNGs/TIFFs, so it is read as 16-bit and
    values above 65535 are clipped); float images (mode 'F') are refused (their range is unknown)."""
    if img.mode == "RGB":
        return img
    if img.mode in _INT_BITS:
        scale = 255.0 / (2 ** _INT_BITS[img.mode] - 1)
        arr = np.clip(np.asarray(img, dtype=np.float64), 0, 2 ** _INT_BITS[img.mode] - 1)
        gray = np.round(arr * scale).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=-1))
    if img.mode == "F":
        raise ImageError("32-bit float images are not supported (unknown value range): save them as 8 or 16 bit")
    return img.convert("RGB")


def unique_names(sources: Sequence[str], names: Sequence[str], reserved: Sequence[str] = ()) -> List[str]:
    """Output names for ``names`` (one per source) that collide neither with each other nor with
    ``reserved``: a clash is resolved by prefixing the parent folder (``a/x.png``, ``b/x.png`` ->
    ``a_x``, ``b_x``), then by a numeric suffix (``x-2``)."""
    taken = {r.lower() for r in reserved}
    counts: dict = {}
    for n in names:
        counts[n.lower()] = counts.get(n.lower(), 0) + 1
    out: List[str] = []
    for src, n in zip(sources, names):
        cand = n
        if counts[n.lower()] > 1 or n.lower() in taken:
            parent = "" if src.startswith("skimage:") else os.path.basename(os.path.dirname(os.path.abspath(src)))
            cand = f"{parent}_{n}" if parent else n
        base, k = cand, 2
        while cand.lower() in taken:
            cand, k = f"{base}-{k}", k + 1
        taken.add(cand.lower())
        out.append(cand)
    return out


def _open(source: str) -> Tuple[str, Image.Image]:
    if source.startswith("skimage:"):
        name = source.split(":", 1)[1]
        if name not in SKIMAGE_PHOTOS:
            raise ImageError(f"unknown bundled photo {name!r}; choose from {', '.join(SKIMAGE_PHOTOS)} or 'all'")
        import skimage.data

        return name, Image.fromarray(getattr(skimage.data, name)())
    if not os.path.exists(source):
        raise ImageError(f"image not found: {source}")
    if os.path.isdir(source):
        raise ImageError(f"{source} is a directory; give image files")
    return os.path.splitext(os.path.basename(source))[0], open_image(source, source)


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
    img = resize_shorter(to_rgb(img), size)
    nw, nh = img.size
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.float32) / 255.0


def load_images(sources: Sequence[str], size: int, reserved: Sequence[str] = ()) -> Tuple[List[str], np.ndarray]:
    """Paths or ``skimage:<name>`` -> (names, float32 [N, size, size, 3] in [0, 1]); the names are the
    file stems made unique (and distinct from ``reserved``) by ``unique_names``."""
    names, arrays = [], []
    sources = expand_sources(sources)
    for s in sources:
        name, img = _open(s)
        names.append(name)
        arrays.append(resize_center_crop(img, size))
    if not arrays:
        raise ImageError("no images given")
    return unique_names(sources, names, reserved), np.stack(arrays)


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
    """Float image in [0, 1] -> PNG at ``path`` (a local path or a ``gs://`` URL)."""
    with epath.Path(path).open("wb") as f:
        Image.fromarray(to_uint8(x)).save(f, format="PNG")


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
