"""Name map of the stage-2 discriminator: titok_jax ``NLayerDiscriminator`` <-> official PyTorch keys.

Official keys (1d-tokenizer ``modeling/modules/discriminator.py``; official_titok.md section 4.4),
``P`` = the prefix (``""`` for a bare ``NLayerDiscriminator``, ``"discriminator."`` inside the stage-2
``ReconstructionLoss_Stage2`` state_dict):

    P block_in.0.{weight,bias}       -> block_in/{kernel,bias}           (conv)
    P blocks.{j}.0.{weight,bias}     -> blocks_{j}/conv/{kernel,bias}    (conv)
    P blocks.{j}.1.kernel            buffer [1, 1, k, k]: the constant blur kernel (checked, re-emitted)
    P blocks.{j}.2.{weight,bias}     -> blocks_{j}/norm/{scale,bias}
    P to_logits.0.{weight,bias}      -> to_logits_0/{kernel,bias}        (conv)
    P to_logits.2.{weight,bias}      -> to_logits_2/{kernel,bias}        (conv)

The blur kernels are buffers, not parameters: on import each must be present (its absence means a
``blur_resample=False`` checkpoint or another config) and equal to ``blur_kernel(k)``; on export they
are written in their state_dict position so that ``load_state_dict(strict=True)`` succeeds.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Tuple

import numpy as np

from titok_jax.config.models import DiscriminatorConfig
from titok_jax.models.discriminator import blur_kernel
from titok_jax.porting.mapping import NameMap, PortError, Rule

LOSS_MODULE_PREFIX = "discriminator."  # key prefix inside the official stage-2 loss module


@dataclasses.dataclass
class NameMapWithBuffers(NameMap):
    """A ``NameMap`` plus constant (non-parameter) buffers that the external format carries.

    ``buffers``: external key -> the constant it must hold; ``order``: every external key (rules and
    buffers) in the external state_dict order, used on export.
    """

    buffers: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    order: Tuple[str, ...] = ()

    def __post_init__(self):
        super().__post_init__()
        clash = set(self.buffers) & set(self.external_keys)
        if clash:
            raise ValueError(f"name map {self.name}: {sorted(clash)} are both buffers and parameters")
        if self.order and sorted(self.order) != sorted(list(self.external_keys) + list(self.buffers)):
            raise ValueError(f"name map {self.name}: order does not list exactly the parameter and buffer keys")

    def _ignored(self, key: str) -> bool:
        return key in self.buffers or super()._ignored(key)

    def _ordered(self, entries: Dict[str, object]) -> Dict[str, object]:
        if not self.order:
            return entries
        return {k: entries[k] for k in self.order}

    def expected_external_shapes(self, template: Mapping) -> Dict[str, Tuple[int, ...]]:
        out = dict(super().expected_external_shapes(template))
        out.update({k: tuple(v.shape) for k, v in self.buffers.items()})
        return self._ordered(out)

    def check_buffers(self, state: Mapping[str, np.ndarray]) -> List[str]:
        problems = []
        for key, want in self.buffers.items():
            if key not in state:
                problems.append(
                    f"missing buffer {key!r} (expected the constant {list(want.shape)} blur kernel; a checkpoint "
                    "without it was built with another config, e.g. blur_resample=False)"
                )
                continue
            got = np.asarray(state[key])
            if got.shape != want.shape:
                problems.append(f"buffer {key!r} has shape {list(got.shape)}, expected {list(want.shape)}")
            elif not np.array_equal(got.astype(np.float32), want):
                problems.append(
                    f"buffer {key!r} does not hold the fixed blur kernel {want.reshape(want.shape[-2:]).tolist()} "
                    f"(got {got.astype(np.float32).reshape(got.shape[-2:]).tolist()}); check blur_kernel_size"
                )
        return problems

    def to_flax(self, state: Mapping[str, np.ndarray], template: Mapping, dtype=np.float32) -> dict:
        problems = self.check_buffers(state)
        try:
            params = super().to_flax(state, template, dtype)
        except PortError as e:
            if not problems:
                raise
            raise PortError(self._report(problems) + "\n" + str(e)) from None
        if problems:
            raise PortError(self._report(problems))
        return params

    def to_external(self, params: Mapping) -> Dict[str, np.ndarray]:
        out = super().to_external(params)
        out.update({k: np.array(v, np.float32) for k, v in self.buffers.items()})
        return self._ordered(out)


def _conv_rules(torch_prefix: str, flax_path: Tuple[str, ...]) -> List[Rule]:
    return [
        Rule(f"{torch_prefix}.weight", flax_path + ("kernel",), "conv"),
        Rule(f"{torch_prefix}.bias", flax_path + ("bias",)),
    ]


def torch_name_map(config: DiscriminatorConfig = DiscriminatorConfig(), prefix: str = "") -> NameMapWithBuffers:
    """``NLayerDiscriminator`` params <-> the official state_dict (keys prefixed by ``prefix``)."""
    p = prefix
    rules = _conv_rules(f"{p}block_in.0", ("block_in",))
    buffers: Dict[str, np.ndarray] = {}
    order = [r.external_key for r in rules]
    for j in range(config.num_stages):
        stage = _conv_rules(f"{p}blocks.{j}.0", (f"blocks_{j}", "conv"))
        order += [r.external_key for r in stage]
        if config.blur_resample:
            k = blur_kernel(config.blur_kernel_size)
            key = f"{p}blocks.{j}.1.kernel"
            buffers[key] = k[None, None]
            order.append(key)
        norm = [
            Rule(f"{p}blocks.{j}.2.weight", (f"blocks_{j}", "norm", "scale")),
            Rule(f"{p}blocks.{j}.2.bias", (f"blocks_{j}", "norm", "bias")),
        ]
        order += [r.external_key for r in norm]
        rules += stage + norm
    head = _conv_rules(f"{p}to_logits.0", ("to_logits_0",)) + _conv_rules(f"{p}to_logits.2", ("to_logits_2",))
    rules += head
    order += [r.external_key for r in head]
    return NameMapWithBuffers("stage-2 discriminator (PyTorch)", rules, buffers=buffers, order=tuple(order))
