"""Named model sizes and the ``ml_collections`` configs built from them.

Every ``configs/<model>.py`` is ``get_config(arg) -> presets.training_config(<model>, arg)`` (or
``tokenizer_config`` for a model-only file), so the same sizes are available from Python
(``MODELS``, ``GENERATORS``, ``SAMPLING``) and from the command line.

``arg`` (the text after ``:`` in ``--config=configs/titok_b64.py:stage1,dtype=bfloat16``) is a comma
separated list of flags and ``key=value`` pairs:

* ``stage1``: the proxy-code model without the VQGAN pixel decoder (``finetune_decoder=False``);
* ``dtype=bfloat16``: compute dtype (parameters stay float32);
* ``seed=N``;
* ``mask_schedule=cosine`` (training configs of models with a generator): the generator's masking
  schedule, for its training masks and the sampler's re-masking (the paper's ablation; default arccos).

The sections' keys and defaults are the typed dataclasses of ``titok_jax.config.sections``: a
ConfigDict section is made from a dataclass instance (``as_config_dict``), so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Optional, Union

import ml_collections

from titok_jax.config.base import ConfigMixin
from titok_jax.config.models import MASK_SCHEDULES, GeneratorConfig, SamplingConfig, TiTokConfig, VQGANConfig
from titok_jax.config.sections import (
    DataConfig,
    EvalConfig,
    EvaluateConfig,
    GeneratorSection,
    GeneratorTrainConfig,
    LinearProbeConfig,
    PretokenizeConfig,
    SampleConfig,
    SingleStageConfig,
    Stage1Config,
    Stage2Config,
    TeacherConfig,
    TeacherTrainConfig,
)
from titok_jax.errors import ConfigError

_LEGACY = dict(token_size=12, codebook_size=4096, use_l2_norm=True, is_legacy=True, finetune_decoder=True)
_VQ8K = dict(token_size=64, codebook_size=8192, use_l2_norm=False, is_legacy=False, finetune_decoder=False)
_VAE = dict(token_size=16, quantize_mode="vae", is_legacy=False, finetune_decoder=False)
_AT_512 = dict(image_size=512, patch_size=32, decoder_patch_size=16, **_LEGACY)
_TINY_VQGAN = VQGANConfig(hidden_channels=32, channel_mult=(1, 1, 1, 2, 2), z_channels=32)
_TINY_VQGAN_512 = VQGANConfig(hidden_channels=8, channel_mult=(1, 1, 1, 2, 2), num_res_blocks=1, z_channels=16,
                              codebook_size=64, num_groups=4)  # fmt: skip

# name -> model config. Official sizes: 1d-tokenizer configs/infer/TiTok/*.yaml.
MODELS: Dict[str, Union[TiTokConfig, VQGANConfig]] = {
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
    # ImageNet 512x512 (the paper's 512 models; no official configs or weights): configs/titok_l64_512.py and
    # configs/titok_b128_512.py say what the paper states and what is inferred. Encoder patch 32 (16x16
    # patches, as at 256 px); decoder patch 16: a 32x32 mask-token grid = the 512-px teacher's proxy codes.
    "titok_l64_512": TiTokConfig(encoder_size="large", decoder_size="large", num_latent_tokens=64, **_AT_512),
    "titok_b128_512": TiTokConfig(encoder_size="base", decoder_size="base", num_latent_tokens=128, **_AT_512),
    # The released MaskGIT-VQGAN at 512 px (tokenizer_imagenet512_checkpoint): the 256 architecture.
    "maskgit_vqgan_512": VQGANConfig(),
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
        pixel_decoder=_TINY_VQGAN,
    ),  # fmt: skip
    "maskgit_vqgan_tiny": _TINY_VQGAN,
    # Tiny 512-px TiTok (CPU tests of the 512 pipeline): the 512 layout (encoder patch 32, 32x32 decoder
    # grid) at tiny widths, with a 5-level (f16) VQGAN narrow enough that 512x512 convolutions stay cheap.
    "titok_tiny_512": TiTokConfig(
        image_size=512,
        encoder_size="small",
        decoder_size="small",
        encoder_width=32,
        encoder_depth=1,
        encoder_heads=2,
        decoder_width=32,
        decoder_depth=1,
        decoder_heads=2,
        patch_size=32,
        decoder_patch_size=16,
        num_latent_tokens=8,
        token_size=12,
        codebook_size=64,
        use_l2_norm=True,
        is_legacy=True,
        finetune_decoder=True,
        proxy_codebook_size=_TINY_VQGAN_512.codebook_size,
        pixel_decoder=_TINY_VQGAN_512,
    ),  # fmt: skip
    "maskgit_vqgan_tiny_512": _TINY_VQGAN_512,
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

# Image size of the VQGAN presets (a TiTok config carries its own).
IMAGE_SIZES = {"maskgit_vqgan": 256, "maskgit_vqgan_tiny": 64, "maskgit_vqgan_512": 512, "maskgit_vqgan_tiny_512": 512}

# MaskGIT generators (official_titok.md section 7), per tokenizer preset. Official sizes: 1d-tokenizer
# configs/infer/TiTok/*.yaml (model.generator); K = the tokenizer's codebook.
_BERT_B = dict(model_type="ViT", hidden_size=768, num_hidden_layers=24, num_attention_heads=16, intermediate_size=3072)
_TINY_GEN = dict(model_type="ViT", hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                 condition_num_classes=10)  # fmt: skip
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
    # 512 px: the paper's 177M MaskGIT generator (the ViT of L-32/B-64) for both.
    "titok_l64_512": GeneratorConfig(image_seq_len=64, codebook_size=4096, **_BERT_B),
    "titok_b128_512": GeneratorConfig(image_seq_len=128, codebook_size=4096, **_BERT_B),
    # Tiny generators for the tiny tokenizers (CPU tests, demo): 8 tokens, 10 classes.
    "titok_tiny": GeneratorConfig(image_seq_len=8, codebook_size=64, **_TINY_GEN),
    "titok_tiny_vq": GeneratorConfig(image_seq_len=8, codebook_size=256, **_TINY_GEN),
    "titok_tiny_512": GeneratorConfig(image_seq_len=8, codebook_size=64, **_TINY_GEN),
}

# Official inference settings (section 7.6) of the released models; the tiny models use the training
# config's preview settings (constant guidance 4.5, temperature 1.0, 8 steps: ``SamplingConfig()``).
SAMPLING: Dict[str, SamplingConfig] = {
    "titok_s128": SamplingConfig.official("titok_s128"),
    "titok_b64": SamplingConfig.official("titok_b64"),
    "titok_l32": SamplingConfig.official("titok_l32"),
    # 512 px: no published settings; inferred from the 256-px model with the same sequence length
    # (L-64: B-64's 8 steps; B-128: S-128's 64 steps), to be tuned (see the config docstrings).
    "titok_l64_512": SamplingConfig.official("titok_b64"),
    "titok_b128_512": SamplingConfig.official("titok_s128"),
    "titok_tiny": SamplingConfig(),
    "titok_tiny_vq": SamplingConfig(),
    "titok_tiny_512": SamplingConfig(),
}


# ---------------------------------------------------------------------------------------------- ConfigDicts
def _placeholder_type(hint) -> Optional[type]:
    """The base type of an ``Optional[X]`` hint, for an ml_collections placeholder."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if len(args) == 1 else hint
    origin = typing.get_origin(base) or base
    return origin if isinstance(origin, type) else None


