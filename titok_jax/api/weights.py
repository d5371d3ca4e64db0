"""Weight import and export: official files <-> titok_jax params, for tokenizers, the VQGAN and generators.

Tokenizers (TiTok, MaskGIT-VQGAN): ``import_weights`` / ``export_weights``. MaskGIT generators
(ImageBert / UViTBert, described by ``run.generator``): ``import_generator_weights`` /
``export_generator_weights``, or ``generator=True`` on the former. A hub folder holds
``model.safetensors`` + ``config.json`` (the official config dict); on import a ``config.json`` next to
the weights must describe the same model as the run config. The mechanism (readers, name-map engine,
hub folders) is ``titok_jax.porting``; the per-model maps are ``titok_jax.models.*_map``.

Every ``weights`` argument may also name the Hugging Face hub (``hf:ORG/NAME``, ``hf://ORG/NAME/FILE``,
``https://huggingface.co/ORG/NAME``, or a bare ``ORG/NAME`` that is no local path;
``titok_jax.porting.hub``): it is downloaded into the standard hub cache first. ``run_from_weights``
builds the run config from the ``config.json`` of such folders; ``save_pretrained`` / ``push_to_hub``
write folders that the official ``TiTok.from_pretrained`` / ``ImageBert.from_pretrained`` load.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Dict, Optional, Tuple

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
    source = weights if hub.parse_hub_name(weights) is not None else os.path.abspath(weights)
    return {"model_name": handle.name, "model_kind": handle.kind, "model_config": handle.config.to_dict(),
            "source": source, "source_format": fmt, "num_tensors": num_tensors}  # fmt: skip


def _check_custom(folder: Optional[dict], handle: registry.ModelHandle) -> None:
    """A ``config.json`` with the ``titok_jax`` key must describe exactly the model of the run config."""
    if folder is None or official.TITOK_JAX_KEY not in folder:
        return
    kind, model, _ = official.tokenizer_from_hub_config(folder)
    if (kind, model) != (handle.kind, handle.config):
        theirs, ours = model.to_dict(), handle.config.to_dict()
        diffs = [f"{k}: folder {theirs.get(k)!r} vs config {ours.get(k)!r}" for k in sorted(set(theirs) | set(ours))
                 if theirs.get(k) != ours.get(k)] if kind == handle.kind else [f"model_kind: folder {kind!r} vs "
                                                                                 f"config {handle.kind!r}"]  # fmt: skip
        raise PortError("config.json next to the weights describes another model: " + "; ".join(diffs))


def import_weights(run: Any, weights: str, fmt: str = "auto", allow_pickle: bool = False,
                   generator: bool = False) -> Tuple[registry.ModelHandle, Any, Dict[str, Any]]:  # fmt: skip
    """Read + convert + validate official weights; returns (handle, params, meta).

    ``run``: a ``RunConfig`` (or anything ``titok_jax.config.load`` takes); ``generator``: the run's
    generator instead of its tokenizer."""
    run = config_lib.load(run)
    if generator:
        return import_generator_weights(run, weights, fmt, allow_pickle)
    handle = registry.tokenizer(run)
    name, weights = weights, hub.resolve(weights)
    fmt = detect_format(weights, handle.kind) if fmt == "auto" else fmt
    if fmt == "maskgit_jax":
        log.info("reading original MaskGIT Flax checkpoint %s", weights)
        state = io.load_maskgit_jax_checkpoint(weights)
        name_map = handle.maskgit_jax_map()
    else:
        folder = hub.folder_config(weights)
        _check_custom(folder, handle)
        if handle.kind == "titok" and folder is not None and "vq_model" in (folder.get("model") or {}):
            _check_same(official.tokenizer_from_official(folder), handle.config, _TOKENIZER_ARCH, "model")
        path = hub.resolve_weights(weights)
        log.info("reading PyTorch state_dict %s", path)
        state = io.load_state_dict(path, allow_pickle=allow_pickle)
        name_map = handle.torch_map()
    log.info("%d tensors read; converting with map '%s' (%d rules)", len(state), name_map.name, len(name_map.rules))
    params = name_map.to_flax(state, handle.abstract())
    n = sum(int(np.prod(np.shape(v))) for v in state.values())
    log.info("converted %d tensors (%s values); shapes and dtypes checked", len(name_map.rules), f"{n:,}")
    return handle, params, _meta(handle, name, fmt, len(name_map.rules))


def hub_config(handle: registry.ModelHandle) -> dict:
    """The ``config.json`` of an exported folder: the official dict (``TiTok.from_pretrained`` /
    ``ImageBert.from_pretrained``) when the official classes can build the model, else the ``titok_jax``
    description (custom sizes, the MaskGIT-VQGAN)."""
    if handle.kind == "generator" or (handle.kind == "titok" and handle.config.is_standard_size):
        return handle.official_config()
    log.warning("%s: custom (non-official) sizes; config.json describes it for titok_jax only", handle.name)
    return official.custom_config(handle.kind, handle.config, handle.image_size)


def export_handle(handle: registry.ModelHandle, params, out_dir: str, model_card: Optional[str] = None):
    """Params of ``handle``'s model -> ``out_dir/model.safetensors`` (official keys, order and shapes) +
    ``config.json`` (``hub_config``) [+ ``README.md``]; files mode 0644. Returns (state, paths)."""
    state = handle.torch_map().to_external(params)
    return state, hub.export_folder(out_dir, state, hub_config(handle), model_card)


# File name of an exported original-MaskGIT Flax checkpoint (the released ones: tokenizer_imagenet{256,512}_checkpoint).
MASKGIT_JAX_NAME = "tokenizer_checkpoint"


def export_weights(run: Any, params, out_dir: str, generator: bool = False, fmt: str = "torch"):
    """titok_jax params -> ``out_dir/model.safetensors`` (official keys, order, shapes) + ``config.json``;
    ``fmt='maskgit_jax'`` (the MaskGIT-VQGAN only): ``out_dir/tokenizer_checkpoint`` in the original MaskGIT
    Flax msgpack format, which ``import_weights`` reads back."""
    run = config_lib.load(run)
    handle = registry.handle(run, generator)
    if fmt == "maskgit_jax" and not generator:
        state = handle.maskgit_jax_map().to_external(params)
        path = os.path.join(out_dir, MASKGIT_JAX_NAME)
        io.save_maskgit_jax_checkpoint(state, path)
        return state, {"weights": path}
    if fmt != "torch":
        raise PortError(f"export format must be 'torch' or (MaskGIT-VQGAN only) 'maskgit_jax', got {fmt!r}")
    return export_handle(handle, params, out_dir)


def import_generator_weights(run: Any, weights: str, fmt: str = "auto", allow_pickle: bool = False):
    """An official generator state_dict (``.safetensors``, hub folder, or ``.bin`` with ``allow_pickle``)
    -> (handle, params, meta), checked against the generator the run describes."""
    run = config_lib.load(run)
    if fmt not in ("auto", "torch"):
        raise PortError(f"generators come as PyTorch state_dicts only; got format={fmt}")
    handle = registry.generator(run)
    name, weights = weights, hub.resolve(weights)
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
    return handle, params, _meta(handle, name, "torch", len(name_map.rules))


def export_generator_weights(run: Any, params, out_dir: str):
    """Generator params -> ``out_dir/model.safetensors`` (official keys, order and shapes) + ``config.json``."""
    return export_handle(registry.generator(config_lib.load(run)), params, out_dir)


# ---------------------------------------------------------------------------------------------- hub
def hub_folder_config(weights: str, cache_dir: Optional[str] = None) -> Tuple[str, Optional[dict]]:
    """(local path, its ``config.json`` or None) of weights named by a hub name or a local path."""
    path = hub.resolve(weights, cache_dir)
    if not os.path.exists(path):
        raise io.WeightFileError(f"weights not found: {weights} (neither a local file or folder nor a hub repo)")
    return path, hub.folder_config(path)


def run_from_weights(tokenizer: Optional[str] = None, generator: Optional[str] = None, dtype: str = "float32",
                     cache_dir: Optional[str] = None) -> Any:  # fmt: skip
    """The model-only ``RunConfig`` that the ``config.json`` of these weights describe (a hub repo or
    folder; ``official.run_from_hub_configs``). A file without a ``config.json`` beside it cannot say
    which model it is: then pass a config (``--config=configs/<model>.py``)."""
    dicts = {}
    for what, weights in (("tokenizer", tokenizer), ("generator", generator)):
        if weights:
            _, folder = hub_folder_config(weights, cache_dir)
            if folder is None:
                raise PortError(
                    f"{weights} has no config.json saying which {what} it is: pass a config too "
                    "(--config=configs/<model>.py, or config= in Python)"
                )
            if what == "generator" and not official.is_generator_config(folder):
                raise PortError(f"{weights} holds no generator: its config.json has no model.generator section")
            if what == "tokenizer" and official.is_generator_config(folder) and official.TITOK_JAX_KEY not in folder \
                    and "vit_enc_model_size" not in folder["model"].get("vq_model", {}):  # fmt: skip
                raise PortError(f"{weights} holds a generator, not a tokenizer (its config.json says so)")
            dicts[what] = folder
    try:
        return official.run_from_hub_configs(dicts.get("tokenizer"), dicts.get("generator"), dtype=dtype)
    except ValueError as e:
        raise PortError(f"the config.json of {tokenizer or generator} does not say which model it is ({e}); "
                        "pass a config too (--config=configs/<model>.py, or config= in Python)") from None  # fmt: skip


def model_card(handle: registry.ModelHandle, extra: str = "") -> str:
    """A short README.md for an exported hub folder: what it is and how to load it."""
    kind = {"titok": "image tokenizer (TiTok)", "maskgit_vqgan": "image tokenizer (MaskGIT-VQGAN)",
            "generator": "class-conditional MaskGIT generator"}[handle.kind]  # fmt: skip
    cls = "ImageBert" if handle.kind == "generator" else "TiTok"
    official_ok = handle.kind == "generator" or (handle.kind == "titok" and handle.config.is_standard_size)
    load = ("Sampler.from_pretrained(GENERATOR_REPO, tokenizer=TOKENIZER_REPO)" if handle.kind == "generator"
            else "Tokenizer.from_pretrained(REPO)")  # fmt: skip
    lines = ["---", "library_name: titok_jax", "tags:", "- titok", "- jax", "- image-tokenization", "---", "",
             f"# {handle.name}", "", f"A {kind}, {handle.num_params:,} parameters, exported by titok_jax.", "",
             "`model.safetensors` holds the PyTorch state_dict with the official key names and shapes; "
             "`config.json` says which model it is.", "", "```python", "from titok_jax.api import Sampler, "
             "Tokenizer", load, "```", ""]  # fmt: skip
    if official_ok:
        lines += [f"The official code (bytedance/1d-tokenizer) loads it with `{cls}.from_pretrained(REPO)` "
                  "(UViTBert for S-128 generators).", ""]  # fmt: skip
    else:
        lines += ["Custom sizes: the official classes cannot build this model; titok_jax can.", ""]
    if extra:
        lines += [extra.strip(), ""]
    return "\n".join(lines)


def save_pretrained(handle: registry.ModelHandle, params, folder: str, extra: str = "") -> Dict[str, str]:
    """``folder/{model.safetensors, config.json, README.md}`` (mode 0644); returns the paths."""
    _, paths = export_handle(handle, params, folder, model_card(handle, extra))
    log.info("wrote %s", ", ".join(paths.values()))
    return paths


def push_to_hub(handle: registry.ModelHandle, params, repo_id: str, *, private: Optional[bool] = None,
                token: Optional[str] = None, commit_message: str = "Upload titok_jax weights") -> str:  # fmt: skip
    """``save_pretrained`` into a temporary folder, then upload it to ``repo_id`` (created when
    missing). Needs huggingface_hub and a login (``hf auth login``) or ``token``. Returns the commit URL."""
    with tempfile.TemporaryDirectory(prefix="titok_jax_push_") as tmp:
        save_pretrained(handle, params, tmp)
        return hub.push_folder(tmp, repo_id, private=private, token=token, commit_message=commit_message)
