"""The Colab notebook runs top to bottom (any cell error fails CI), on both of its paths:

* offline (no hub): the hub cells say they were skipped and why, the tiny demo trains (at tiny scale) and
  every later cell runs on it;
* the hub path, with the tiny fixture models saved into an offline hub cache under repo ids (the cells the
  official TiTok-L-32 runs through on Colab).

Outputs committed with the notebook must not contain machine paths.
"""

import json
import os
import re

import pytest
from conftest import REPO, fixture_dir

pytestmark = pytest.mark.slow

NOTEBOOK = REPO / "notebooks" / "titok_jax_colab.ipynb"


def execute(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_notebook_offline_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TITOK_NB_WORKDIR", str(tmp_path / "nb"))
    monkeypatch.setenv("TITOK_NB_STEPS_SCALE", os.environ.get("TITOK_NB_STEPS_SCALE", "0.02"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    outputs = execute(tmp_path)
    assert "SKIPPED the hub cells: HF_HUB_OFFLINE is set and hf://yucornetto/tokenizer_titok_l32_imagenet" in outputs
    assert "token ids" in outputs and "round trip OK" in outputs and "position" in outputs
    assert (tmp_path / "nb" / "samples" / "samples.npz").exists()
    assert (tmp_path / "nb" / "export_pytorch" / "model.safetensors").exists()


def test_notebook_hub_path_from_an_offline_cache(tmp_path, monkeypatch):
    from test_hub import make_hub_cache

    from titok_jax.api import Sampler, Tokenizer

    tiny = str(fixture_dir("tiny", "titok_tiny") / "state_dict.safetensors")
    gen = str(fixture_dir("tiny", "generator_imagebert_tiny") / "state_dict.safetensors")
    Tokenizer.from_weights("configs/titok_tiny.py", tiny).save_pretrained(str(tmp_path / "tok"))
    Sampler.from_weights("configs/titok_tiny.py", tiny, gen).save_pretrained(str(tmp_path / "gen"))
    make_hub_cache(tmp_path / "cache", "tiny-org/titok_tiny", tmp_path / "tok")
    make_hub_cache(tmp_path / "cache", "tiny-org/generator_titok_tiny", tmp_path / "gen")
    monkeypatch.setenv("TITOK_NB_WORKDIR", str(tmp_path / "nb"))
    monkeypatch.setenv("TITOK_NB_TOKENIZER", "tiny-org/titok_tiny")
    monkeypatch.setenv("TITOK_NB_GENERATOR", "tiny-org/generator_titok_tiny")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    outputs = execute(tmp_path)
    assert "loaded tiny-org/titok_tiny" in outputs and "skipped: the official weights are loaded" in outputs
    assert "SKIPPED" not in outputs and "position" in outputs and "round trip OK" in outputs
    assert (tmp_path / "nb" / "samples" / "samples.npz").exists()


def test_committed_notebook_has_no_machine_paths():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    text = json.dumps([c.get("outputs") for c in code])
    found = re.findall(r"(?:/work/|/tmp/|/home/|/root/|/Users/|[A-Z]:\\\\)[^\s\"']*", text)
    assert not found, f"machine paths in the committed outputs: {found[:5]}"
