"""Name map of TiTok: titok_jax params <-> the official PyTorch ``TiTok`` state_dict.

Key names and shapes: official_titok.md section 4.1 (legacy VQ) and 4.5 (non-legacy VQ / VAE);
checked against ``tests/fixtures/official/manifests/titok_*.json`` by the tests.
"""

from __future__ import annotations

from typing import List, Tuple

from titok_jax.config.models import TiTokConfig
from titok_jax.models.maskgit_vqgan_map import decoder_rules as vqgan_decoder_rules
from titok_jax.porting.mapping import NameMap, Rule


def _ln(torch_prefix: str, path: Tuple[str, ...]) -> List[Rule]:
    return [Rule(f"{torch_prefix}.weight", path + ("scale",)), Rule(f"{torch_prefix}.bias", path + ("bias",))]


def _dense(torch_prefix: str, path: Tuple[str, ...], transform: str = "linear") -> List[Rule]:
    return [
        Rule(f"{torch_prefix}.weight", path + ("kernel",), transform),
        Rule(f"{torch_prefix}.bias", path + ("bias",)),
    ]


def block_rules(torch_prefix: str, path: Tuple[str, ...]) -> List[Rule]:
    """One ResidualAttentionBlock: 12 tensors (nn.MultiheadAttention packs q/k/v into in_proj)."""
    return (
        _ln(f"{torch_prefix}.ln_1", path + ("ln_1",))
        + [
            Rule(f"{torch_prefix}.attn.in_proj_weight", path + ("attn", "in_proj", "kernel"), "linear"),
            Rule(f"{torch_prefix}.attn.in_proj_bias", path + ("attn", "in_proj", "bias")),
        ]
        + _dense(f"{torch_prefix}.attn.out_proj", path + ("attn", "out_proj"))
        + _ln(f"{torch_prefix}.ln_2", path + ("ln_2",))
        + _dense(f"{torch_prefix}.mlp.c_fc", path + ("mlp", "c_fc"))
        + _dense(f"{torch_prefix}.mlp.c_proj", path + ("mlp", "c_proj"))
    )


def _vit_common(side: str, depth: int) -> List[Rule]:
    p = (side,)
    rules = [
        Rule(f"{side}.class_embedding", p + ("class_embedding",)),
        Rule(f"{side}.positional_embedding", p + ("positional_embedding",)),
    ]
    if side == "decoder":
        rules.append(Rule("decoder.mask_token", p + ("mask_token",)))
    rules.append(Rule(f"{side}.latent_token_positional_embedding", p + ("latent_token_positional_embedding",)))
    if side == "encoder":
        rules += _dense("encoder.patch_embed", p + ("patch_embed",), "conv")
    else:
        rules += _dense("decoder.decoder_embed", p + ("decoder_embed",))
    rules += _ln(f"{side}.ln_pre", p + ("ln_pre",))
    for i in range(depth):
        rules += block_rules(f"{side}.transformer.{i}", p + ("transformer", f"transformer_{i}"))
    rules += _ln(f"{side}.ln_post", p + ("ln_post",))
    return rules


def torch_name_map(c: TiTokConfig) -> NameMap:
    """titok_jax ``TiTok`` params <-> official ``modeling.titok.TiTok`` state_dict (strict)."""
    rules = [Rule("latent_tokens", ("latent_tokens",))]
    rules += _vit_common("encoder", c.encoder_vit[1])
    rules += _dense("encoder.conv_out", ("encoder", "conv_out"), "conv1x1_dense")
    rules += _vit_common("decoder", c.decoder_vit[1])
    if c.is_legacy:
        rules += _dense("decoder.ffn.0", ("decoder", "ffn_0"), "conv1x1_dense")
        rules += _dense("decoder.ffn.2", ("decoder", "ffn_2"), "conv1x1_dense")
    else:
        rules += _dense("decoder.ffn.0", ("decoder", "ffn"), "conv1x1_dense")
        rules += _dense("decoder.conv_out", ("decoder", "conv_out"), "conv")
    if c.quantize_mode == "vq":
        rules.append(Rule("quantize.embedding.weight", ("quantize", "embedding")))
    if c.finetune_decoder:
        rules.append(Rule("pixel_quantize.embedding.weight", ("pixel_quantize", "embedding")))
        rules += vqgan_decoder_rules(c.pixel_decoder, "pixel_decoder", ("pixel_decoder",))
    return NameMap(f"TiTok ({'legacy' if c.is_legacy else 'non-legacy'} {c.quantize_mode})", rules)
