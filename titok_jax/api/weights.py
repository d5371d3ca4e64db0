"""Weight import and export: official files <-> titok_jax params, for tokenizers, the VQGAN and generators.

Tokenizers (TiTok, MaskGIT-VQGAN): ``import_weights`` / ``export_weights``. MaskGIT generators
(ImageBert / UViTBert, described by ``run.generator``): ``import_generator_weights`` /
``export_generator_weights``, or ``generator=True`` on the former. A hub folder holds
``model.safetensors`` + ``config.json`` (the official config dict); on import a ``config.json`` next to
the weights must describe the same model as the run config. The mechanism (readers, name-map engine,
hub folders) is ``titok_jax.porting``; the per-model maps are ``titok_jax.models.*_map``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Tuple

import numpy as np

from titok_jax import config as config_lib
from titok_jax.config import official
from titok_jax.models import registry
from titok_jax.porting import hub, io
from titok_jax.porting.mapping import PortError

log = logging.getLogger(__name__)

# Architecture fields a hub folder's config.json must agree on.
_TOKENIZER_ARCH = ("encoder_size", "decoder_size", "num_latent_tokens", "token_size", "quantize_mode", "is_legacy",
                   "finetune_decoder", "image_size")  # fmt: skip
_GENERATOR_ARCH = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                   "image_seq_len", "codebook_size", "condition_num_classes")  # fmt: skip


def detect_format(path: str, kind: str) -> str:
    lower = path.lower()
    if os.path.isdir(path) or lower.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt")):
        return "torch"
    return "maskgit_jax" if kind == "maskgit_vqgan" else "torch"


def _check_same(theirs, ours, fields, what: str) -> None:
    diffs = [f"{k}: folder {getattr(theirs, k)!r} vs config {getattr(ours, k)!r}"
             for k in fields if getattr(theirs, k) != getattr(ours, k)]  # fmt: skip
    if diffs:
        raise PortError(f"config.json next to the weights describes another {what}: " + "; ".join(diffs))


def _meta(handle: registry.ModelHandle, weights: str, fmt: str, num_tensors: int) -> Dict[str, Any]:
    return {"model_name": handle.name, "model_kind": handle.kind, "model_config": handle.config.to_dict(),
            "source": os.path.abspath(weights), "source_format": fmt, "num_tensors": num_tensors}  # fmt: skip


def import_weights(run: Any, weights: str, fmt: str = "auto", allow_pickle: bool = False,
                   generator: bool = False) -> Tuple[registry.ModelHandle, Any, Dict[str, Any]]:  # fmt: skip
    """Read + convert + validate official weights; returns (handle, params, meta).

    ``run``: a ``RunConfig`` (or anything ``titok_jax.config.load`` takes); ``generator``: the run's
    generator instead of its tokenizer."""
    run = config_lib.load(run)
    if generator:
        return import_generator_weights(run, weights, fmt, allow_pickle)
    handle = registry.tokenizer(run)
    fmt = detect_format(weights, handle.kind) if fmt == "auto" else fmt
    if fmt == "maskgit_jax":
        log.info("reading original MaskGIT Flax checkpoint %s", weights)
        state = io.load_maskgit_jax_checkpoint(weights)
        name_map = handle.maskgit_jax_map()
    else:
        folder = hub.folder_config(weights) if handle.kind == "titok" else None
        if folder is not None and "model" in folder:
            _check_same(official.tokenizer_from_official(folder), handle.config, _TOKENIZER_ARCH, "model")
        path = hub.resolve_weights(weights)
        log.info("reading PyTorch state_dict %s", path)
        state = io.load_state_dict(path, allow_pickle=allow_pickle)
        name_map = handle.torch_map()
    log.info("%d tensors read; converting with map '%s' (%d rules)", len(state), name_map.name, len(name_map.rules))
    params = name_map.to_flax(state, handle.abstract())
    n = sum(int(np.prod(np.shape(v))) for v in state.values())
    log.info("converted %d tensors (%s values); shapes and dtypes checked", len(name_map.rules), f"{n:,}")
    return handle, params, _meta(handle, weights, fmt, len(name_map.rules))


# File name of an exported original-MaskGIT Flax checkpoint (the released ones: tokenizer_imagenet{256,512}_checkpoint).
MASKGIT_JAX_NAME = "tokenizer_checkpoint"


def export_weights(run: Any, params, out_dir: str, generator: bool = False, fmt: str = "torch"):
    """titok_jax params -> ``out_dir/model.safetensors`` (official keys, order, shapes) [+ ``config.json``];
    ``fmt='maskgit_jax'`` (the MaskGIT-VQGAN only): ``out_dir/tokenizer_checkpoint`` in the original MaskGIT
    Flax msgpack format, which ``import_weights`` reads back."""
    run = config_lib.load(run)
    if generator:
        return export_generator_weights(run, params, out_dir)
    handle = registry.tokenizer(run)
    if fmt == "maskgit_jax":
        state = handle.maskgit_jax_map().to_external(params)
        path = os.path.join(out_dir, MASKGIT_JAX_NAME)
        io.save_maskgit_jax_checkpoint(state, path)
        return state, {"weights": path}
    if fmt != "torch":
        raise PortError(f"export format must be 'torch' or 'maskgit_jax', got {fmt!r}")
    state = handle.torch_map().to_external(params)
    folder_config = None
    if handle.kind == "titok":
        if handle.config.is_standard_size:
            folder_config = handle.official_config()
        else:
            log.warning("custom (non-official) sizes: writing model.safetensors without config.json")
    return state, hub.export_folder(out_dir, state, folder_config)


def import_generator_weights(run: Any, weights: str, fmt: str = "auto", allow_pickle: bool = False):
    """An official generator state_dict (``.safetensors``, hub folder, or ``.bin`` with ``allow_pickle``)
    -> (handle, params, meta), checked against the generator the run describes."""
    run = config_lib.load(run)
    if fmt not in ("auto", "torch"):
        raise PortError(f"generators come as PyTorch state_dicts only; got format={fmt}")
    handle = registry.generator(run)
    folder = hub.folder_config(weights)
    if folder is not None and "generator" in folder.get("model", {}):
        try:
            theirs = official.generator_from_official(folder)
        except ValueError as e:
            raise PortError(f"config.json next to the weights: {e}") from None
        _check_same(theirs, handle.config, _GENERATOR_ARCH, "generator")
    path = hub.resolve_weights(weights)
    log.info("reading PyTorch generator state_dict %s", path)
    state = io.load_state_dict(path, allow_pickle=allow_pickle)
    name_map = handle.torch_map()
    log.info("%d tensors read; converting with map '%s' (%d rules)", len(state), name_map.name, len(name_map.rules))
    params = name_map.to_flax(state, handle.abstract())
    n = sum(int(np.prod(np.shape(state[k]))) for k in name_map.external_keys)
    log.info("converted %d tensors (%s values); shapes and dtypes checked", len(name_map.rules), f"{n:,}")
    return handle, params, _meta(handle, weights, "torch", len(name_map.rules))


def export_generator_weights(run: Any, params, out_dir: str):
    """Generator params -> ``out_dir/model.safetensors`` (official keys, order and shapes) + ``config.json``."""
    run = config_lib.load(run)
    handle = registry.generator(run)
    state = handle.torch_map().to_external(params)
    return state, hub.export_folder(out_dir, state, handle.official_config())
