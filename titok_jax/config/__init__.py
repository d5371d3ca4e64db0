"""Configuration: typed configs of every model and section, the presets, and the one parser.

* ``titok_jax.config.models``: ``TiTokConfig``, ``VQGANConfig``, ``GeneratorConfig``, ``SamplingConfig``, ...
* ``titok_jax.config.sections``: the training and step sections (``Stage1Config``, ``DataConfig``, ...)
* ``titok_jax.config.presets``: the named sizes and the ``ml_collections`` configs built from them
* ``titok_jax.config.run``: ``RunConfig`` and ``parse`` (ConfigDict -> RunConfig, once, at the entry)
* ``titok_jax.config.official``: the official ``config.json`` dicts <-> typed configs

``load(path_or_preset)`` reads a config file (``configs/titok_b64.py[:arg]``) or a preset name.
This package imports neither JAX nor any other part of titok_jax except ``errors``.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Optional

from titok_jax.config import presets
from titok_jax.config.models import (
    CONVNEXT_SMALL,
    ConvNeXtConfig,
    DiscriminatorConfig,
    GeneratorConfig,
    SamplingConfig,
    TiTokConfig,
    VQGANConfig,
)
from titok_jax.config.run import RunConfig, parse, with_changes
from titok_jax.errors import ConfigError


def load(path_or_config: Any, arg: Optional[str] = None) -> RunConfig:
    """A config file path (``configs/titok_b64.py[:arg]``), a preset name (``titok_b64``), a
    ConfigDict or a ``RunConfig`` -> the parsed ``RunConfig``."""
    if not isinstance(path_or_config, str):
        return parse(path_or_config)
    name, _, name_arg = path_or_config.partition(":")
    if name in presets.MODELS:
        return parse(presets.training_config(name, name_arg or arg))
    if not os.path.exists(name):
        raise ConfigError(
            f"config file not found: {name} (give a configs/*.py file or one of {sorted(presets.MODELS)})"
        )
    spec = importlib.util.spec_from_file_location("_titok_config", name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{name} has no get_config(arg) function")
    return parse(module.get_config(name_arg or arg))


__all__ = [
    "CONVNEXT_SMALL",
    "ConfigError",
    "ConvNeXtConfig",
    "DiscriminatorConfig",
    "GeneratorConfig",
    "RunConfig",
    "SamplingConfig",
    "TiTokConfig",
    "VQGANConfig",
    "load",
    "parse",
    "with_changes",
]
