"""One handle per buildable model: module, init, abstract params, stored params and name maps.

``tokenizer(run)`` / ``generator(run)`` build the handle of the model a typed ``RunConfig`` describes
(``titok_jax.config.parse``); nothing here reads an ``ml_collections.ConfigDict``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax

from titok_jax import checkpoint
from titok_jax.config import official
from titok_jax.config.models import GeneratorConfig, SamplingConfig, TiTokConfig, VQGANConfig
from titok_jax.config.run import RunConfig
from titok_jax.errors import ConfigError
from titok_jax.models import generator as generator_lib
from titok_jax.models import generator_map, maskgit_vqgan, maskgit_vqgan_map, titok, titok_map
from titok_jax.models.layers import DTYPES
from titok_jax.porting.mapping import NameMap

# kind -> (module class or builder, init_params(config, rng, dtype), torch name map(config))
_KINDS = {
    "titok": (lambda c, dt, remat: titok.TiTok(c, dtype=dt, remat=remat), titok.init_params, titok_map.torch_name_map),
    "maskgit_vqgan": (lambda c, dt, remat: maskgit_vqgan.MaskGITVQGAN(c, dtype=dt), maskgit_vqgan.init_params,
                      maskgit_vqgan_map.torch_name_map),
    "generator": (generator_lib.build, generator_lib.init_params, generator_map.torch_name_map),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelHandle:
    kind: str  # "titok" | "maskgit_vqgan" | "generator"
    config: Union[TiTokConfig, VQGANConfig, GeneratorConfig]
    image_size: int
    dtype: str = "float32"
    name: str = ""
    # generator handles only: the tokenizer it generates ids for and its sampling settings (both
    # optional; they go into the official config.json of an exported hub folder)
    tokenizer: Optional[TiTokConfig] = None
    sampling: Optional[SamplingConfig] = None

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ConfigError(f"unknown model kind {self.kind!r}; known: {sorted(_KINDS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    def module(self, remat: bool = False) -> nn.Module:
        return _KINDS[self.kind][0](self.config, DTYPES[self.dtype], remat)

    def _init_fn(self):
        init = _KINDS[self.kind][1]
        return lambda rng: init(self.config, rng, DTYPES[self.dtype])

    def init(self, rng: jax.Array) -> dict:
        """Random-init parameters (jit-compiled: eager Flax init of the conv decoder is slow)."""
        return jax.jit(self._init_fn())(rng)

    def abstract(self, parts: Optional[Sequence[str]] = None) -> dict:
        """Shapes/dtypes of the parameters (only the top-level ``parts`` when given), nothing allocated."""
        tree = jax.eval_shape(self._init_fn(), jax.random.key(0))
        return tree if parts is None else {k: tree[k] for k in parts if k in tree}

    def load(self, path: str, parts: Optional[Sequence[str]] = None) -> Any:
        """Parameters from an Orbax params directory (``port import`` output or a stage's ``final/``);
        with ``parts`` only those top-level subtrees are read (e.g. the encoder side of a stage-1
        checkpoint, which has no pixel decoder)."""
        if parts is None:
            return checkpoint.load_params(path, self.abstract())
        return checkpoint.load_subtrees(path, self.abstract(parts))

    def torch_map(self) -> NameMap:
        return _KINDS[self.kind][2](self.config)

    def maskgit_jax_map(self) -> NameMap:
        if self.kind != "maskgit_vqgan":
            raise ConfigError("only the MaskGIT-VQGAN has an original-MaskGIT (Flax msgpack) checkpoint format")
        return maskgit_vqgan_map.maskgit_jax_name_map(self.config)

    def official_config(self) -> dict:
        """The config dict the official ``TiTok(config)`` / ``ImageBert(config)`` / ``UViTBert(config)``
        (and their ``from_pretrained``) expect."""
        if self.kind == "generator":
            return official.generator_to_official(self.config, self.tokenizer, self.sampling, self.image_size or None)
        if self.kind != "titok":
            raise ConfigError("official config.json export exists for TiTok models and generators only")
        return official.tokenizer_to_official(self.config)

    @property
    def num_params(self) -> int:
        return int(sum(x.size for x in jax.tree.leaves(self.abstract())))


def tokenizer(run: RunConfig) -> ModelHandle:
    """The image tokenizer of ``run`` (a TiTok or the MaskGIT-VQGAN)."""
    return ModelHandle(run.model_kind, run.model, run.image_size, run.dtype, run.model_name or run.model_kind)


def generator(run: RunConfig) -> ModelHandle:
    """The MaskGIT generator of ``run`` (``run.generator``; its fit to the tokenizer was checked by ``parse``)."""
    tok = run.model if isinstance(run.model, TiTokConfig) else None
    name = f"generator_{run.base_name}" if run.base_name else "generator"
    return ModelHandle("generator", run.generator_config, tok.image_size if tok else 0, run.dtype, name, tok,
                       run.generator.sampling)  # fmt: skip


def handle(run: RunConfig, generator_model: bool = False) -> ModelHandle:
    """``generator(run)`` when ``generator_model``, else ``tokenizer(run)``."""
    return generator(run) if generator_model else tokenizer(run)
