"""Name maps of the MaskGIT generators: titok_jax params <-> official PyTorch state_dicts, and the
official config dict (``config.json`` of a hub folder) <-> ``GeneratorConfig``.

Keys, shapes and order: official_titok.md section 4.3, checked against
``shared/fixtures/official/manifests/generator_titok_{s128,b64,l32}.json`` by the tests.

* ImageBert: the HF ``BertModel`` lives under ``model.`` with the LM head attached as
  ``model.lm_head``; transformers versions that stored the ``model.embeddings.position_ids`` buffer
  (and ``token_type_ids``) produce checkpoints with those extra integer tensors: they are ignored on
  import and never exported.
* UViTBert: ``pos_embed`` first, then ``embeddings``, ``in_blocks.{i}``, ``mid_block``,
  ``out_blocks.{i}`` (with ``skip_linear`` last in each), ``norm``, ``lm_head``.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from titok_jax.models.generator import GeneratorConfig
from titok_jax.porting.mapping import NameMap, Rule

BERT_BUFFERS = (r"model\.embeddings\.position_ids", r"model\.embeddings\.token_type_ids")


def _ln(torch_prefix: str, path: Tuple[str, ...]) -> List[Rule]:
    return [Rule(f"{torch_prefix}.weight", path + ("scale",)), Rule(f"{torch_prefix}.bias", path + ("bias",))]


def _dense(torch_prefix: str, path: Tuple[str, ...], bias: bool = True) -> List[Rule]:
    rules = [Rule(f"{torch_prefix}.weight", path + ("kernel",), "linear")]
    if bias:
        rules.append(Rule(f"{torch_prefix}.bias", path + ("bias",)))
    return rules


def _bert_layer(i: int) -> List[Rule]:
    t, p = f"model.encoder.layer.{i}", (f"layer_{i}",)
    return (
        _dense(f"{t}.attention.self.query", p + ("query",))
        + _dense(f"{t}.attention.self.key", p + ("key",))
        + _dense(f"{t}.attention.self.value", p + ("value",))
        + _dense(f"{t}.attention.output.dense", p + ("attention_output",))
        + _ln(f"{t}.attention.output.LayerNorm", p + ("attention_ln",))
        + _dense(f"{t}.intermediate.dense", p + ("intermediate",))
        + _dense(f"{t}.output.dense", p + ("output",))
        + _ln(f"{t}.output.LayerNorm", p + ("output_ln",))
    )


def _uvit_block(torch_prefix: str, path: Tuple[str, ...], skip: bool) -> List[Rule]:
    rules = (
        _ln(f"{torch_prefix}.norm1", path + ("norm1",))
        + _dense(f"{torch_prefix}.attn.qkv", path + ("attn", "qkv"), bias=False)
        + _dense(f"{torch_prefix}.attn.proj", path + ("attn", "proj"))
        + _ln(f"{torch_prefix}.norm2", path + ("norm2",))
        + _dense(f"{torch_prefix}.mlp.fc1", path + ("mlp", "fc1"))
        + _dense(f"{torch_prefix}.mlp.fc2", path + ("mlp", "fc2"))
    )
    if skip:
        rules += _dense(f"{torch_prefix}.skip_linear", path + ("skip_linear",))
    return rules


def torch_name_map(c: GeneratorConfig) -> NameMap:
    """titok_jax generator params <-> official ``ImageBert`` / ``UViTBert`` state_dict (strict, ordered)."""
    if c.model_type == "ViT":
        rules = [
            Rule("model.embeddings.word_embeddings.weight", ("word_embeddings", "embedding")),
            Rule("model.embeddings.position_embeddings.weight", ("position_embeddings", "embedding")),
            Rule("model.embeddings.token_type_embeddings.weight", ("token_type_embeddings", "embedding")),
        ]
        rules += _ln("model.embeddings.LayerNorm", ("embeddings_ln",))
        for i in range(c.num_hidden_layers):
            rules += _bert_layer(i)
        rules += _dense("model.lm_head", ("lm_head",))
        return NameMap("ImageBert generator", rules, ignore=BERT_BUFFERS)
    rules = [Rule("pos_embed", ("pos_embed",)), Rule("embeddings.weight", ("embeddings", "embedding"))]
    half = c.num_hidden_layers // 2
    for i in range(half):
        rules += _uvit_block(f"in_blocks.{i}", (f"in_blocks_{i}",), skip=False)
    rules += _uvit_block("mid_block", ("mid_block",), skip=False)
    for i in range(half):
        rules += _uvit_block(f"out_blocks.{i}", (f"out_blocks_{i}",), skip=True)
    rules += _ln("norm", ("norm",)) + _dense("lm_head", ("lm_head",))
    return NameMap("UViTBert generator", rules)


# -------------------------------------------------------------------------------------------------
# Official config dict (1d-tokenizer configs/infer/TiTok/*.yaml; config.json of a hub folder)
_GENERATOR_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                   "dropout", "attn_drop", "class_label_dropout", "image_seq_len", "condition_num_classes")  # fmt: skip
# Sampling settings as the official yaml names them (guidance_scale_pow and softmax annealing are not
# in the yaml: the official sampling script passes them as arguments).
_SAMPLING_KEYS = {"num_steps": "num_steps", "guidance_scale": "guidance_scale", "guidance_decay": "guidance_decay",
                  "randomize_temperature": "randomize_temperature"}  # fmt: skip


def official_generator_config(gen: GeneratorConfig, tok=None, sampling=None, image_size: Optional[int] = None) -> dict:
    """The official config dict for ``ImageBert(config)`` / ``UViTBert(config)``.

    ``model.generator`` holds the generator fields (plus the sampling settings of ``sampling``, a
    ``titok_jax.sampling.SamplingConfig``, when given, as the official inference yamls do);
    ``model.vq_model`` the tokenizer's (``tok``: a ``TiTokConfig``; the official generator reads only
    its ``codebook_size``, so without ``tok`` just ``codebook_size`` and ``num_latent_tokens`` are written).
    """
    g = {k: getattr(gen, k) for k in _GENERATOR_KEYS}
    if sampling is not None:
        g.update({theirs: getattr(sampling, ours) for ours, theirs in _SAMPLING_KEYS.items()})
    if tok is not None:
        if (tok.codebook_size, tok.num_latent_tokens) != (gen.codebook_size, gen.image_seq_len):
            raise ValueError(
                f"generator (codebook {gen.codebook_size}, {gen.image_seq_len} tokens) does not fit the tokenizer "
                f"(codebook {tok.codebook_size}, {tok.num_latent_tokens} tokens)"
            )
        from titok_jax.models.registry import titok_official_config

        try:
            out = titok_official_config(tok)
        except ValueError:  # custom (tiny) tokenizer sizes: the fields the generator needs
            out = {
                "model": {"vq_model": {"codebook_size": tok.codebook_size, "num_latent_tokens": tok.num_latent_tokens,
                                       "token_size": tok.token_size}},
                "dataset": {"preprocessing": {"crop_size": tok.image_size}},
            }  # fmt: skip
    else:
        out = {"model": {"vq_model": {"codebook_size": gen.codebook_size, "num_latent_tokens": gen.image_seq_len}}}
        if image_size is not None:
            out["dataset"] = {"preprocessing": {"crop_size": int(image_size)}}
    out["model"]["generator"] = g
    return out


def generator_config_from_official(d: dict) -> GeneratorConfig:
    """Inverse of ``official_generator_config``: reads an official yaml / config.json dict."""
    try:
        g = dict(d["model"]["generator"])
        codebook = int(d["model"]["vq_model"]["codebook_size"])
    except (KeyError, TypeError):
        raise ValueError(
            "an official generator config needs model.generator and model.vq_model.codebook_size sections"
        ) from None
    missing = [k for k in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "image_seq_len") if k not in g]  # fmt: skip
    if missing:
        raise ValueError(f"the official generator config lacks model.generator keys {missing}")
    kw = {k: g[k] for k in _GENERATOR_KEYS if k in g}
    return GeneratorConfig(codebook_size=codebook, **kw)


def sampling_from_official(d: dict) -> dict:
    """The sampling settings an official config carries (``model.generator``), as SamplingConfig fields."""
    g = d.get("model", {}).get("generator", {}) if isinstance(d, dict) else {}
    return {ours: g[theirs] for ours, theirs in _SAMPLING_KEYS.items() if theirs in g}
