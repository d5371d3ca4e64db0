"""Model presets and the ml-collections configs built from them.

Every ``configs/<model>.py`` is ``get_config(arg) -> presets.tokenizer_config(<model>, arg)``, so the
same sizes are available from Python (``presets.MODELS``) and from the command line.

``arg`` (the text after ``:`` in ``--config=configs/titok_b64.py:stage1,dtype=bfloat16``) is a comma
separated list of flags and ``key=value`` pairs:

* ``stage1``: the proxy-code model without the VQGAN pixel decoder (``finetune_decoder=False``);
* ``dtype=bfloat16``: compute dtype (parameters stay float32);
* ``seed=N``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import ml_collections

from titok_jax.models.generator import GeneratorConfig
from titok_jax.models.maskgit_vqgan import VQGANConfig
from titok_jax.models.titok import TiTokConfig
from titok_jax.sampling import SamplingConfig

_LEGACY = dict(token_size=12, codebook_size=4096, use_l2_norm=True, is_legacy=True, finetune_decoder=True)
_VQ8K = dict(token_size=64, codebook_size=8192, use_l2_norm=False, is_legacy=False, finetune_decoder=False)
_VAE = dict(token_size=16, quantize_mode="vae", is_legacy=False, finetune_decoder=False)

# name -> (model kind, config). Official sizes: 1d-tokenizer configs/infer/TiTok/*.yaml.
MODELS: Dict[str, Any] = {
    "titok_s128": TiTokConfig(encoder_size="small", decoder_size="small", num_latent_tokens=128, **_LEGACY),
    "titok_b64": TiTokConfig(encoder_size="base", decoder_size="base", num_latent_tokens=64, **_LEGACY),
    "titok_l32": TiTokConfig(encoder_size="large", decoder_size="large", num_latent_tokens=32, **_LEGACY),
    "titok_bl64_vq8k": TiTokConfig(encoder_size="base", decoder_size="large", num_latent_tokens=64, **_VQ8K),
    "titok_bl128_vq8k": TiTokConfig(encoder_size="base", decoder_size="large", num_latent_tokens=128, **_VQ8K),
    "titok_sl256_vq8k": TiTokConfig(encoder_size="small", decoder_size="large", num_latent_tokens=256, **_VQ8K),
    "titok_ll32_vae_c16": TiTokConfig(encoder_size="large", decoder_size="large", num_latent_tokens=32, **_VAE),
    "titok_bl64_vae_c16": TiTokConfig(encoder_size="base", decoder_size="large", num_latent_tokens=64, **_VAE),
    "titok_bl128_vae_c16": TiTokConfig(encoder_size="base", decoder_size="large", num_latent_tokens=128, **_VAE),
    "maskgit_vqgan": VQGANConfig(),
    # Tiny models (CPU tests and the demo): a 64x64 TiTok with a 4-level VQGAN pixel decoder, and its teacher.
    "titok_tiny": TiTokConfig(
        image_size=64,
        encoder_size="small",
        decoder_size="small",
        encoder_width=64,
        encoder_depth=2,
        encoder_heads=2,
        decoder_width=64,
        decoder_depth=2,
        decoder_heads=2,
        num_latent_tokens=8,
        token_size=12,
        codebook_size=64,
        use_l2_norm=True,
        is_legacy=True,
        finetune_decoder=True,
        pixel_decoder=VQGANConfig(hidden_channels=32, channel_mult=(1, 1, 1, 2, 2), z_channels=32),
    ),  # fmt: skip
    "maskgit_vqgan_tiny": VQGANConfig(hidden_channels=32, channel_mult=(1, 1, 1, 2, 2), z_channels=32),
    # Tiny single-stage (pixel head) TiTok, the shape of the official vq8k fixture.
    "titok_tiny_vq": TiTokConfig(
        image_size=64,
        encoder_size="base",
        decoder_size="large",
        encoder_width=32,
        encoder_depth=2,
        encoder_heads=2,
        decoder_width=64,
        decoder_depth=2,
        decoder_heads=2,
        num_latent_tokens=8,
        token_size=16,
        codebook_size=256,
        use_l2_norm=False,
        is_legacy=False,
        finetune_decoder=False,
    ),  # fmt: skip
}

IMAGE_SIZES = {"maskgit_vqgan": 256, "maskgit_vqgan_tiny": 64}


def step_section(config, name: str, defaults: Dict[str, Any], error=ValueError) -> Dict[str, Any]:
    """``config.<name>`` merged over ``defaults`` (None values keep the default); unknown keys raise ``error``.
    Shared by the steps that read a config section (pretokenize, evaluate, linear_probe)."""
    out = dict(defaults)
    sec = config.get(name, None) if hasattr(config, "get") else None
    if sec is not None:
        sec = sec.to_dict() if hasattr(sec, "to_dict") else dict(sec)
        unknown = sorted(set(sec) - set(out))
        if unknown:
            raise error(f"unknown config.{name} key(s) {unknown}; valid: {sorted(out)}")
        out.update({k: v for k, v in sec.items() if v is not None})
    return out


def model_kind(model_config) -> str:
    if isinstance(model_config, TiTokConfig):
        return "titok"
    if isinstance(model_config, VQGANConfig):
        return "maskgit_vqgan"
    raise TypeError(f"unknown model config type {type(model_config).__name__}")


def parse_arg(arg: Optional[str], **defaults) -> Dict[str, Any]:
    """``"stage1,dtype=bfloat16"`` -> {'stage1': True, 'dtype': 'bfloat16', ...defaults}."""
    out = dict(defaults)
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        if "=" in item:
            k, v = item.split("=", 1)
            if k not in out:
                raise ValueError(f"unknown config argument {k!r}; known: {sorted(out)}")
            out[k] = type(out[k])(v) if out[k] is not None and not isinstance(out[k], bool) else v
        else:
            if item not in out or not isinstance(out[item], bool):
                known = sorted(k for k, v in out.items() if isinstance(v, bool))
                raise ValueError(f"unknown config flag {item!r}; known flags: {known}")
            out[item] = True
    return out


def tokenizer_config(name: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; presets: {sorted(MODELS)}")
    a = parse_arg(arg, stage1=False, dtype="float32", seed=0)
    model = MODELS[name]
    kind = model_kind(model)
    if a["stage1"]:
        if kind != "titok" or not model.is_legacy:
            raise ValueError("':stage1' applies to the legacy TiTok models (titok_s128/b64/l32/tiny) only")
        model = dataclasses.replace(model, finetune_decoder=False)
    if a["dtype"] not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be float32 or bfloat16, got {a['dtype']!r}")
    config = ml_collections.ConfigDict()
    config.model_name = name + (":stage1" if a["stage1"] else "")
    config.model_kind = kind
    config.model = ml_collections.ConfigDict(model.to_dict())
    config.image_size = model.image_size if kind == "titok" else IMAGE_SIZES.get(name, 256)
    config.dtype = a["dtype"]
    config.seed = a["seed"]
    return config


def model_config_from(config: ml_collections.ConfigDict):
    """The typed model config (``TiTokConfig`` / ``VQGANConfig``) described by a ConfigDict."""
    d = config.model.to_dict() if hasattr(config.model, "to_dict") else dict(config.model)
    kind = config.get("model_kind", "titok")
    if kind == "titok":
        return TiTokConfig.from_dict(d)
    if kind == "maskgit_vqgan":
        return VQGANConfig.from_dict(d)
    raise ValueError(f"unknown model_kind {kind!r}; expected 'titok' or 'maskgit_vqgan'")


# ----------------------------------------------------------------------------------------------
# Training configs (python -m titok_jax.main). Official recipe: official_titok.md sections 5-6.
def _optim(**kw) -> dict:
    base = dict(
        num_steps=1_000_000, batch_size=256, lr=1e-4, end_lr=1e-5, warmup_steps=10_000, b1=0.9, b2=0.99,
        weight_decay=1e-4, grad_clip=1.0, ema_decay=0.999, grad_accum_steps=1,
        log_every=50, checkpoint_every=5_000, eval_every=10_000, keep_checkpoints=3,
    )  # fmt: skip
    base.update(kw)
    return base


def _pixel_losses(**kw) -> dict:
    base = dict(
        reconstruction_weight=1.0, perceptual_weight=0.1, perceptual_checkpoint="", disc_weight=0.01,
        disc_factor=1.0, disc_start=20_000, disc_lr=1e-4, lecam_weight=0.001, lecam_decay=0.999,
    )  # fmt: skip
    base.update(kw)
    return base


_DATA_TYPES = dict(num_epochs=int, min_scale=float, num_threads=int, prefetch=int, photos=tuple, eval_fraction=float,
                   max_skip=int, split=str, eval_split=str, path=str, eval_path=str, name=str, data_dir=str,
                   image_key=str, label_key=str, name_key=str, source=str, shuffle=bool, flip=bool)  # fmt: skip


def data_config(**overrides) -> ml_collections.ConfigDict:
    """Every key of ``titok_jax.data`` (documented there), typed so ``--config.data.<key>=`` works."""
    from titok_jax.data.config import DEFAULTS

    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown data config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    d = ml_collections.ConfigDict()
    for k, default in DEFAULTS.items():
        v = overrides.get(k, default)
        d[k] = ml_collections.config_dict.placeholder(_DATA_TYPES[k]) if v is None else v
    return d


def training_config(name: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
    """Model preset + the full training recipe (stages, data, optimiser, losses, mesh, logging)."""
    config = tokenizer_config(name, arg)
    model = MODELS[name]
    legacy = isinstance(model, TiTokConfig) and model.is_legacy
    if legacy:
        config.stages = ("stage1", "stage2") if config.model.finetune_decoder else ("stage1",)
    else:
        config.stages = ("single_stage",)
    config.mesh = (-1, 1)  # (data, fsdp); -1 = all remaining devices
    config.remat = False
    config.data = data_config(source="tfds", name="imagenet2012", split="train", eval_split="validation")
    config.eval = ml_collections.ConfigDict(dict(batch_size=8))
    config.teacher = ml_collections.ConfigDict(dict(checkpoint="", model=VQGANConfig().to_dict()))
    config.discriminator = ml_collections.ConfigDict({})
    config.stage1 = ml_collections.ConfigDict(dict(name="stage1", quantizer_weight=1.0, **_optim()))
    config.stage2 = ml_collections.ConfigDict(
        dict(name="stage2", init_from="", **_optim(num_steps=500_000, warmup_steps=5_000, b2=0.999), **_pixel_losses())
    )
    config.single_stage = ml_collections.ConfigDict(
        dict(name="single_stage", quantizer_weight=1.0, **_optim(num_steps=500_000, warmup_steps=5_000, b2=0.999),
             **_pixel_losses())
    )  # fmt: skip
    config.teacher_train = ml_collections.ConfigDict(
        dict(name="teacher", quantizer_weight=1.0, commitment_cost=0.25,
             **_optim(num_steps=500_000, warmup_steps=5_000, b2=0.999), **_pixel_losses())
    )  # fmt: skip
    _after_tokenizer_sections(config, name)
    return config


def _after_tokenizer_sections(config: ml_collections.ConfigDict, name: str) -> None:
    """Sections of the steps that use a trained tokenizer: pretokenize, generator, sample, evaluate,
    linear_probe (each documented in its module)."""
    from titok_jax import evaluate, linear_probe, pretokenize, sample
    from titok_jax.train import generator_stage

    config.pretokenize = ml_collections.ConfigDict(pretokenize.default_section())
    if name in GENERATORS:
        config.generator = generator_section(name)
        config.generator_train = ml_collections.ConfigDict(generator_stage.default_section())
        config.sample = ml_collections.ConfigDict(sample.default_section())
    config.evaluate = ml_collections.ConfigDict(evaluate.default_section())
    config.linear_probe = ml_collections.ConfigDict(linear_probe.default_section())


# ----------------------------------------------------------------------------------------------
# MaskGIT generators (official_titok.md section 7) and their sampling settings, per tokenizer preset.
# ``generator_section(name)`` is what a training config carries as ``config.generator``.

_BERT_B = dict(model_type="ViT", hidden_size=768, num_hidden_layers=24, num_attention_heads=16, intermediate_size=3072)
_TINY_GEN = dict(model_type="ViT", hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                 condition_num_classes=10)  # fmt: skip

# Official sizes: 1d-tokenizer configs/infer/TiTok/*.yaml (model.generator); K = the tokenizer's codebook.
GENERATORS: Dict[str, GeneratorConfig] = {
    "titok_s128": GeneratorConfig(
        model_type="UViT",
        hidden_size=1024,
        num_hidden_layers=20,
        num_attention_heads=16,
        intermediate_size=4096,
        image_seq_len=128,
        codebook_size=4096,
    ),  # fmt: skip
    "titok_b64": GeneratorConfig(image_seq_len=64, codebook_size=4096, **_BERT_B),
    "titok_l32": GeneratorConfig(image_seq_len=32, codebook_size=4096, **_BERT_B),
    # Tiny generators for the tiny tokenizers (CPU tests, demo): 8 tokens, 10 classes.
    "titok_tiny": GeneratorConfig(image_seq_len=8, codebook_size=64, **_TINY_GEN),
    "titok_tiny_vq": GeneratorConfig(image_seq_len=8, codebook_size=256, **_TINY_GEN),
}

# Official inference settings (section 7.6) for the released models; the tiny models use the training
# config's preview settings (constant guidance 4.5, temperature 1.0, 8 steps).
_TINY_SAMPLING = SamplingConfig(num_steps=8, guidance_scale=4.5, guidance_decay="constant", guidance_scale_pow=3.0,
                                randomize_temperature=1.0, softmax_temperature_annealing=False)  # fmt: skip
SAMPLING: Dict[str, SamplingConfig] = {
    "titok_s128": SamplingConfig.official("titok_s128"),
    "titok_b64": SamplingConfig.official("titok_b64"),
    "titok_l32": SamplingConfig.official("titok_l32"),
    "titok_tiny": _TINY_SAMPLING,
    "titok_tiny_vq": _TINY_SAMPLING,
}


def generator_section(name: str) -> ml_collections.ConfigDict:
    """``config.generator`` for tokenizer preset ``name``: ``model`` (GeneratorConfig fields) and
    ``sampling`` (SamplingConfig fields)."""
    base = name.split(":")[0]
    if base not in GENERATORS:
        raise ValueError(f"no generator preset for {name!r}; generator presets: {sorted(GENERATORS)}")
    return ml_collections.ConfigDict(
        {"model": GENERATORS[base].to_dict(), "sampling": SAMPLING.get(base, _TINY_SAMPLING).to_dict()}
    )