def as_config_dict(obj: ConfigMixin) -> ml_collections.ConfigDict:
    """A typed section -> ConfigDict with the same keys and values; ``None`` fields become typed
    placeholders so that ``--config.<section>.<key>=value`` can set them."""
    hints = typing.get_type_hints(type(obj))
    out = ml_collections.ConfigDict()
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, ConfigMixin):
            out[f.name] = as_config_dict(v)
        elif v is None:
            out[f.name] = ml_collections.config_dict.placeholder(_placeholder_type(hints[f.name]))
        elif isinstance(v, dict):
            out[f.name] = ml_collections.ConfigDict(v)
        else:
            out[f.name] = v
    return out


def parse_arg(arg: Optional[str], **defaults) -> Dict[str, Any]:
    """``"stage1,dtype=bfloat16"`` -> {'stage1': True, 'dtype': 'bfloat16', ...defaults}."""
    out = dict(defaults)
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        if "=" in item:
            k, v = item.split("=", 1)
            if k not in out:
                raise ConfigError(f"unknown config argument {k!r}; known: {sorted(out)}")
            try:
                out[k] = type(out[k])(v) if out[k] is not None and not isinstance(out[k], bool) else v
            except ValueError:
                raise ConfigError(f"config argument {k}={v!r} must be a {type(out[k]).__name__}") from None
        else:
            if item not in out or not isinstance(out[item], bool):
                known = sorted(k for k, v in out.items() if isinstance(v, bool))
                raise ConfigError(f"unknown config flag {item!r}; known flags: {known}")
            out[item] = True
    return out


def model_kind(model_config) -> str:
    if isinstance(model_config, TiTokConfig):
        return "titok"
    if isinstance(model_config, VQGANConfig):
        return "maskgit_vqgan"
    raise ConfigError(f"unknown model config type {type(model_config).__name__}")


