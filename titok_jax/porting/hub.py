"""Hugging Face hub folders and repos, as written and read by the official ``PyTorchModelHubMixin``.

``TiTok.from_pretrained(folder_or_repo)`` (1d-tokenizer ``modeling/titok.py``) reads ``config.json``
(the dict passed to ``TiTok(config)``) and ``model.safetensors`` (the state_dict). The released hub
repos (``yucornetto/tokenizer_titok_*_imagenet``, ``yucornetto/generator_titok_*_imagenet``) have the
same two files.

Names of weights on the hub (``parse_hub_name``; anything else is a local path):

* ``hf:ORG/NAME`` or ``hf://ORG/NAME`` -- a repo (``config.json`` + ``model.safetensors``, else
  ``pytorch_model.bin``); ``ORG/NAME@REVISION`` pins a branch, tag or commit;
* ``hf://ORG/NAME/FILE`` -- one file of a repo (e.g. ``hf://fun-research/TiTok/tokenizer_titok_l32.bin``);
* ``https://huggingface.co/ORG/NAME`` (also ``.../tree/REV``, ``.../blob/REV/FILE``, ``.../resolve/REV/FILE``);
* a bare ``ORG/NAME`` when no such local path exists (as ``transformers`` does).

Downloads go through ``huggingface_hub`` (an optional dependency: ``pip install titok_jax[hub]``)
into its standard cache (``HF_HUB_CACHE`` / ``HF_HOME``, default ``~/.cache/huggingface/hub``); with
``HF_HUB_OFFLINE=1`` (read at every call) files come from that cache only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Dict, Mapping, Optional

import numpy as np

from titok_jax.porting.io import WeightFileError, save_safetensors

WEIGHTS_NAME = "model.safetensors"
PICKLE_WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
MODEL_CARD_NAME = "README.md"
EXPORT_MODE = 0o644  # exported files are world-readable whatever the umask

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO = re.compile(rf"^({_PART})/({_PART})(?:@([^/]+))?(?:/(.+))?$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".npz", ".json")


@dataclasses.dataclass(frozen=True)
class HubName:
    """A repo on the hub (``filename=None``) or one file in it; ``revision=None`` = the default branch."""

    repo_id: str
    revision: Optional[str] = None
    filename: Optional[str] = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"hf://{self.repo_id}{rev}" + (f"/{self.filename}" if self.filename else "")


def parse_hub_name(name: str) -> Optional[HubName]:
    """The hub reference ``name`` spells (module docstring), or None for a local path."""
    name = str(name).strip()
    explicit = False
    for prefix in ("hf://", "hf:", "https://huggingface.co/", "http://huggingface.co/", "huggingface.co/"):
        if name.startswith(prefix):
            name, explicit = name[len(prefix) :], True
            break
    if not explicit:
        if os.path.exists(os.path.expanduser(name)) or name.startswith((".", "/", "~")):
            return None
        if name.count("/") != 1 or name.lower().endswith(_WEIGHT_SUFFIXES):
            return None
    name = name.rstrip("/")
    # web URLs: ORG/NAME/{tree,blob,resolve}/REV[/FILE]
    url = re.match(rf"^({_PART}/{_PART})/(tree|blob|resolve)/([^/]+)(?:/(.+))?$", name)
    if url:
        return HubName(url.group(1), url.group(3), url.group(4))
    m = _REPO.match(name)
    if m is None:
        if explicit:
            raise WeightFileError(f"{name!r} is not a hub name: expected ORG/NAME, ORG/NAME@REVISION or ORG/NAME/FILE")
        return None
    return HubName(f"{m.group(1)}/{m.group(2)}", m.group(3), m.group(4))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise WeightFileError(
            "reading weights from the Hugging Face hub needs huggingface_hub: pip install 'titok_jax[hub]' "
            "(or pip install huggingface_hub), or pass a local file or folder"
        ) from None
    return huggingface_hub


def _fetch(hf, ref: HubName, filename: str, cache_dir: Optional[str], required: bool) -> Optional[str]:
    from huggingface_hub import utils as errors  # the error classes, here in every version since 0.2x

    try:
        return hf.hf_hub_download(ref.repo_id, filename, revision=ref.revision, cache_dir=cache_dir,
                                  local_files_only=_offline(), library_name="titok_jax")  # fmt: skip
    except errors.GatedRepoError:
        raise WeightFileError(f"{ref} is gated: accept its terms on the hub and log in (hf auth login)") from None
    except errors.RepositoryNotFoundError:
        raise WeightFileError(f"no hub repo {ref.repo_id!r} (nor a local file or folder of that name; a private "
                              "repo needs a login: hf auth login)") from None  # fmt: skip
    except errors.RevisionNotFoundError:
        raise WeightFileError(f"{ref.repo_id} has no revision {ref.revision!r}") from None
    except errors.LocalEntryNotFoundError:
        if not _offline():
            raise WeightFileError(
                f"cannot download {filename} of {ref} and it is not in the hub cache: check the network "
                "(or HF_ENDPOINT), or download it once where the hub is reachable"
            ) from None
        if required:
            raise WeightFileError(
                f"HF_HUB_OFFLINE is set and {filename} of {ref} is not in the hub cache "
                f"({cache_dir or 'HF_HUB_CACHE'}): download it once with the network on, or unset HF_HUB_OFFLINE"
            ) from None
        return None
    except errors.EntryNotFoundError:
        if required:
            raise WeightFileError(f"{ref} has no file {filename}") from None
        return None
    except errors.HfHubHTTPError as e:
        raise WeightFileError(f"hub request for {filename} of {ref} failed: {e}") from None


def download(ref: HubName, cache_dir: Optional[str] = None) -> str:
    """A hub file -> its local path; a hub repo -> the local snapshot folder holding its
    ``config.json`` (when the repo has one) and its weights (``model.safetensors``, else
    ``pytorch_model.bin``)."""
    hf = _hub()
    if ref.filename:
        return _fetch(hf, ref, ref.filename, cache_dir, required=True)
    _fetch(hf, ref, CONFIG_NAME, cache_dir, required=False)
    weights = _fetch(hf, ref, WEIGHTS_NAME, cache_dir, required=False)
    if weights is None:
        weights = _fetch(hf, ref, PICKLE_WEIGHTS_NAME, cache_dir, required=False)
    if weights is None and _offline():
        raise WeightFileError(
            f"HF_HUB_OFFLINE is set and {ref} is not in the hub cache ({cache_dir or 'HF_HUB_CACHE'}) with "
            f"{WEIGHTS_NAME} or {PICKLE_WEIGHTS_NAME}: download it once with the network on, or unset HF_HUB_OFFLINE"
        )
    if weights is None:
        raise WeightFileError(f"{ref} has neither {WEIGHTS_NAME} nor {PICKLE_WEIGHTS_NAME}")
    return os.path.dirname(weights)


def resolve(name_or_path: str, cache_dir: Optional[str] = None) -> str:
    """A hub name -> the downloaded (or cached) local file or folder; a local path -> itself, absolute."""
    ref = parse_hub_name(name_or_path)
    if ref is not None:
        return download(ref, cache_dir)
    return os.path.abspath(os.path.expanduser(str(name_or_path)))


def push_folder(folder: str, repo_id: str, *, private: Optional[bool] = None, token: Optional[str] = None,
                commit_message: str = "Upload titok_jax weights") -> str:  # fmt: skip
    """Create ``repo_id`` when needed and upload ``folder`` to it; returns the commit URL."""
    hf = _hub()
    api = hf.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


# ---------------------------------------------------------------------------------------------- folders
def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, EXPORT_MODE)
    os.replace(tmp, path)


def export_folder(out_dir: str, state: Mapping[str, np.ndarray], config: Optional[dict],
                  model_card: Optional[str] = None) -> Dict[str, str]:  # fmt: skip
    """``out_dir/model.safetensors`` [+ ``config.json``] [+ ``README.md``], every file mode 0644."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"weights": os.path.join(out_dir, WEIGHTS_NAME)}
    save_safetensors(state, paths["weights"], metadata={"format": "pt"})
    os.chmod(paths["weights"], EXPORT_MODE)
    if config is not None:
        paths["config"] = os.path.join(out_dir, CONFIG_NAME)
        _write_text(paths["config"], json.dumps(config, indent=2, sort_keys=True) + "\n")
    if model_card is not None:
        paths["model_card"] = os.path.join(out_dir, MODEL_CARD_NAME)
        _write_text(paths["model_card"], model_card)
    return paths


def resolve_weights(path: str) -> str:
    """A hub folder -> its weights file; a file path is returned unchanged."""
    if os.path.isdir(path):
        for name in (WEIGHTS_NAME, PICKLE_WEIGHTS_NAME):
            cand = os.path.join(path, name)
            if os.path.exists(cand):
                return cand
        raise WeightFileError(f"{path} is a folder without {WEIGHTS_NAME} or {PICKLE_WEIGHTS_NAME}")
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
