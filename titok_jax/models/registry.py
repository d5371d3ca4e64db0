"""One handle per buildable model: module, init, abstract params and name maps from a config."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from titok_jax.models import generator, generator_map, maskgit_vqgan, maskgit_vqgan_map, titok, titok_map
from titok_jax.models.generator import GeneratorConfig
from titok_jax.models.maskgit_vqgan import VQGANConfig
from titok_jax.models.titok import TiTokConfig
from titok_jax.porting.mapping import NameMap

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


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
    sampling: Optional[Any] = None

    def module(self, remat: bool = False) -> nn.Module:
        dt = DTYPES[self.dtype]
        if self.kind == "titok":
            return titok.TiTok(self.config, dtype=dt, remat=remat)
        if self.kind == "generator":
            return generator.build(self.config, dt, remat=remat)
        return maskgit_vqgan.MaskGITVQGAN(self.config, dtype=dt)

    def _init_fn(self):
        if self.kind == "titok":
            return lambda r: titok.init_params(self.config, r, DTYPES[self.dtype])
        if self.kind == "generator":
            return lambda r: generator.init_params(self.config, r, DTYPES[self.dtype])
        return lambda r: maskgit_vqgan.init_params(self.config, r, self.image_size)

    def init(self, rng: jax.Array) -> dict:
        """Random-init parameters (jit-compiled: eager Flax init of the conv decoder is slow)."""
        return jax.jit(self._init_fn())(rng)

    def abstract(self) -> dict:
        """Shapes/dtypes of the parameters, nothing allocated."""
        return jax.eval_shape(self._init_fn(), jax.random.key(0))

    def torch_map(self) -> NameMap:
        if self.kind == "titok":
            return titok_map.torch_name_map(self.config)
        if self.kind == "generator":
            return generator_map.torch_name_map(self.config)
        return maskgit_vqgan_map.torch_name_map(self.config)

    def maskgit_jax_map(self) -> NameMap:
        if self.kind != "maskgit_vqgan":
            raise ValueError("only the MaskGIT-VQGAN has an original-MaskGIT (Flax msgpack) checkpoint format")
        return maskgit_vqgan_map.maskgit_jax_name_map(self.config)

    def official_config(self) -> dict:
        """The config dict the official ``TiTok(config)`` / ``ImageBert(config)`` / ``UViTBert(config)``
        (and their ``from_pretrained``) expect."""
        if self.kind == "generator":
            return generator_map.official_generator_config(
                self.config, self.tokenizer, self.sampling, image_size=self.image_size or None
            )
        if self.kind != "titok":
            raise ValueError("official config.json export exists for TiTok models and generators only")
        return titok_official_config(self.config)


def titok_official_config(c: TiTokConfig) -> dict:
    if not c.is_standard_size:
        raise ValueError(
            "this TiTok uses custom widths/depths (e.g. a tiny test model); the official classes only build "
            "the small/base/large sizes, so no official config.json can describe it"
        )
    vq = {
        "vit_enc_model_size": c.encoder_size,
        "vit_dec_model_size": c.decoder_size,
        "vit_enc_patch_size": c.patch_size,
        "vit_dec_patch_size": c.decoder_patch_size,
        "num_latent_tokens": c.num_latent_tokens,
        "token_size": c.token_size,
        "finetune_decoder": c.finetune_decoder,
        "is_legacy": c.is_legacy,
        "quantize_mode": c.quantize_mode,
    }
    if c.quantize_mode == "vq":
        vq.update(codebook_size=c.codebook_size, use_l2_norm=c.use_l2_norm, commitment_cost=c.commitment_cost)
    return {"model": {"vq_model": vq}, "dataset": {"preprocessing": {"crop_size": c.image_size}}}


def titok_config_from_official(d: dict) -> TiTokConfig:
    """Inverse of ``titok_official_config`` (reads an official yaml/config.json dict)."""
    try:
        vq = dict(d["model"]["vq_model"])
    except (KeyError, TypeError):
        raise ValueError("an official TiTok config needs a model.vq_model section") from None
    crop = d.get("dataset", {}).get("preprocessing", {}).get("crop_size", 256)
    mode = vq.get("quantize_mode", "vq")
    kw = dict(
        image_size=crop,
        encoder_size=vq["vit_enc_model_size"],
        decoder_size=vq["vit_dec_model_size"],
        patch_size=vq.get("vit_enc_patch_size", 16),
        decoder_patch_size=vq.get("vit_dec_patch_size", 16),
        num_latent_tokens=vq["num_latent_tokens"],
        token_size=vq["token_size"],
        quantize_mode=mode,
        is_legacy=vq.get("is_legacy", True),
        finetune_decoder=vq.get("finetune_decoder", True),
    )
    if mode == "vq":
        kw.update(
            codebook_size=vq["codebook_size"],
            use_l2_norm=vq.get("use_l2_norm", False),
            commitment_cost=vq.get("commitment_cost", 0.25),
        )
    return TiTokConfig(**kw)


def _config_dtype(config) -> str:
    dtype = config.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"config.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return dtype


def generator_from_config(config) -> ModelHandle:
    """The generator's ModelHandle from a training config.

    Reads ``config.generator.model`` (``GeneratorConfig`` fields) and ``config.generator.sampling``
    (optional) and ``config.dtype``; a config without a generator section falls back to
    ``presets.GENERATORS[<tokenizer preset>]``. The tokenizer (``config.model``, when it is a TiTok) must
    fit the generator (same codebook size and number of tokens).
    """
    from titok_jax import presets

    kind = config.get("model_kind", "titok")
    base_name = str(config.get("model_name", "")).split(":")[0]
    if "generator" in config and "model" in config.generator:
        model = config.generator.model
        gen_cfg = GeneratorConfig.from_dict(model.to_dict() if hasattr(model, "to_dict") else dict(model))
        sampling_d = config.generator.get("sampling", None)
        sampling_d = sampling_d.to_dict() if hasattr(sampling_d, "to_dict") else sampling_d
    elif base_name in presets.GENERATORS:
        gen_cfg = presets.GENERATORS[base_name]
        sampling_d = presets.SAMPLING[base_name].to_dict() if base_name in presets.SAMPLING else None
    else:
        raise ValueError(
            f"the config describes no generator: add a config.generator section (presets.generator_section), "
            f"or use a preset with a generator ({sorted(presets.GENERATORS)})"
        )
    tok = presets.model_config_from(config) if kind == "titok" else None
    if tok is not None and (tok.codebook_size, tok.num_latent_tokens) != (gen_cfg.codebook_size, gen_cfg.image_seq_len):
        raise ValueError(
            f"generator (codebook {gen_cfg.codebook_size}, {gen_cfg.image_seq_len} tokens) does not fit the "
            f"tokenizer (codebook {tok.codebook_size}, {tok.num_latent_tokens} tokens): fix config.generator.model"
        )
    sampling = None
    if sampling_d:
        from titok_jax.sampling import SamplingConfig

        sampling = SamplingConfig.from_dict(sampling_d)
    name = f"generator_{base_name}" if base_name else "generator"
    image_size = tok.image_size if tok is not None else 0
    return ModelHandle("generator", gen_cfg, image_size, _config_dtype(config), name, tok, sampling)


def from_config(config, generator: bool = False) -> ModelHandle:
    """ModelHandle from an ml-collections config made by ``titok_jax.presets``; ``generator=True``: the
    MaskGIT generator described by the same config (``generator_from_config``)."""
    from titok_jax.presets import model_config_from

    if generator:
        return generator_from_config(config)
    mc = model_config_from(config)
    kind = config.get("model_kind", "titok")
    dtype = _config_dtype(config)
    image_size = mc.image_size if kind == "titok" else config.get("image_size", 256)
    return ModelHandle(kind, mc, image_size, dtype, config.get("model_name", kind))
