"""Hugging Face hub folders as written by the official ``PyTorchModelHubMixin``.

``TiTok.from_pretrained(folder)`` (1d-tokenizer ``modeling/titok.py``) reads ``config.json`` (the
dict passed to ``TiTok(config)``) and ``model.safetensors`` (the state_dict). The released hub repos
(``yucornetto/tokenizer_titok_*_imagenet``) have the same two files.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Optional

import numpy as np

from titok_jax.porting.io import WeightFileError, save_safetensors

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def export_folder(out_dir: str, state: Mapping[str, np.ndarray], config: Optional[dict]) -> Dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = {"weights": os.path.join(out_dir, WEIGHTS_NAME)}
    save_safetensors(state, paths["weights"], metadata={"format": "pt"})
    if config is not None:
        paths["config"] = os.path.join(out_dir, CONFIG_NAME)
        tmp = paths["config"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, paths["config"])
    return paths


def resolve_weights(path: str) -> str:
    """A hub folder -> its weights file; a file path is returned unchanged."""
    if os.path.isdir(path):
        for name in (WEIGHTS_NAME, "pytorch_model.bin"):
            cand = os.path.join(path, name)
            if os.path.exists(cand):
                return cand
        raise WeightFileError(f"{path} is a folder without {WEIGHTS_NAME} or pytorch_model.bin")
    return path


def folder_config(path: str) -> Optional[dict]:
    """config.json next to the weights (hub folder), if any."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    cand = os.path.join(folder, CONFIG_NAME)
    if not os.path.exists(cand):
        return None
    try:
        with open(cand) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise WeightFileError(f"{cand}: unreadable config.json ({e})") from None
