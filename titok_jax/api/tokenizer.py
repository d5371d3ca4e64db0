"""``Tokenizer``: a loaded image tokenizer with jit-compiled encode / decode, from any source of weights.

    from titok_jax.api import Tokenizer
    tok = Tokenizer.from_pretrained("yucornetto/tokenizer_titok_b64_imagenet")   # hub repo, folder or file
    tok = Tokenizer.from_weights("configs/titok_b64.py", "tokenizer_titok_b64.safetensors")
    ids, _ = tok.encode(images)          # images float [B, 256, 256, 3] in [0, 1] -> ids int32 [B, 64]
    recon = tok.decode_tokens(ids)       # -> float32 [B, 256, 256, 3], clamped to [0, 1]

Works for every TiTok variant (VAE models return continuous latents instead of ids) and for the
MaskGIT-VQGAN (ids [B, h, w]). ``Tokenizer.load(run, workdir, source)`` is the one way every step
finds its tokenizer: an official weight file, an Orbax params directory, or the run's latest finished
tokenizer stage. Host-side input validation happens here, before any tracing. No TensorFlow.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from titok_jax import config as config_lib
from titok_jax import parallel
from titok_jax import workdir as workdir_lib
from titok_jax.api import weights as weights_lib
from titok_jax.config.sections import TokenizerSource
from titok_jax.errors import InputError
from titok_jax.images import validate_batch
from titok_jax.models import registry


class Tokenizer:
    """Params + model handle + compiled entry points. ``meta`` says where the weights came from."""

    def __init__(self, handle: registry.ModelHandle, params: Dict[str, Any], meta: Optional[Dict[str, Any]] = None):
        self.handle = handle
        self.params = params
        self.meta = dict(meta or {})
        self.module = m = handle.module()
        self._encode = jax.jit(lambda p, x: m.apply({"params": p}, x, method=m.encode))
        if handle.kind == "titok":
            self._decode_tokens = jax.jit(
                lambda p, t: jnp.clip(m.apply({"params": p}, t, method=m.decode_tokens), 0.0, 1.0)
            )
        else:
            self._decode_tokens = jax.jit(lambda p, t: m.apply({"params": p}, t, method=m.decode_tokens))

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, config: Any, ckpt_dir: str, parts: Optional[Sequence[str]] = None) -> "Tokenizer":
        """From an Orbax params directory (``titok-port import`` output or a training stage's ``final/``);
        ``parts``: only these top-level subtrees (e.g. ``ENCODE_PARTS`` for a stage-1 checkpoint)."""
        handle = registry.tokenizer(config_lib.load(config))
        path = os.path.abspath(os.path.expanduser(ckpt_dir))
        return cls(handle, handle.load(path, parts), {"weights": path, "weights_format": "orbax"})

    @classmethod
    def from_weights(cls, config: Any, weights: str, allow_pickle: bool = False) -> "Tokenizer":
        """From an official weight file (``.safetensors``, a hub folder, ``.bin`` with ``allow_pickle``)."""
        handle, params, meta = weights_lib.import_weights(config_lib.load(config), weights, allow_pickle=allow_pickle)
        meta = dict(meta, weights=meta["source"], weights_format="official")
        return cls(handle, jax.tree.map(jnp.asarray, params), meta)

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: Any = None, *, allow_pickle: bool = False,
                        cache_dir: Optional[str] = None, dtype: str = "float32") -> "Tokenizer":  # fmt: skip
        """From a Hugging Face hub repo (``yucornetto/tokenizer_titok_l32_imagenet``, ``hf:ORG/NAME[@REV]``,
        ``hf://ORG/NAME/FILE``), a local hub folder (``config.json`` + ``model.safetensors``) or a single
        weight file. The model comes from ``config.json`` (checked against the weights) unless ``config``
        is given (then ``config.json``, when present, must agree with it). Downloads go to the standard
        hub cache; with ``HF_HUB_OFFLINE=1`` they are read from it."""
        path, _ = weights_lib.hub_folder_config(name_or_path, cache_dir)
        if config is None:
            run = weights_lib.run_from_weights(tokenizer=path, dtype=dtype)
        else:
            run = config_lib.load(config)
        handle, params, meta = weights_lib.import_weights(run, path, allow_pickle=allow_pickle)
        meta = dict(meta, source=str(name_or_path), weights=str(name_or_path), weights_format="official")
        return cls(handle, jax.tree.map(jnp.asarray, params), meta)

    def save_pretrained(self, folder: str) -> Dict[str, str]:
        """``folder/model.safetensors`` (official keys and shapes) + ``config.json`` + ``README.md``
        (mode 0644): what the official ``TiTok.from_pretrained(folder)`` loads (official sizes) and what
        ``Tokenizer.from_pretrained(folder)`` loads (every model)."""
        return weights_lib.save_pretrained(self.handle, self.params, folder)

    def push_to_hub(self, repo_id: str, *, private: Optional[bool] = None, token: Optional[str] = None,
                    commit_message: str = "Upload titok_jax tokenizer") -> str:  # fmt: skip
        """``save_pretrained`` and upload to the hub repo ``repo_id`` (created when missing); returns the
        commit URL. Needs huggingface_hub and a login (``hf auth login``) or ``token``."""
        return weights_lib.push_to_hub(self.handle, self.params, repo_id, private=private, token=token,
                                       commit_message=commit_message)  # fmt: skip

    @classmethod
    def random_init(cls, config: Any, seed: int = 0) -> "Tokenizer":
        handle = registry.tokenizer(config_lib.load(config))
        return cls(
            handle, handle.init(jax.random.key(seed)), {"weights": f"random-init:{seed}", "weights_format": "random"}
        )

    @classmethod
    def load(cls, run: Any, workdir: str = "", source: Optional[TokenizerSource] = None, section: str = "",
             parts: Optional[Sequence[str]] = None) -> "Tokenizer":  # fmt: skip
        """The tokenizer a step uses (``source``: the step's config section): ``tokenizer_weights`` (an
        official file), else ``tokenizer_checkpoint`` (Orbax params), else the latest finished tokenizer
        stage under ``workdir``. ``section`` names the config section in error messages."""
        run = config_lib.load(run)
        source = source or TokenizerSource()
        if source.tokenizer_weights:  # a file, a hub folder or a hub name
            return cls.from_weights(run, source.tokenizer_weights, allow_pickle=source.allow_pickle)
        if run.model_kind != "titok" and not source.tokenizer_checkpoint:
            raise InputError(
                f"set config.{section or 'the step'}.tokenizer_checkpoint to the MaskGIT-VQGAN's Orbax params"
            )
        path = workdir_lib.tokenizer_checkpoint(workdir, source.tokenizer_checkpoint, section)
        return cls.from_checkpoint(run, path, parts if run.model_kind == "titok" else None)

    # -- properties -----------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.handle.image_size

    @property
    def is_vq(self) -> bool:
        return self.handle.kind != "titok" or self.handle.config.quantize_mode == "vq"

    @property
    def codebook_size(self) -> Optional[int]:
        return self.handle.config.codebook_size if self.is_vq else None

    @functools.cached_property
    def num_params(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.params)))

    # -- entry points ---------------------------------------------------------------------------
    def encode(self, images) -> Tuple[np.ndarray, Dict[str, Any]]:
        """images [B, H, W, 3] in [0, 1] -> (ids int32 [B, L] -- VAE: latents [B, L, C] --, result dict)."""
        x = validate_batch(images, self.image_size)
        latents, result = self._encode(self.params, x)
        if self.is_vq:
            return np.asarray(result["ids"]), result
        return np.asarray(latents), result

    def decode_tokens(self, tokens) -> np.ndarray:
        """ids (or VAE latents) -> images float32 [B, H, W, 3] clamped to [0, 1]."""
        t = np.asarray(tokens)
        if self.is_vq:
            k = self.codebook_size
            if not np.issubdtype(t.dtype, np.integer):
                raise InputError(f"token ids must be integers; got {t.dtype}")
            if t.size and (t.min() < 0 or t.max() >= k):
                raise InputError(f"token ids must be in [0, {k}); got range [{t.min()}, {t.max()}]")
            t = t.astype(np.int32)
        return np.asarray(self._decode_tokens(self.params, t))

    def reconstruct(self, images) -> Tuple[np.ndarray, np.ndarray]:
        tokens, _ = self.encode(images)
        return tokens, self.decode_tokens(tokens)

    def reconstruct_fn(self):
        """The pure ``(params, images) -> (tokens, reconstructions clamped to [0, 1])`` (jit-able; tokens
        are ids for VQ models, latents for VAE models) -- what ``reconstruct`` runs, for use inside a
        larger jitted program (e.g. the evaluation's on-device metrics)."""
        m, vq = self.module, self.is_vq

        def fn(p, x):
            latents, result = m.apply({"params": p}, x, method=m.encode)
            tokens = result["ids"] if vq else latents
            return tokens, jnp.clip(m.apply({"params": p}, tokens, method=m.decode_tokens), 0.0, 1.0)

        return fn

    def ids_fn(self, batch_size: int, what: str = "batch_size", devices=None):
        """Jitted ``images float32 [batch_size, S, S, 3] in [0, 1] -> ids int32 [batch_size, L]`` (the
        MaskGIT-VQGAN's grid flattened to L = h*w), data-parallel over this process's local devices
        (``parallel.data_parallel``). Returns a ``jax.Array`` (asynchronous)."""
        if not self.is_vq:
            raise InputError("token ids need a VQ tokenizer (discrete ids); this TiTok is a VAE")
        m = self.module

        def ids(p, x):
            out = m.apply({"params": p}, x, method=m.encode)[1]["ids"]
            return out.reshape(out.shape[0], -1).astype(jnp.int32)

        size = self.image_size
        return parallel.data_parallel(ids, self.params, batch_size, item_shape=(size, size, 3), what=what,
                                      devices=devices)  # fmt: skip
