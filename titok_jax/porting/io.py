"""Reading and writing weight files. Weight files are untrusted input.

* ``.safetensors``: read with the ``safetensors`` library (no code execution possible);
* ``.bin`` / ``.pt`` / ``.pth`` (PyTorch pickles): only when the caller passes
  ``allow_pickle=True`` (the CLIs' ``--allow_pickle``), and then with ``torch.load(weights_only=True)``;
  torch is an optional dependency imported only here;
* the original MaskGIT Flax checkpoints (``tokenizer_imagenet256_checkpoint``, one flax msgpack
  document): decoded with ``flax.serialization.msgpack_restore`` (msgpack, no pickle).

Every reader returns ``{name: np.ndarray}`` and raises ``WeightFileError`` with a message saying
what was wrong (missing, truncated, wrong format) and what to do.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, Mapping, Optional

import numpy as np
from flax import serialization
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from titok_jax.errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class WeightFileError(InputError):
    """A weight file is missing, unreadable, truncated or of an unexpected format."""


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise WeightFileError(f"weight file not found: {path}")
    if os.path.isdir(path):
        raise WeightFileError(f"{path} is a directory; pass the weight file itself (e.g. DIR/model.safetensors)")
    if os.path.getsize(path) == 0:
        raise WeightFileError(f"weight file is empty: {path}")


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _check_header(path: str, header) -> None:
    """The parsed header is ``{name: {'dtype': str, 'shape': [int], 'data_offsets': [start, end]}}``."""
    if not isinstance(header, dict):
        raise WeightFileError(
            f"{path}: corrupt safetensors header (a JSON {type(header).__name__}, expected an object of tensors); "
            "re-download or re-export it"
        )
    for k, v in header.items():
        if k == "__metadata__":
            continue
        ok = isinstance(v, dict) and isinstance(v.get("dtype"), str) and isinstance(v.get("shape"), list)
        offsets = v.get("data_offsets") if isinstance(v, dict) else None
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
        if not ok or offsets[0] < 0 or offsets[1] < offsets[0] or not all(isinstance(d, int) for d in v["shape"]):
            raise WeightFileError(f"{path}: corrupt safetensors header entry {k!r}: {str(v)[:200]}")


def load_safetensors(path: str) -> Dict[str, np.ndarray]:
    _check_exists(path)
    # Validate the framing first so a truncated download gets a precise message.
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightFileError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise WeightFileError(
                f"{path}: truncated or not a safetensors file (header claims {n} bytes, file has {size}); "
                "re-download or re-export it"
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightFileError(f"{path}: corrupt safetensors header ({e})") from None
    _check_header(path, header)
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise WeightFileError(
            f"{path}: truncated safetensors file (tensor data needs {8 + n + end} bytes, file has {size}); "
            "re-download or re-export it"
        )
    out: Dict[str, np.ndarray] = {}
    bf16 = {k for k, v in header.items() if k != "__metadata__" and v.get("dtype") == "BF16"}
    try:
        if bf16:
            # numpy has no bfloat16: read those tensors' raw bits and widen them to float32.
            with open(path, "rb") as f:
                for k in bf16:
                    s, e = header[k]["data_offsets"]
                    f.seek(8 + n + s)
                    raw = np.frombuffer(f.read(e - s), dtype="<u2").reshape(header[k]["shape"])
                    out[k] = _bf16_to_f32(raw)
        with safe_open(path, framework="numpy") as f:
            for k in f.keys():
                if k not in bf16:
                    out[k] = f.get_tensor(k)
    except SafetensorError as e:
        raise WeightFileError(f"{path}: unreadable safetensors file ({e})") from None
    return out


def load_torch_pickle(path: str) -> Dict[str, np.ndarray]:
    _check_exists(path)
    try:
        import torch  # optional: only PyTorch pickles need it
    except ImportError:
        raise WeightFileError(
            f"{path} is a PyTorch pickle; reading it needs torch (pip install torch), "
            "or convert it to .safetensors first"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise WeightFileError(f"{path}: could not read PyTorch checkpoint ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise WeightFileError(f"{path}: expected a state_dict (a mapping of tensors), got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not hasattr(v, "detach"):
            raise WeightFileError(f"{path}: entry {k!r} is not a tensor ({type(v).__name__})")
        v = v.detach().cpu()
        if v.dtype == torch.bfloat16:
            v = v.float()
        out[k] = v.numpy()
    return out


def load_state_dict(path: str, allow_pickle: bool = False) -> Dict[str, np.ndarray]:
    """Load an official PyTorch-layout state_dict from ``.safetensors`` (or a pickle if allowed)."""
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return load_safetensors(path)
    if lower.endswith(PICKLE_SUFFIXES):
        if not allow_pickle:
            _check_exists(path)
            raise WeightFileError(
                f"{path} is a PyTorch pickle: pass --allow_pickle (allow_pickle=True) to read it with "
                "torch.load(weights_only=True), or convert it to .safetensors"
            )
        return load_torch_pickle(path)
    _check_exists(path)
    raise WeightFileError(f"{path}: unknown weight file type; expected .safetensors or .bin/.pt/.pth")


def save_safetensors(state: Mapping[str, np.ndarray], path: str, metadata: Optional[Dict[str, str]] = None) -> None:
    """Write atomically (temp file + rename), float tensors as float32, C-contiguous."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp, metadata=metadata)
    os.replace(tmp, path)


def load_maskgit_jax_checkpoint(path: str) -> Dict[str, np.ndarray]:
    """Original MaskGIT Flax checkpoint -> ``{'encoder/Conv_0/kernel': array, ...}`` (under ``params``)."""
    _check_exists(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several types on truncated/corrupt input
        raise WeightFileError(
            f"{path}: not a readable flax msgpack checkpoint ({type(e).__name__}: {e}); "
            "re-download tokenizer_imagenet256_checkpoint"
        ) from None
    if not isinstance(tree, Mapping) or "params" not in tree or not isinstance(tree["params"], Mapping):
        keys = list(tree) if isinstance(tree, Mapping) else type(tree).__name__
        raise WeightFileError(f"{path}: expected a flax variables dict with a 'params' collection, got {keys}")
    out: Dict[str, np.ndarray] = {}

    def walk(node, prefix):
        for k, v in node.items():
            name = f"{prefix}/{k}" if prefix else str(k)
            if isinstance(v, Mapping):
                walk(v, name)
            else:
                out[name] = np.asarray(v)

    walk(tree["params"], "")
    return out
