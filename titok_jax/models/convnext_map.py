"""Name map of ConvNeXt: titok_jax ``ConvNeXt`` <-> torchvision ``convnext_*`` state_dict keys.

torchvision ``models/convnext.py`` (``P`` = prefix: ``""`` for the torchvision checkpoint,
``"perceptual_loss.convnext."`` inside the official stage-2 loss module; s = stage index 0..3):

    P features.0.0.{weight,bias}                  -> stem_conv/{kernel,bias}              (conv)
    P features.0.1.{weight,bias}                  -> stem_norm/{scale,bias}
    P features.{2s+1}.{j}.block.0.{weight,bias}   -> stage_{s}_block_{j}/dwconv           (conv, depthwise)
    P features.{2s+1}.{j}.block.2.{weight,bias}   -> stage_{s}_block_{j}/norm
    P features.{2s+1}.{j}.block.3.{weight,bias}   -> stage_{s}_block_{j}/pwconv1          (linear)
    P features.{2s+1}.{j}.block.5.{weight,bias}   -> stage_{s}_block_{j}/pwconv2          (linear)
    P features.{2s+1}.{j}.layer_scale [C, 1, 1]   -> stage_{s}_block_{j}/layer_scale [C]  (c11_vector)
    P features.{2s}.0.{weight,bias} (s >= 1)      -> downsample_{s}_norm
    P features.{2s}.1.{weight,bias} (s >= 1)      -> downsample_{s}_conv                  (conv)
    P classifier.0.{weight,bias}                  -> head_norm
    P classifier.2.{weight,bias}                  -> head_fc                              (linear)
"""

from __future__ import annotations

from typing import List, Tuple

from titok_jax.config.models import CONVNEXT_SMALL, ConvNeXtConfig
from titok_jax.models.convnext import abstract_params
from titok_jax.porting.io import load_state_dict
from titok_jax.porting.mapping import NameMap, Rule

LOSS_MODULE_PREFIX = "perceptual_loss.convnext."  # key prefix inside the official stage-2 loss module


def _pair(torch_prefix: str, flax_name: Tuple[str, ...], kind: str) -> List[Rule]:
    weight = {"norm": ("scale", "identity"), "conv": ("kernel", "conv"), "linear": ("kernel", "linear")}[kind]
    return [
        Rule(f"{torch_prefix}.weight", flax_name + (weight[0],), weight[1]),
        Rule(f"{torch_prefix}.bias", flax_name + ("bias",)),
    ]


def torch_name_map(config: ConvNeXtConfig = CONVNEXT_SMALL, prefix: str = "") -> NameMap:
    """``ConvNeXt`` params <-> torchvision state_dict (e.g. ``convnext_small-0c510722.pth``)."""
    p = prefix
    rules = _pair(f"{p}features.0.0", ("stem_conv",), "conv") + _pair(f"{p}features.0.1", ("stem_norm",), "norm")
    for s, depth in enumerate(config.depths):
        if s > 0:
            rules += _pair(f"{p}features.{2 * s}.0", (f"downsample_{s}_norm",), "norm")
            rules += _pair(f"{p}features.{2 * s}.1", (f"downsample_{s}_conv",), "conv")
        for j in range(depth):
            t, f = f"{p}features.{2 * s + 1}.{j}", (f"stage_{s}_block_{j}",)
            rules.append(Rule(f"{t}.layer_scale", f + ("layer_scale",), "c11_vector"))
            rules += _pair(f"{t}.block.0", f + ("dwconv",), "conv")
            rules += _pair(f"{t}.block.2", f + ("norm",), "norm")
            rules += _pair(f"{t}.block.3", f + ("pwconv1",), "linear")
            rules += _pair(f"{t}.block.5", f + ("pwconv2",), "linear")
    rules += _pair(f"{p}classifier.0", ("head_norm",), "norm") + _pair(f"{p}classifier.2", ("head_fc",), "linear")
    return NameMap("ConvNeXt (torchvision)", rules)


def load_params(path: str, config: ConvNeXtConfig = CONVNEXT_SMALL, allow_pickle: bool = False, prefix: str = ""):
    """Read a torchvision ConvNeXt checkpoint (``.safetensors``, or a ``.pth`` pickle if
    ``allow_pickle``) and convert it; keys outside ``prefix`` are ignored when a prefix is given
    (so a whole stage-2 loss-module state_dict can be passed with ``LOSS_MODULE_PREFIX``)."""
    state = load_state_dict(path, allow_pickle=allow_pickle)
    if prefix:
        state = {k: v for k, v in state.items() if k.startswith(prefix)}
    return torch_name_map(config, prefix).to_flax(state, abstract_params(config))
