"""Name maps of the MaskGIT generators: titok_jax params <-> official PyTorch state_dicts.

Keys, shapes and order: official_titok.md section 4.3, checked against
``tests/fixtures/official/manifests/generator_titok_{s128,b64,l32}.json`` by the tests.

* ImageBert: the HF ``BertModel`` lives under ``model.`` with the LM head attached as
  ``model.lm_head``; transformers versions that stored the ``model.embeddings.position_ids`` buffer
  (and ``token_type_ids``) produce checkpoints with those extra integer tensors: they are ignored on
  import and never exported.
* UViTBert: ``pos_embed`` first, then ``embeddings``, ``in_blocks.{i}``, ``mid_block``,
  ``out_blocks.{i}`` (with ``skip_linear`` last in each), ``norm``, ``lm_head``.
"""

from __future__ import annotations

from typing import List, Tuple

from titok_jax.config.models import GeneratorConfig
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
