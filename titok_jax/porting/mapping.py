"""Explicit, per-tensor name maps between Flax parameter trees and external checkpoints.

A ``NameMap`` is a list of ``Rule(external_key, flax_path, transform)`` written out by a model's
own map module (``titok_jax/models/*_map.py``), MaxText style: every tensor is named, nothing is
inferred from what happens to exist in a random tree. ``transform`` names a pair of functions
(external layout -> Flax layout, and back). Conversions check, and report in one error:

* keys the checkpoint lacks (missing), keys no rule knows (unexpected), shape mismatches against
  the model built from the config, non-float tensors, NaN/Inf values;

and name the first offending key with its shapes, so a wrong ``--config`` is obvious.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from titok_jax.errors import InputError

FlaxPath = Tuple[str, ...]


class PortError(InputError):
    """A checkpoint does not fit the model the config describes."""


def _identity(x):
    return x


# name -> (external -> flax, flax -> external)
TRANSFORMS: Dict[str, Tuple[Callable, Callable]] = {
    "identity": (_identity, _identity),
    # torch Linear weight [out, in] <-> Dense kernel [in, out]
    "linear": (lambda w: w.T, lambda k: k.T),
    # torch Conv2d weight [out, in, kh, kw] <-> Conv kernel [kh, kw, in, out]
    "conv": (lambda w: w.transpose(2, 3, 1, 0), lambda k: k.transpose(3, 2, 0, 1)),
    # torch 1x1 Conv2d weight [out, in, 1, 1] <-> Dense kernel [in, out]
    "conv1x1_dense": (lambda w: w[:, :, 0, 0].T, lambda k: k.T[:, :, None, None]),
    # torch per-channel [C, 1, 1] (broadcast over NCHW, e.g. ConvNeXt layer_scale) <-> [C]
    "c11_vector": (lambda w: w[:, 0, 0], lambda v: v[:, None, None]),
}


@dataclasses.dataclass(frozen=True)
class Rule:
    external_key: str
    flax_path: FlaxPath
    transform: str = "identity"

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r}")

    def to_flax(self, x):
        return TRANSFORMS[self.transform][0](x)

    def to_external(self, x):
        return TRANSFORMS[self.transform][1](x)


def flatten(tree: Mapping, prefix: FlaxPath = ()) -> Dict[FlaxPath, object]:
    out = {}
    for k, v in tree.items():
        path = prefix + (str(k),)
        if isinstance(v, Mapping):
            out.update(flatten(v, path))
        else:
            out[path] = v
    return out


def unflatten(flat: Mapping[FlaxPath, object]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return tree


def _shape(x) -> Tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _fmt(path: FlaxPath) -> str:
    return "/".join(path)


@dataclasses.dataclass
class NameMap:
    """An explicit external<->Flax map for one model.

    ``ignore``: regexes of external keys that are legitimately present but carry no parameter
    (e.g. transformers' ``position_ids`` buffer); they are dropped on import, never exported.
    """

    name: str
    rules: List[Rule]
    ignore: Sequence[str] = ()

    def __post_init__(self):
        ext = [r.external_key for r in self.rules]
        fl = [r.flax_path for r in self.rules]
        if len(set(ext)) != len(ext) or len(set(fl)) != len(fl):
            raise ValueError(f"name map {self.name} has duplicate entries")

    @property
    def external_keys(self) -> List[str]:
        return [r.external_key for r in self.rules]

    def _ignored(self, key: str) -> bool:
        return any(re.fullmatch(p, key) for p in self.ignore)

    def expected_external_shapes(self, template: Mapping) -> Dict[str, Tuple[int, ...]]:
        """External shapes implied by a (possibly abstract) Flax template tree."""
        flat = flatten(template)
        out = {}
        for r in self.rules:
            if r.flax_path not in flat:
                raise ValueError(f"name map {self.name}: {_fmt(r.flax_path)} is not in the model's parameter tree")
            dummy = np.empty(_shape(flat[r.flax_path]), np.float32)
            out[r.external_key] = _shape(r.to_external(dummy))
        return out

    def to_flax(self, state: Mapping[str, np.ndarray], template: Mapping, dtype=np.float32) -> dict:
        """External state -> Flax params shaped like ``template`` (shape/dtype checked)."""
        flat_t = flatten(template)
        self._check_template_covered(flat_t)
        keys = [k for k in state if not self._ignored(k)]
        missing = [k for k in self.external_keys if k not in state]
        unexpected = sorted(k for k in keys if k not in set(self.external_keys))
        expected = self.expected_external_shapes(template)
        problems: List[str] = []
        if missing:
            problems.append(
                f"{len(missing)} missing key(s), first: {missing[0]!r} (expected shape {list(expected[missing[0]])})"
            )
        if unexpected:
            problems.append(
                f"{len(unexpected)} unexpected key(s), first: {unexpected[0]!r} "
                f"(shape {list(_shape(state[unexpected[0]]))})"
            )
        out = {}
        for r in self.rules:
            if r.external_key not in state:
                continue
            arr = state[r.external_key]
            got = _shape(arr)
            if got != expected[r.external_key]:
                problems.append(
                    f"shape mismatch at {r.external_key!r}: checkpoint {list(got)}, "
                    f"model expects {list(expected[r.external_key])}"
                )
                continue
            arr = np.asarray(arr)
            if not np.issubdtype(arr.dtype, np.floating) and arr.dtype.name != "bfloat16":
                problems.append(f"{r.external_key!r} has dtype {arr.dtype}, expected a float tensor")
                continue
            arr = np.asarray(arr, dtype=np.float32)
            if not np.all(np.isfinite(arr)):
                problems.append(f"{r.external_key!r} contains NaN or Inf values")
                continue
            out[r.flax_path] = np.ascontiguousarray(r.to_flax(arr)).astype(dtype)
        if problems:
            raise PortError(self._report(problems))
        return unflatten(out)

    def to_external(self, params: Mapping) -> Dict[str, np.ndarray]:
        """Flax params -> ordered external state (float32 numpy), exactly the map's keys."""
        flat = flatten(params)
        self._check_template_covered(flat)
        out = {}
        for r in self.rules:
            arr = np.asarray(flat[r.flax_path], dtype=np.float32)
            out[r.external_key] = np.ascontiguousarray(r.to_external(arr))
        return out

    def _check_template_covered(self, flat: Mapping[FlaxPath, object]) -> None:
        mapped = {r.flax_path for r in self.rules}
        unmapped = sorted(p for p in flat if p not in mapped)
        absent = [r.flax_path for r in self.rules if r.flax_path not in flat]
        if unmapped or absent:
            msg = []
            if unmapped:
                msg.append(f"{len(unmapped)} Flax parameter(s) have no rule, first: {_fmt(unmapped[0])}")
            if absent:
                msg.append(f"{len(absent)} rule(s) point at no Flax parameter, first: {_fmt(absent[0])}")
            raise PortError(self._report(msg) + " -- the config does not describe the model these params belong to")

    def _report(self, problems: Iterable[str]) -> str:
        problems = list(problems)
        head = f"{self.name}: checkpoint does not match the model built from the config"
        shown = "\n  - ".join(problems[:8])
        more = f"\n  ... and {len(problems) - 8} more" if len(problems) > 8 else ""
        return f"{head}:\n  - {shown}{more}\nCheck that --config names the same model variant as the weights."


def prefixed(rules: Iterable[Rule], external_prefix: str, flax_prefix: FlaxPath) -> List[Rule]:
    return [Rule(external_prefix + r.external_key, tuple(flax_prefix) + r.flax_path, r.transform) for r in rules]


def merge(name: str, *maps: NameMap, rules: Optional[List[Rule]] = None) -> NameMap:
    all_rules: List[Rule] = []
    ignore: List[str] = []
    for m in maps:
        all_rules += m.rules
        ignore += list(m.ignore)
    return NameMap(name, all_rules + list(rules or []), ignore)
