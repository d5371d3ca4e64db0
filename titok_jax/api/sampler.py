"""``Sampler``: a generator + tokenizer pair with one jitted ``labels -> (ids, uint8 images)`` program.

    from titok_jax.api import Sampler
    s = Sampler.from_pretrained("yucornetto/generator_titok_b64_imagenet",
                                tokenizer="yucornetto/tokenizer_titok_b64_imagenet")
    s = Sampler.from_weights("configs/titok_b64.py", "tokenizer_titok_b64.safetensors",
                             "generator_titok_b64.safetensors")
    ids, images = s.sample([207, 360, 387], seed=0)     # int32 [3, 64], uint8 [3, 256, 256, 3]

Batch size: min(``batch_size``, number of labels), rounded up to a multiple of the device count; a
shorter last batch is padded up to a power of two (times the device count) at most that size, so a
request compiles at most a few programs (one per distinct shape, cached by ``jax.jit``). Batches are
split over all devices. Sample ``i`` draws its noise from ``fold_in(key(seed), i)``: the same seed
and labels give the same samples whatever the batch size (up to the last float bits of the logits,
which can differ between batch shapes and, rarely, flip a sampled token). Sampling settings default
to the run config's (``config.generator.sampling``: the official inference settings of the released
models).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from titok_jax import config as config_lib
from titok_jax import logs, parallel
from titok_jax import workdir as workdir_lib
from titok_jax.api import weights as weights_lib
from titok_jax.config.models import SamplingConfig
from titok_jax.errors import InputError
from titok_jax.models import registry
from titok_jax.models.titok import DECODE_PARTS
from titok_jax.sampling import make_sample_fn


class Sampler:
    """Generator + tokenizer params and one jitted ``labels -> (ids, uint8 images)`` function."""

    def __init__(self, run: Any, generator_params, tokenizer_params, sampling: Optional[SamplingConfig] = None):
        self.run = run = config_lib.load(run)
        self.gen_handle = registry.generator(run)
        self.tok_handle = registry.tokenizer(run)
        self.gen_config = self.gen_handle.config
        self.sampling = sampling or run.sampling()
        self.gen_params, self.tok_params = generator_params, tokenizer_params
        fn = make_sample_fn(self.gen_handle.module(), self.sampling, self.tok_handle.module())
        self.mesh = parallel.make_mesh((-1, 1))
        # labels and their keys split over every device, outputs replicated (every process reads all samples)
        shard, repl = parallel.batch_sharding(self.mesh), parallel.replicated(self.mesh)
        self._fn = jax.jit(fn, in_shardings=(None, shard, shard, None), out_shardings=(repl, repl))

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_checkpoints(cls, run: Any, generator_dir: str, tokenizer_dir: str,
                         sampling: Optional[SamplingConfig] = None) -> "Sampler":  # fmt: skip
        """From Orbax params directories (a run's ``generator/final`` and a tokenizer stage's ``final/``)."""
        run = config_lib.load(run)
        gen = registry.generator(run).load(generator_dir)
        tok = registry.tokenizer(run).load(tokenizer_dir, DECODE_PARTS)
        return cls(run, gen, tok, sampling)

    @classmethod
    def from_workdir(cls, run: Any, workdir: str, sampling: Optional[SamplingConfig] = None) -> "Sampler":
        """The trained generator of a run and the tokenizer it was trained on."""
        return cls.from_checkpoints(run, workdir_lib.generator_checkpoint(workdir),
                                    workdir_lib.tokenizer_checkpoint(workdir), sampling)  # fmt: skip

    @classmethod
    def from_weights(cls, run: Any, tokenizer_weights: str, generator_weights: str,
                     sampling: Optional[SamplingConfig] = None, allow_pickle: bool = False) -> "Sampler":  # fmt: skip
        """From official weight files (``.safetensors``, hub folders, ``.bin`` with ``allow_pickle``)."""
        run = config_lib.load(run)
        _, tok, _ = weights_lib.import_weights(run, tokenizer_weights, allow_pickle=allow_pickle)
        _, gen, _ = weights_lib.import_generator_weights(run, generator_weights, allow_pickle=allow_pickle)
        return cls(run, gen, tok, sampling)

    @classmethod
    def from_pretrained(cls, generator: str, tokenizer: str, config: Any = None,
                        sampling: Optional[SamplingConfig] = None, *, allow_pickle: bool = False,
                        cache_dir: Optional[str] = None, dtype: str = "float32") -> "Sampler":  # fmt: skip
        """From hub repos, local hub folders or weight files (``Tokenizer.from_pretrained`` spellings):
        the generator and the tokenizer it generates ids for. Without ``config`` both models come from
        their ``config.json`` (sampling settings: the official inference settings of the matching
        released model, updated by those the generator's ``config.json`` carries)."""
        gen_path, _ = weights_lib.hub_folder_config(generator, cache_dir)
        tok_path, _ = weights_lib.hub_folder_config(tokenizer, cache_dir)
        if config is None:
            run = weights_lib.run_from_weights(tokenizer=tok_path, generator=gen_path, dtype=dtype)
        else:
            run = config_lib.load(config)
        return cls.from_weights(run, tok_path, gen_path, sampling, allow_pickle=allow_pickle)

    def save_pretrained(self, folder: str) -> dict:
        """The generator as ``folder/{model.safetensors, config.json, README.md}`` (mode 0644): what the
        official ``ImageBert.from_pretrained(folder)`` (``UViTBert`` for S-128) loads. Save the tokenizer
        with ``Tokenizer.save_pretrained``."""
        return weights_lib.save_pretrained(self.gen_handle, self.gen_params, folder)

    def push_to_hub(self, repo_id: str, *, private: Optional[bool] = None, token: Optional[str] = None,
                    commit_message: str = "Upload titok_jax generator") -> str:  # fmt: skip
        """``save_pretrained`` (the generator) and upload to the hub repo ``repo_id``; returns the commit URL."""
        return weights_lib.push_to_hub(self.gen_handle, self.gen_params, repo_id, private=private, token=token,
                                       commit_message=commit_message)  # fmt: skip

    # -- sampling -------------------------------------------------------------------------------
    def check_labels(self, labels: Sequence[int]) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"labels must be a 1-D list of integer class ids, got {labels!r}")
        c = self.gen_config.condition_num_classes
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise InputError(f"class ids must be in [0, {c}); got range [{labels.min()}, {labels.max()}]")
        return labels.astype(np.int32)

    def batch_shapes(self, n: int, batch_size: int) -> list:
        """The padded batch sizes ``sample`` runs for ``n`` labels: full batches of min(batch_size, n)
        rounded up to the device count, then the remainder padded up to a power of two (x devices)."""
        n_dev = self.mesh.devices.size
        up = lambda x: -(-x // n_dev) * n_dev  # noqa: E731
        bs = up(max(1, min(int(batch_size), n)))
        full, tail = divmod(n, bs)
        shapes = [bs] * full
        if tail:
            shapes.append(min(bs, up(1 << (tail - 1).bit_length())))
        return shapes

    def sample(self, labels: Sequence[int], seed: int = 0, batch_size: int = 32,
               progress: bool = True) -> Tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """labels [N] -> (ids int32 [N, K], images uint8 [N, H, W, 3]); sample i uses ``fold_in(key(seed), i)``.
        ``progress``: show rate and ETA (``titok_jax.logs.progress``, process 0)."""
        labels = self.check_labels(labels)
        if not labels.size or batch_size < 1:
            raise InputError(f"need at least one label and batch_size >= 1; got {labels.size} labels, "
                             f"batch_size {batch_size}")  # fmt: skip
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(len(labels)))
        ids, images = [], []
        pending = None  # (outputs, n) of the previous batch: copied to the host after the next is dispatched
        bar = logs.progress(len(labels), "sample", "img", enabled=None if progress else False)

        def fetch(p):
            (t, x), n = p
            ids.append(np.asarray(t)[:n])
            images.append(np.asarray(x)[:n])
            bar.update(n)

        with bar:
            i = 0
            for bs in self.batch_shapes(len(labels), batch_size):
                n = min(bs, len(labels) - i)
                pad = bs - n
                chunk = np.concatenate([labels[i : i + n], np.zeros(pad, np.int32)])
                chunk_keys = keys[i : i + n]
                if pad:  # padding rows reuse the first key; their samples are dropped
                    chunk_keys = jnp.concatenate([chunk_keys, jnp.broadcast_to(chunk_keys[:1], (pad,))])
                out = self._fn(self.gen_params, chunk, chunk_keys, self.tok_params)
                if pending is not None:
                    fetch(pending)
                pending = (out, n)
                i += n
            if pending is not None:
                fetch(pending)
        return np.concatenate(ids).astype(np.int32), np.concatenate(images).astype(np.uint8)
