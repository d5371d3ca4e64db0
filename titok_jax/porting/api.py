"""Library side of weight porting (the CLI is ``titok_jax.port``): import official weights into
titok_jax params, export titok_jax params to official state_dicts / hub folders.

Tokenizers (TiTok, MaskGIT-VQGAN): ``import_weights`` / ``export_weights``. MaskGIT generators
(ImageBert / UViTBert, described by ``config.generator``; see ``registry.generator_from_config``):
``import_generator_weights`` / ``export_generator_weights``, or ``generator=True`` on the former.
A generator hub folder holds ``model.safetensors`` + ``config.json`` (the official config dict with
``model.generator`` and ``model.vq_model``); on import a ``config.json`` next to the weights must
describe the same generator as the config.
"""

from __future__ import annotations

import os


def _log(msg: str) -> None:
    print(f"[port] {msg}", flush=True)


def detect_format(path: str, kind: str) -> str:
    lower = path.lower()
    if os.path.isdir(path) or lower.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt")):
        return "torch"
    if kind == "maskgit_vqgan":
        return "maskgit_jax"
    return "torch"


def import_weights(config, weights: str, fmt: str = "auto", allow_pickle: bool = False, generator: bool = False):
    """Read + convert + validate; returns (handle, params, meta). ``generator``: the config's generator."""
    if generator:
        return import_generator_weights(config, weights, fmt, allow_pickle)
    import numpy as np

    from titok_jax.models import registry
    from titok_jax.porting import hub, io
    from titok_jax.porting.mapping import PortError

    handle = registry.from_config(config)
    fmt = detect_format(weights, handle.kind) if fmt == "auto" else fmt
    if fmt == "maskgit_jax":
        _log(f"reading original MaskGIT Flax checkpoint {weights}")
        state = io.load_maskgit_jax_checkpoint(weights)
        name_map = handle.maskgit_jax_map()
    else:
        official = hub.folder_config(weights) if handle.kind == "titok" else None
        if official is not None and "model" in official:
            theirs = registry.titok_config_from_official(official)
            ours = handle.config
            diffs = [
                f"{k}: folder {getattr(theirs, k)!r} vs config {getattr(ours, k)!r}"
                for k in ("encoder_size", "decoder_size", "num_latent_tokens", "token_size", "quantize_mode",
                          "is_legacy", "finetune_decoder", "image_size")
                if getattr(theirs, k) != getattr(ours, k)
            ]  # fmt: skip
            if diffs:
                raise PortError("config.json next to the weights describes another model: " + "; ".join(diffs))
        path = hub.resolve_weights(weights)
        _log(f"reading PyTorch state_dict {path}")
        state = io.load_state_dict(path, allow_pickle=allow_pickle)
        name_map = handle.torch_map()
    _log(f"{len(state)} tensors read; converting with map '{name_map.name}' ({len(name_map.rules)} rules)")
    params = name_map.to_flax(state, handle.abstract())
    n = sum(int(np.prod(np.shape(v))) for v in state.values())
    meta = {
        "model_name": handle.name,
        "model_kind": handle.kind,
        "model_config": handle.config.to_dict(),
        "source": os.path.abspath(weights),
        "source_format": fmt,
        "num_tensors": len(name_map.rules),
    }
    _log(f"converted {len(name_map.rules)} tensors ({n:,} values); shapes and dtypes checked")
    return handle, params, meta


def export_weights(config, params, out_dir: str, generator: bool = False):
    if generator:
        return export_generator_weights(config, params, out_dir)
    from titok_jax.models import registry
    from titok_jax.porting import hub

    handle = registry.from_config(config)
    state = handle.torch_map().to_external(params)
    official = None
    if handle.kind == "titok":
        if handle.config.is_standard_size:
            official = handle.official_config()
        else:
            _log("warning: custom (non-official) sizes: writing model.safetensors without config.json")
    paths = hub.export_folder(out_dir, state, official)
    return state, paths


# Architecture fields a hub folder's config.json must agree on (dropouts are training-only).
_GENERATOR_ARCH = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                   "image_seq_len", "codebook_size", "condition_num_classes")  # fmt: skip


def import_generator_weights(config, weights: str, fmt: str = "auto", allow_pickle: bool = False):
    """An official generator state_dict (``.safetensors``, hub folder, or ``.bin`` with ``allow_pickle``)
    -> (handle, params, meta), checked against the generator the config describes."""
    import numpy as np

    from titok_jax.models import generator_map, registry
    from titok_jax.porting import hub, io
    from titok_jax.porting.mapping import PortError

    if fmt not in ("auto", "torch"):
        raise PortError(f"generators come as PyTorch state_dicts only; got --format={fmt}")
    handle = registry.generator_from_config(config)
    official = hub.folder_config(weights)
    if official is not None and "generator" in official.get("model", {}):
        try:
            theirs = generator_map.generator_config_from_official(official)
        except ValueError as e:
            raise PortError(f"config.json next to the weights: {e}") from None
        ours = handle.config
        diffs = [f"{k}: folder {getattr(theirs, k)!r} vs config {getattr(ours, k)!r}"
                 for k in _GENERATOR_ARCH if getattr(theirs, k) != getattr(ours, k)]  # fmt: skip
        if diffs:
            raise PortError("config.json next to the weights describes another generator: " + "; ".join(diffs))
    path = hub.resolve_weights(weights)
    _log(f"reading PyTorch generator state_dict {path}")
    state = io.load_state_dict(path, allow_pickle=allow_pickle)
    name_map = handle.torch_map()
    _log(f"{len(state)} tensors read; converting with map '{name_map.name}' ({len(name_map.rules)} rules)")
    params = name_map.to_flax(state, handle.abstract())
    n = sum(int(np.prod(np.shape(state[k]))) for k in name_map.external_keys)
    meta = {
        "model_name": handle.name,
        "model_kind": handle.kind,
        "model_config": handle.config.to_dict(),
        "source": os.path.abspath(weights),
        "source_format": "torch",
        "num_tensors": len(name_map.rules),
    }
    _log(f"converted {len(name_map.rules)} tensors ({n:,} values); shapes and dtypes checked")
    return handle, params, meta


def export_generator_weights(config, params, out_dir: str):
    """Generator params -> ``out_dir/model.safetensors`` (official keys, order and shapes) + ``config.json``."""
    from titok_jax.models import registry
    from titok_jax.porting import hub

    handle = registry.generator_from_config(config)
    state = handle.torch_map().to_external(params)
    paths = hub.export_folder(out_dir, state, handle.official_config())
    return state, paths
