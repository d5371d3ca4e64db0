"""Name maps of the MaskGIT-VQGAN: titok_jax <-> 1d-tokenizer PyTorch, and <-> original MaskGIT Flax.

PyTorch keys: ``modeling/modules/maskgit_vqgan.py`` as wrapped by ``PretrainedTokenizer``
(``encoder.*``, ``decoder.*``, ``quantize.embedding.weight``; official_titok.md section 4.2).
Original Flax paths: google-research/maskgit ``nets/vqgan_tokenizer.py`` auto-names
(``Conv_i``, ``ResBlock_i``, ``GroupNorm_i`` in call order; official_titok.md section 3.4).
"""

from __future__ import annotations

from typing import List, Tuple

from titok_jax.config.models import VQGANConfig
from titok_jax.porting.mapping import NameMap, Rule

_RES_PARTS = (("norm1", "norm"), ("conv1", "conv"), ("norm2", "norm"), ("conv2", "conv"))
_JAX_RES_PARTS = {"norm1": "GroupNorm_0", "conv1": "Conv_0", "norm2": "GroupNorm_1", "conv2": "Conv_1",
                  "nin_shortcut": "Conv_2"}  # fmt: skip


def _norm_rules(torch_prefix: str, flax_path: Tuple[str, ...]) -> List[Rule]:
    return [
        Rule(f"{torch_prefix}.weight", flax_path + ("scale",)),
        Rule(f"{torch_prefix}.bias", flax_path + ("bias",)),
    ]


def _conv_rules(torch_prefix: str, flax_path: Tuple[str, ...], bias: bool) -> List[Rule]:
    rules = [Rule(f"{torch_prefix}.weight", flax_path + ("kernel",), "conv")]
    if bias:
        rules.append(Rule(f"{torch_prefix}.bias", flax_path + ("bias",)))
    return rules


def _resblock_rules(torch_prefix: str, flax_path: Tuple[str, ...], in_ch: int, out_ch: int) -> List[Rule]:
    rules: List[Rule] = []
    for part, kind in _RES_PARTS:
        if kind == "norm":
            rules += _norm_rules(f"{torch_prefix}.{part}", flax_path + (part,))
        else:
            rules += _conv_rules(f"{torch_prefix}.{part}", flax_path + (part,), bias=False)
    if in_ch != out_ch:
        rules += _conv_rules(f"{torch_prefix}.nin_shortcut", flax_path + ("nin_shortcut",), bias=False)
    return rules


def encoder_blocks(c: VQGANConfig):
    """(torch module prefix, flax name, in, out) for every encoder ResBlock, in call order."""
    out = []
    ch = c.hidden_channels
    for i, m in enumerate(c.channel_mult):
        for j in range(c.num_res_blocks):
            out.append((f"down.{i}.block.{j}", f"down_{i}_block_{j}", ch, c.hidden_channels * m))
            ch = c.hidden_channels * m
    for j in range(c.num_res_blocks):
        out.append((f"mid.{j}", f"mid_{j}", ch, ch))
    return out


def decoder_blocks(c: VQGANConfig):
    """(torch module prefix, flax name, in, out) for every decoder ResBlock, in call order."""
    out = []
    ch = c.hidden_channels * c.channel_mult[-1]
    for j in range(c.num_res_blocks):
        out.append((f"mid.{j}", f"mid_{j}", ch, ch))
    for i in reversed(range(len(c.channel_mult))):
        for j in range(c.num_res_blocks):
            out.append((f"up.{i}.block.{j}", f"up_{i}_block_{j}", ch, c.hidden_channels * c.channel_mult[i]))
            ch = c.hidden_channels * c.channel_mult[i]
    return out


def encoder_rules(c: VQGANConfig, torch_prefix: str = "encoder", flax_prefix=("encoder",)) -> List[Rule]:
    fp = tuple(flax_prefix)
    rules = _conv_rules(f"{torch_prefix}.conv_in", fp + ("conv_in",), bias=False)
    for tname, fname, cin, cout in encoder_blocks(c):
        rules += _resblock_rules(f"{torch_prefix}.{tname}", fp + (fname,), cin, cout)
    rules += _norm_rules(f"{torch_prefix}.norm_out", fp + ("norm_out",))
    rules += _conv_rules(f"{torch_prefix}.conv_out", fp + ("conv_out",), bias=True)
    return rules


