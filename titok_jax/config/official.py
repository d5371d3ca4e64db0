"""The official config dicts (1d-tokenizer yamls; the ``config.json`` of a hub folder) <-> typed configs.

``TiTok.from_pretrained(folder)`` and ``ImageBert/UViTBert.from_pretrained(folder)`` of the official
code read ``config.json`` (the dict passed to ``TiTok(config)``): ``model.vq_model`` for a tokenizer,
``model.generator`` (+ ``model.vq_model.codebook_size``) for a generator, and
``dataset.preprocessing.crop_size``. These functions write and read that dict.

Models the official classes cannot build (custom widths, e.g. the tiny test models; the MaskGIT-VQGAN)
are described in a ``config.json`` by a ``titok_jax`` key instead (``custom_config``).
``run_from_hub_configs`` turns the ``config.json`` of a tokenizer (and of a generator) into a
``RunConfig``: how ``from_pretrained`` and the command lines know the model without ``--config``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

from titok_jax.config import presets
from titok_jax.config.models import GeneratorConfig, SamplingConfig, TiTokConfig, VQGANConfig
from titok_jax.config.run import MODEL_KINDS, RunConfig
from titok_jax.config.sections import GeneratorSection
from titok_jax.errors import ConfigError

# The key of a config.json that describes a model in titok_jax's own terms (``custom_config``).
TITOK_JAX_KEY = "titok_jax"

_GENERATOR_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "dropout",
    "attn_drop",
    "class_label_dropout",
    "image_seq_len",
    "condition_num_classes",
)
# Sampling settings as the official yaml names them (guidance_scale_pow and softmax annealing are not
# in the yaml: the official sampling script passes them as arguments).
_SAMPLING_KEYS = {
    "num_steps": "num_steps",
    "guidance_scale": "guidance_scale",
    "guidance_decay": "guidance_decay",
    "randomize_temperature": "randomize_temperature",
}


def tokenizer_to_official(c: TiTokConfig) -> Dict[str, Any]:
    """The config dict the official ``TiTok(config)`` expects (standard sizes only)."""
    if not c.is_standard_size:
        raise ConfigError(
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


def tokenizer_from_official(d: Dict[str, Any]) -> TiTokConfig:
    """Inverse of ``tokenizer_to_official`` (reads an official yaml / config.json dict)."""
    try:
        vq = dict(d["model"]["vq_model"])
        kw = dict(
            encoder_size=vq["vit_enc_model_size"],
            decoder_size=vq["vit_dec_model_size"],
            num_latent_tokens=vq["num_latent_tokens"],
            token_size=vq["token_size"],
        )
    except (KeyError, TypeError) as e:
        raise ConfigError(f"an official TiTok config needs model.vq_model with {e}") from None
    crop = (d.get("dataset") or {}).get("preprocessing", {}).get("crop_size", 256)
    mode = vq.get("quantize_mode", "vq")
    kw.update(
        image_size=crop,
        patch_size=vq.get("vit_enc_patch_size", 16),
        decoder_patch_size=vq.get("vit_dec_patch_size", 16),
        quantize_mode=mode,
        is_legacy=vq.get("is_legacy", True),
        finetune_decoder=vq.get("finetune_decoder", True),
    )
    if mode == "vq":
        if "codebook_size" not in vq:
            raise ConfigError("an official VQ TiTok config needs model.vq_model.codebook_size")
        kw.update(
            codebook_size=vq["codebook_size"],
            use_l2_norm=vq.get("use_l2_norm", False),
            commitment_cost=vq.get("commitment_cost", 0.25),
        )
    return TiTokConfig(**kw)


def generator_to_official(
    gen: GeneratorConfig,
    tok: Optional[TiTokConfig] = None,
    sampling: Optional[SamplingConfig] = None,
    image_size: Optional[int] = None,
) -> dict:
    """The official config dict for ``ImageBert(config)`` / ``UViTBert(config)``.

    ``model.generator`` holds the generator fields (plus the sampling settings, when given, as the
    official inference yamls do); ``model.vq_model`` the tokenizer's (the official generator reads only
    its ``codebook_size``, so without ``tok`` just ``codebook_size`` and ``num_latent_tokens`` are written).
    """
    g = {k: getattr(gen, k) for k in _GENERATOR_KEYS}
    if sampling is not None:
        g.update({theirs: getattr(sampling, ours) for ours, theirs in _SAMPLING_KEYS.items()})
    if tok is not None:
        if (tok.codebook_size, tok.num_latent_tokens) != (gen.codebook_size, gen.image_seq_len):
            raise ConfigError(
                f"generator (codebook {gen.codebook_size}, {gen.image_seq_len} tokens) does not fit the tokenizer "
                f"(codebook {tok.codebook_size}, {tok.num_latent_tokens} tokens)"
            )
        if tok.is_standard_size:
            out = tokenizer_to_official(tok)
        else:  # custom (tiny) tokenizer sizes: the fields the generator needs
            out = {
                "model": {
                    "vq_model": {
                        "codebook_size": tok.codebook_size,
                        "num_latent_tokens": tok.num_latent_tokens,
                        "token_size": tok.token_size,
                    }
                },
                "dataset": {"preprocessing": {"crop_size": tok.image_size}},
            }
    else:
        out = {"model": {"vq_model": {"codebook_size": gen.codebook_size, "num_latent_tokens": gen.image_seq_len}}}
        if image_size:
            out["dataset"] = {"preprocessing": {"crop_size": int(image_size)}}
    out["model"]["generator"] = g
    return out


def generator_from_official(d: Dict[str, Any]) -> GeneratorConfig:
    """Inverse of ``generator_to_official``: reads an official yaml / config.json dict."""
    try:
        g = dict(d["model"]["generator"])
        codebook = int(d["model"]["vq_model"]["codebook_size"])
    except (KeyError, TypeError):
        raise ConfigError(
            "an official generator config needs model.generator and model.vq_model.codebook_size sections"
        ) from None
    missing = [
        k
        for k in (
            "model_type",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "image_seq_len",
        )
        if k not in g
    ]
    if missing:
        raise ConfigError(f"the official generator config lacks model.generator keys {missing}")
    kw = {k: g[k] for k in _GENERATOR_KEYS if k in g}
    return GeneratorConfig(codebook_size=codebook, **kw)


def sampling_from_official(d: Dict[str, Any]) -> Dict[str, Any]:
    """The sampling settings an official config carries (``model.generator``), as SamplingConfig fields."""
    g = d.get("model", {}).get("generator", {}) if isinstance(d, dict) else {}
    return {ours: g[theirs] for ours, theirs in _SAMPLING_KEYS.items() if theirs in g}


# ---------------------------------------------------------------------------------------------- hub configs
def custom_config(kind: str, model, image_size: int) -> Dict[str, Any]:
    """A ``config.json`` for a model the official classes cannot build: ``{"titok_jax": {...}}``."""
    return {TITOK_JAX_KEY: {"model_kind": kind, "model": model.to_dict(), "image_size": int(image_size)}}


def is_generator_config(d: Any) -> bool:
    return isinstance(d, dict) and isinstance(d.get("model"), dict) and "generator" in d["model"]


def tokenizer_from_hub_config(d: Dict[str, Any]) -> Tuple[str, Union[TiTokConfig, VQGANConfig], int]:
    """(model_kind, model config, image size) of a tokenizer ``config.json``: the ``titok_jax`` key
    (``custom_config``) or the official ``model.vq_model`` dict."""
    if not isinstance(d, dict):
        raise ConfigError(f"a config.json must hold a JSON object, got {type(d).__name__}")
    if TITOK_JAX_KEY in d:
        t = d[TITOK_JAX_KEY]
        kind = t.get("model_kind", "titok") if isinstance(t, dict) else None
        if kind not in MODEL_KINDS:
            raise ConfigError(f"config.json: {TITOK_JAX_KEY}.model_kind must be one of {sorted(MODEL_KINDS)}")
        model = MODEL_KINDS[kind].from_dict(t.get("model", {}), where=f"{TITOK_JAX_KEY}.model")
        size = int(t.get("image_size", model.image_size if kind == "titok" else 256))
        return kind, model, size
    model = tokenizer_from_official(d)
    return "titok", model, model.image_size


def preset_name(model) -> str:
    """The preset whose model config equals ``model`` ('' when none does)."""
    return next((name for name, m in presets.MODELS.items() if m == model), "")


def run_from_hub_configs(tokenizer: Optional[Dict[str, Any]] = None, generator: Optional[Dict[str, Any]] = None,
                         dtype: str = "float32") -> RunConfig:  # fmt: skip
    """A model-only ``RunConfig`` from the ``config.json`` of a tokenizer and/or a generator.

    The tokenizer comes from ``tokenizer`` (else from the generator's ``model.vq_model``, else from the
    preset whose generator matches); the generator from ``generator`` (sampling settings: the matching
    preset's official inference settings, updated by those the config.json carries), else the preset's
    generator when the tokenizer is a preset model. The name is the matching preset's (``titok_l32``),
    else ``custom``."""
    if tokenizer is None and generator is None:
        raise ConfigError("run_from_hub_configs needs the config.json of a tokenizer or of a generator")
    gen = generator_from_official(generator) if generator is not None else None
    if tokenizer is not None:
        kind, model, size = tokenizer_from_hub_config(tokenizer)
    else:
        try:
            kind, model, size = tokenizer_from_hub_config(generator)
        except ConfigError:
            names = [n for n, g in presets.GENERATORS.items() if g == gen]
            if not names:
                raise ConfigError(
                    "the generator's config.json does not describe its tokenizer and matches no preset generator: "
                    "give the tokenizer too (its config.json or --config)"
                ) from None
            kind, model, size = "titok", presets.MODELS[names[0]], presets.MODELS[names[0]].image_size
    name = preset_name(model)
    section = None
    if gen is not None:
        base = presets.SAMPLING.get(name, SamplingConfig()).to_dict()
        base.update(sampling_from_official(generator))
        section = GeneratorSection(model=gen, sampling=SamplingConfig.from_dict(base, where="sampling settings"))
    d = {"model_name": name or "custom", "model_kind": kind, "model": model, "image_size": size, "dtype": dtype}
    run = RunConfig.from_dict(d)
    return run.replace(generator=section) if section is not None else run