_TOKENIZER_ARGS = dict(stage1=False, dtype="float32", seed=0)


def tokenizer_config(name: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
    """The model-only config of preset ``name`` (what ``port`` / ``reconstruct`` need)."""
    return _tokenizer_config(name, parse_arg(arg, **_TOKENIZER_ARGS))


def _tokenizer_config(name: str, a: Dict[str, Any]) -> ml_collections.ConfigDict:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; presets: {sorted(MODELS)}")
    model = MODELS[name]
    kind = model_kind(model)
    if a["stage1"]:
        if kind != "titok" or not model.is_legacy:
            raise ConfigError("':stage1' applies to the legacy TiTok models (titok_s128/b64/l32/tiny) only")
        model = dataclasses.replace(model, finetune_decoder=False)
    if a["dtype"] not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype must be float32 or bfloat16, got {a['dtype']!r}")
    config = ml_collections.ConfigDict()
    config.model_name = name + (":stage1" if a["stage1"] else "")
    config.model_kind = kind
    config.model = as_config_dict(model)
    config.image_size = model.image_size if kind == "titok" else IMAGE_SIZES.get(name, 256)
    config.dtype = a["dtype"]
    config.seed = a["seed"]
    return config


def data_config(**overrides) -> ml_collections.ConfigDict:
    """The ``data`` section (keys: ``titok_jax.config.sections.DataConfig``) with ``overrides``."""
    return as_config_dict(DataConfig.from_dict(overrides, where="data"))


def generator_section(name: str) -> ml_collections.ConfigDict:
    """``config.generator`` for tokenizer preset ``name``: ``model`` (GeneratorConfig fields) and
    ``sampling`` (SamplingConfig fields)."""
    base = name.split(":")[0]
    if base not in GENERATORS:
        raise ConfigError(f"no generator preset for {name!r}; generator presets: {sorted(GENERATORS)}")
    return as_config_dict(GeneratorSection(model=GENERATORS[base], sampling=SAMPLING.get(base, SamplingConfig())))


def training_config(name: str, arg: Optional[str] = None) -> ml_collections.ConfigDict:
    """Model preset + the full training recipe (stages, data, optimiser, losses, mesh, logging) and the
    sections of the steps after the tokenizer (pretokenize, generator, sample, evaluate, linear_probe)."""
    a = parse_arg(arg, mask_schedule="", **_TOKENIZER_ARGS)
    config = _tokenizer_config(name, a)
    model = MODELS[name]
    legacy = isinstance(model, TiTokConfig) and model.is_legacy
    if legacy:
        config.stages = ("stage1", "stage2") if config.model.finetune_decoder else ("stage1",)
    else:
        config.stages = ("single_stage",)
    config.mesh = (-1, 1)  # (data, fsdp); -1 = all remaining devices
    config.remat = False
    config.data = data_config(source="tfds", name="imagenet2012", split="train", eval_split="validation")
    config.eval = as_config_dict(EvalConfig())
    config.teacher = as_config_dict(TeacherConfig())
    config.discriminator = ml_collections.ConfigDict({})
    config.teacher_train = as_config_dict(TeacherTrainConfig())
    config.stage1 = as_config_dict(Stage1Config())
    config.stage2 = as_config_dict(Stage2Config())
    config.single_stage = as_config_dict(SingleStageConfig())
    config.pretokenize = as_config_dict(PretokenizeConfig())
    if name in GENERATORS:
        config.generator = generator_section(name)
        config.generator_train = as_config_dict(GeneratorTrainConfig())
        config.sample = as_config_dict(SampleConfig())
    if a["mask_schedule"]:
        set_mask_schedule(config, a["mask_schedule"])
    config.evaluate = as_config_dict(EvaluateConfig())
    config.linear_probe = as_config_dict(LinearProbeConfig())
    return config


def set_mask_schedule(config: ml_collections.ConfigDict, schedule: str) -> ml_collections.ConfigDict:
    """One schedule for the generator's training masks, its in-training previews and the sampler's
    re-masking (``configs/<model>.py:mask_schedule=<schedule>``, the paper's ablation)."""
    if schedule not in MASK_SCHEDULES:
        raise ConfigError(f"mask_schedule must be one of {MASK_SCHEDULES}, got {schedule!r}")
    if "generator" not in config:
        raise ConfigError(f"{config.model_name} has no generator; mask_schedule applies to the generator presets "
                          f"{sorted(GENERATORS)}")  # fmt: skip
    config.generator_train.mask_schedule = schedule
    config.generator_train.preview_sampling.mask_schedule = schedule
    config.generator.sampling.mask_schedule = schedule
    return config
