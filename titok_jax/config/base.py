"""``ConfigMixin``: dict <-> typed, frozen dataclass, with one error that names the bad key.

Every typed config of the package (model sizes, sampling settings, training sections) is a frozen
dataclass with this mixin. ``from_dict`` checks every key and value against the field's type hint:
unknown keys are an error that lists the known ones, nested dataclasses are built from dicts,
lists become tuples, ints are accepted where floats are expected, and a value of the wrong type is
an error naming the field -- so a typo in ``--config.stage1.lrr`` or ``--config.stage1.lr=fast``
stops a run before anything is compiled. ``to_dict`` is the inverse (tuples become lists, so the
result is JSON-able and fits an ``ml_collections.ConfigDict``).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, Dict, Mapping, Tuple, TypeVar, Union

from titok_jax.errors import ConfigError

T = TypeVar("T", bound="ConfigMixin")


@functools.lru_cache(maxsize=None)
def _hints(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to ``hint`` (a field type hint), or ``ConfigError`` naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {_type_name(hint)}")
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, ConfigMixin):
        if isinstance(value, hint):
            return value
        if hasattr(value, "to_dict"):  # an ml_collections.ConfigDict
            value = value.to_dict()
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a section (dict) of {hint.__name__} fields, got {value!r}")
        return hint.from_dict(value, where=where)
    if origin in (tuple, Tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list/tuple, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where} must have {len(args)} entries, got {list(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin in (dict, Dict) or hint is dict:
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a dict, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be True or False, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


class ConfigMixin:
    """``from_dict`` / ``to_dict`` / ``replace`` for frozen config dataclasses (see the module docstring)."""

    _what = ""  # how error messages name this config ("TiTok config", "sampling", ...)

    @classmethod
    def from_dict(cls: type[T], d: Mapping[str, Any], where: str = "") -> T:
        if hasattr(d, "to_dict"):
            d = d.to_dict()
        d = dict(d)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        prefix = f"{where}." if where else ""
        unknown = sorted(set(d) - set(fields))
        if unknown:
            what = f"{cls._what or cls.__name__} " if not where else ""
            raise ConfigError(f"unknown {what}keys {[prefix + k for k in unknown]}; known keys: {sorted(fields)}")
        hints = _hints(cls)
        kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in d.items()}
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where or cls.__name__}: {e}") from None

    def to_dict(self) -> Dict[str, Any]:
        def plain(v):
            if isinstance(v, ConfigMixin):
                return v.to_dict()
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}

    def replace(self: T, **changes) -> T:
        return dataclasses.replace(self, **changes)


def check(errors: list, what: str) -> None:
    """Raise one ``ConfigError`` listing every message in ``errors`` (used by ``__post_init__``)."""
    if errors:
        raise ConfigError(f"invalid {what}: " + "; ".join(errors))
