"""The official config dicts (1d-tokenizer yamls; the ``config.json`` of a hub folder) <-> typed configs.

``TiTok.from_pretrained(folder)`` and ``ImageBert/UViTBert.from_pretrained(folder)`` of the official
code read ``config.json`` (the dict passed to ``TiTok(config)``): ``model.vq_model`` for a tokenizer,
``model.generator`` (+ ``model.vq_model.codebook_size``) for a generator, and
``dataset.preprocessing.crop_size``. These functions write and read that dict.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from titok_jax.config.models import GeneratorConfig, SamplingConfig, TiTokConfig
from titok_jax.errors import ConfigError

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