def decoder_rules(c: VQGANConfig, torch_prefix: str = "decoder", flax_prefix=("decoder",)) -> List[Rule]:
    fp = tuple(flax_prefix)
    rules = _conv_rules(f"{torch_prefix}.conv_in", fp + ("conv_in",), bias=True)
    blocks = decoder_blocks(c)
    for tname, fname, cin, cout in blocks:
        rules += _resblock_rules(f"{torch_prefix}.{tname}", fp + (fname,), cin, cout)
    for i in range(1, len(c.channel_mult)):
        rules += _conv_rules(f"{torch_prefix}.up.{i}.upsample_conv", fp + (f"up_{i}_upsample_conv",), bias=True)
    rules += _norm_rules(f"{torch_prefix}.norm_out", fp + ("norm_out",))
    rules += _conv_rules(f"{torch_prefix}.conv_out", fp + ("conv_out",), bias=True)
    return rules


def torch_name_map(c: VQGANConfig = VQGANConfig()) -> NameMap:
    """``MaskGITVQGAN`` params <-> ``PretrainedTokenizer`` state_dict (maskgit-vqgan-imagenet-f16-256.bin)."""
    rules = encoder_rules(c) + decoder_rules(c) + [Rule("quantize.embedding.weight", ("quantize", "embedding"))]
    return NameMap("MaskGIT-VQGAN (PyTorch)", rules)


def maskgit_jax_name_map(c: VQGANConfig = VQGANConfig()) -> NameMap:
    """``MaskGITVQGAN`` params <-> the original MaskGIT Flax tree (tokenizer_imagenet256_checkpoint).

    External keys are '/'-joined paths under ``params`` (e.g. ``encoder/ResBlock_4/Conv_2/kernel``).
    Both sides use Flax layouts, so every transform is the identity.
    """
    rules: List[Rule] = []
    levels = len(c.channel_mult)

    def res(jax_prefix: str, flax_path: Tuple[str, ...], cin: int, cout: int):
        out = []
        for ours, theirs in _JAX_RES_PARTS.items():
            if ours == "nin_shortcut" and cin == cout:
                continue
            leaves = ("scale", "bias") if ours.startswith("norm") else ("kernel",)
            out += [Rule(f"{jax_prefix}/{theirs}/{leaf}", flax_path + (ours, leaf)) for leaf in leaves]
        return out

    # Encoder: Conv_0 = conv_in, ResBlock_k in call order, GroupNorm_0 = norm_out, Conv_1 = conv_out.
    rules.append(Rule("encoder/Conv_0/kernel", ("encoder", "conv_in", "kernel")))
    for k, (_, fname, cin, cout) in enumerate(encoder_blocks(c)):
        rules += res(f"encoder/ResBlock_{k}", ("encoder", fname), cin, cout)
    rules += [Rule(f"encoder/GroupNorm_0/{x}", ("encoder", "norm_out", x)) for x in ("scale", "bias")]
    rules += [Rule(f"encoder/Conv_1/{x}", ("encoder", "conv_out", x)) for x in ("kernel", "bias")]
    # Decoder: Conv_0 = conv_in, Conv_m (0 < m < L) = up_{L-m} upsample conv, Conv_L = conv_out.
    rules += [Rule(f"decoder/Conv_0/{x}", ("decoder", "conv_in", x)) for x in ("kernel", "bias")]
    for k, (_, fname, cin, cout) in enumerate(decoder_blocks(c)):
        rules += res(f"decoder/ResBlock_{k}", ("decoder", fname), cin, cout)
    for m in range(1, levels):
        rules += [
            Rule(f"decoder/Conv_{m}/{x}", ("decoder", f"up_{levels - m}_upsample_conv", x)) for x in ("kernel", "bias")
        ]
    rules += [Rule(f"decoder/Conv_{levels}/{x}", ("decoder", "conv_out", x)) for x in ("kernel", "bias")]
    rules += [Rule(f"decoder/GroupNorm_0/{x}", ("decoder", "norm_out", x)) for x in ("scale", "bias")]
    rules.append(Rule("quantizer/codebook", ("quantize", "embedding")))
    assert len(rules) == len(torch_name_map(c).rules), "MaskGIT JAX and PyTorch maps must cover the same tensors"
    return NameMap("MaskGIT-VQGAN (original MaskGIT Flax)", rules)
