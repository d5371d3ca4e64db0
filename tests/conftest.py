"""Shared test helpers: where the official fixtures live and how outputs are compared."""

from __future__ import annotations

import pathlib

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
# Outputs of the official code (tests/fixtures/official/README.md says how each was made); never edit them.
FIXTURES = REPO / "tests" / "fixtures" / "official"


def fixture_dir(*parts: str) -> pathlib.Path:
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"official fixture {path} not found (tests/fixtures/official is part of the repository)"
        )
    return path


def load_st(path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.max(np.abs(a - b)))


# Parity tolerance (float32): 1e-5 absolute, scaled by the output magnitude when it exceeds 1
# (the ~25-conv VQGAN pixel decoder returns values up to ~3.5 on the random fixtures; two
# independent float32 implementations differ by a few ulps per layer there).
ATOL = 1e-5


def assert_parity(ours, ref, name: str, atol: float = ATOL, scale_ref=None) -> float:
    """max|ours - ref| <= atol * max(1, max|scale_ref|); scale_ref defaults to ref (for clamped
    outputs pass the unclamped signal, whose magnitude sets the float32 error)."""
    ref = np.asarray(ref)
    s_ref = ref if scale_ref is None else np.asarray(scale_ref)
    scale = max(1.0, float(np.max(np.abs(s_ref)))) if s_ref.size else 1.0
    err = max_abs(ours, ref)
    assert err <= atol * scale, f"{name}: max|diff| {err:.3g} > {atol * scale:.3g} (max|ref| {scale:.3g})"
    return err


def huge_png(path, w: int = 20000, h: int = 20000) -> None:
    """A valid PNG whose header claims ``w`` x ``h`` pixels (an 8x8 image with its IHDR rewritten): readers
    see the size at once, and never get to decode it."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    pathlib.Path(path).write_bytes(bytes(data))
