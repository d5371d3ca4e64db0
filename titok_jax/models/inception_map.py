"""Name map of the FID Inception-v3: titok_jax ``FIDInceptionV3`` <-> pytorch-fid's state_dict.

The key names of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (566 entries with a current torch;
the Flax tree keeps torch's module names, so the map is mechanical; ``P`` = a BasicConv2d prefix such as
``Conv2d_1a_3x3`` or ``Mixed_6b.branch7x7_2``):

    P.conv.weight [O, I, kh, kw]  -> P/conv/kernel [kh, kw, I, O]   (conv)
    P.bn.weight / .bias           -> P/bn/scale / P/bn/bias
    P.bn.running_mean / _var      -> P/bn/mean / P/bn/var           (eval statistics kept in ``params``)
    P.bn.num_batches_tracked      -> ignored (int64 counter; absent from the original 2019 file)
    fc.weight [1008, 2048] / bias -> fc/kernel [2048, 1008] / fc/bias   (linear)
"""

from __future__ import annotations

from typing import Dict, List, Tuple

from titok_jax.models.inception import abstract_params
from titok_jax.porting.io import load_state_dict
from titok_jax.porting.mapping import NameMap, Rule

STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")

# BasicConv2d names inside each kind of Mixed block (torchvision / pytorch-fid attribute names).
_BRANCHES: Dict[str, Tuple[str, ...]] = {
    "A": ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
          "branch_pool"),
    "B": ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
    "C": ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
          "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"),
    "D": ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"),
    "E": ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"),
}  # fmt: skip
MIXED_KINDS = (
    ("Mixed_5b", "A"), ("Mixed_5c", "A"), ("Mixed_5d", "A"), ("Mixed_6a", "B"), ("Mixed_6b", "C"),
    ("Mixed_6c", "C"), ("Mixed_6d", "C"), ("Mixed_6e", "C"), ("Mixed_7a", "D"), ("Mixed_7b", "E"),
    ("Mixed_7c", "E"),
)  # fmt: skip

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid release asset (fid_weights)


def _basic_conv(torch_prefix: str, flax_path: Tuple[str, ...]) -> List[Rule]:
    return [
        Rule(f"{torch_prefix}.conv.weight", flax_path + ("conv", "kernel"), "conv"),
        Rule(f"{torch_prefix}.bn.weight", flax_path + ("bn", "scale")),
        Rule(f"{torch_prefix}.bn.bias", flax_path + ("bn", "bias")),
        Rule(f"{torch_prefix}.bn.running_mean", flax_path + ("bn", "mean")),
        Rule(f"{torch_prefix}.bn.running_var", flax_path + ("bn", "var")),
    ]


def torch_name_map() -> NameMap:
    """``FIDInceptionV3`` params <-> pytorch-fid / torch-fidelity FID Inception state_dict keys."""
    rules: List[Rule] = []
    for name in STEM:
        rules += _basic_conv(name, (name,))
    for block, kind in MIXED_KINDS:
        for branch in _BRANCHES[kind]:
            rules += _basic_conv(f"{block}.{branch}", (block, branch))
    rules += [Rule("fc.weight", ("fc", "kernel"), "linear"), Rule("fc.bias", ("fc", "bias"))]
    return NameMap("FID Inception-v3 (pytorch-fid)", rules, ignore=(r".*\.num_batches_tracked",))


def load_inception_params(path: str, allow_pickle: bool = False) -> dict:
    """Read the FID Inception weights and convert them to ``FIDInceptionV3`` params.

    ``path``: pytorch-fid's release asset ``pt_inception-2015-12-05-6726825d.pth`` (a PyTorch pickle:
    needs ``allow_pickle=True`` and torch, read with ``weights_only=True``) or a ``.safetensors`` copy of
    the same state_dict (no torch needed). Nothing is downloaded here."""
    state = load_state_dict(path, allow_pickle=allow_pickle)
    return torch_name_map().to_flax(state, abstract_params())
