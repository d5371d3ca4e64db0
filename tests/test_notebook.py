"""The Colab notebook runs top to bottom (offline demo path, tiny scale): any cell error fails CI."""

import os

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

NOTEBOOK = REPO / "notebooks" / "titok_jax_colab.ipynb"


def test_notebook_executes(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TITOK_NB_WORKDIR", str(tmp_path / "nb"))
    monkeypatch.setenv("TITOK_NB_STEPS_SCALE", os.environ.get("TITOK_NB_STEPS_SCALE", "0.02"))
    monkeypatch.setenv("TITOK_NB_TOKENIZER_WEIGHTS", "")
    monkeypatch.setenv("TITOK_NB_GENERATOR_WEIGHTS", "")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "token ids" in outputs and "round trip OK" in outputs
    assert (tmp_path / "nb" / "samples" / "samples.npz").exists()
    assert (tmp_path / "nb" / "export_pytorch" / "model.safetensors").exists()
