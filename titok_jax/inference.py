"""Python API for inference: a loaded tokenizer with jit-compiled encode / decode.

    from titok_jax.inference import Tokenizer
    tok = Tokenizer.from_weights("configs/titok_b64.py", "tokenizer_titok_b64.safetensors")
    ids, _ = tok.encode(images)          # images float [B, 256, 256, 3] in [0, 1] -> ids int32 [B, 64]
    recon = tok.decode_tokens(ids)       # -> float32 [B, 256, 256, 3], clamped to [0, 1]

Works for every TiTok variant (VAE models return continuous latents instead of ids) and for the
MaskGIT-VQGAN (ids [B, h, w]). Host-side input validation happens here, before any tracing.
No TensorFlow is imported.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from titok_jax import checkpoint
from titok_jax.images import validate_batch
from titok_jax.models import registry


def load_config(path_or_config: Any, arg: Optional[str] = None):
    """A config file path (``configs/titok_b64.py[:arg]``), a preset name, or a ConfigDict."""
    if not isinstance(path_or_config, str):
        return path_or_config
    from titok_jax import presets

    if path_or_config in presets.MODELS:
        return presets.tokenizer_config(path_or_config, arg)
    import importlib.util
    import os

    path, _, file_arg = path_or_config.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location("_titok_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(file_arg or arg)


class Tokenizer:
    """Params + model handle + compiled entry points."""

    def __init__(self, handle: registry.ModelHandle, params: Dict[str, Any]):
        self.handle = handle
        self.params = params
        self.module = handle.module()
        m = self.module
        if handle.kind == "titok":
            self._encode = jax.jit(lambda p, x: m.apply({"params": p}, x, method=m.encode))
            self._decode_tokens = jax.jit(
                lambda p, t: jnp.clip(m.apply({"params": p}, t, method=m.decode_tokens), 0.0, 1.0)
            )
        else:
            self._encode = jax.jit(lambda p, x: m.apply({"params": p}, x, method=m.encode)[::-1])
            self._decode_tokens = jax.jit(lambda p, t: m.apply({"params": p}, t, method=m.decode_ids))

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, config, ckpt_dir: str) -> "Tokenizer":
        handle = registry.from_config(load_config(config))
        return cls(handle, checkpoint.load_params(ckpt_dir, handle.abstract()))

    @classmethod
    def from_weights(cls, config, weights: str, allow_pickle: bool = False) -> "Tokenizer":
        from titok_jax.porting.api import import_weights

        handle, params, _ = import_weights(load_config(config), weights, allow_pickle=allow_pickle)
        return cls(handle, jax.tree.map(jnp.asarray, params))

    @classmethod
    def random_init(cls, config, seed: int = 0) -> "Tokenizer":
        handle = registry.from_config(load_config(config))
        return cls(handle, handle.init(jax.random.key(seed)))

    # -- entry points ---------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.handle.image_size

    def encode(self, images) -> Tuple[np.ndarray, Dict[str, Any]]:
        """images [B, H, W, 3] in [0, 1] -> (ids int32 [B, L] — VAE: latents [B, L, C] — , extras)."""
        x = validate_batch(images, self.image_size)
        if self.handle.kind == "titok":
            latents, result = self._encode(self.params, x)
            if self.handle.config.quantize_mode == "vq":
                return np.asarray(result["min_encoding_indices"]), result
            return np.asarray(latents), result
        ids, latents = self._encode(self.params, x)
        return np.asarray(ids), {"latents": latents}

    def decode_tokens(self, tokens) -> np.ndarray:
        """ids (or VAE latents) -> images float32 [B, H, W, 3] clamped to [0, 1]."""
        t = np.asarray(tokens)
        if self.handle.kind == "titok" and self.handle.config.quantize_mode == "vq":
            k = self.handle.config.codebook_size
            if not np.issubdtype(t.dtype, np.integer):
                raise ValueError(f"token ids must be integers; got {t.dtype}")
            if t.size and (t.min() < 0 or t.max() >= k):
                raise ValueError(f"token ids must be in [0, {k}); got range [{t.min()}, {t.max()}]")
            t = t.astype(np.int32)
        return np.asarray(self._decode_tokens(self.params, t))

    def reconstruct(self, images) -> Tuple[np.ndarray, np.ndarray]:
        tokens, _ = self.encode(images)
        return tokens, self.decode_tokens(tokens)

    @functools.cached_property
    def num_params(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.params)))
