"""End-to-end command lines: port import/export and the reconstruct round trip (subprocesses)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, fixture_dir, huge_png, load_st

pytestmark = pytest.mark.slow


def run(*args, expect=0):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == expect, f"exit {p.returncode}\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("port") / "ckpt"
    weights = fixture_dir("tiny", "titok_tiny") / "state_dict.safetensors"
    p = run("titok_jax.cli.port", "import", "--config=configs/titok_tiny.py", f"--weights={weights}", f"--out={out}")
    assert "163 tensors read" in p.stdout and "done in" in p.stdout
    return out


def test_import_then_export_is_identity(imported, tmp_path):
    run(
        "titok_jax.cli.port",
        "export",
        "--config=configs/titok_tiny.py",
        f"--checkpoint={imported}",
        f"--out={tmp_path}",
    )
    ours = load_st(tmp_path / "model.safetensors")
    ref = load_st(fixture_dir("tiny", "titok_tiny") / "state_dict.safetensors")
    assert set(ours) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)
    # custom sizes: no official config dict can describe them; config.json describes them for titok_jax
    assert set(json.loads((tmp_path / "config.json").read_text())) == {"titok_jax"}


def test_reconstruct_round_trip(imported, tmp_path):
    p = run("titok_jax.cli.reconstruct", "--config=configs/titok_tiny.py", f"--checkpoint={imported}",
            "--images", "skimage:astronaut", "skimage:coffee", f"--out={tmp_path}")  # fmt: skip
    ids, recon = np.load(tmp_path / "ids.npy"), np.load(tmp_path / "recon.npy")
    assert ids.dtype == np.int32 and ids.shape == (2, 8) and ids.min() >= 0 and ids.max() < 64
    assert recon.dtype == np.float32 and recon.shape == (2, 64, 64, 3)
    assert recon.min() >= 0.0 and recon.max() <= 1.0
    from PIL import Image

    grid = Image.open(tmp_path / "grid.png")
    assert grid.size == (2 + 2 * 66, 2 + 2 * 66)
    assert (tmp_path / "astronaut.png").exists() and "mean PSNR" in p.stdout
    # Same ids as the Python API on the same preprocessed images.
    from titok_jax.api import Tokenizer
    from titok_jax.images import load_images

    tok = Tokenizer.from_checkpoint("configs/titok_tiny.py", str(imported))
    _, x = load_images(["skimage:astronaut", "skimage:coffee"], 64)
    api_ids, api_recon = tok.reconstruct(x)
    np.testing.assert_array_equal(api_ids, ids)
    # The command line picks XLA's CPU matmul backend (parallel.CPU_MATMUL_DEFAULT) while this test process
    # keeps jaxlib's own default, so float32 sums run in another order: pixels agree to 1e-4, ids exactly.
    np.testing.assert_allclose(api_recon, recon, atol=1e-4)


def test_reconstruct_from_weights_file_with_clashing_names(tmp_path):
    from PIL import Image

    weights = fixture_dir("tiny", "titok_tiny") / "state_dict.safetensors"
    rng = np.random.default_rng(0)
    inputs = [tmp_path / "in" / n for n in ("a/x.png", "b/x.png", "c/grid.png")]
    for f in inputs:
        f.parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(f)
    out = tmp_path / "out"
    run("titok_jax.cli.reconstruct", "--config=configs/titok_tiny.py", f"--weights={weights}",
        "--images=skimage:rocket", *map(str, inputs), f"--out={out}")  # fmt: skip
    assert np.load(out / "ids.npy").shape == (4, 8)
    assert sorted(p.name for p in out.glob("*.png")) == ["a_x.png", "b_x.png", "c_grid.png", "grid.png", "rocket.png"]
    assert Image.open(out / "grid.png").size == (2 + 4 * 66, 2 + 2 * 66)  # the overview, not an input named grid


def test_hub_folder_export_and_reimport(tmp_path):
    """A standard-size model: export writes config.json + model.safetensors; re-import checks config.json."""
    out = tmp_path / "hub"
    run("titok_jax.cli.port", "export", "--config=configs/titok_s128.py", "--random_init=3", f"--out={out}")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["vq_model"]["num_latent_tokens"] == 128 and cfg["dataset"]["preprocessing"]["crop_size"] == 256
    manifest = json.loads((fixture_dir("manifests") / "titok_s128.json").read_text())["state_dict"]
    sd = load_st(out / "model.safetensors")
    assert {k: list(v.shape) for k, v in sd.items()} == {k: v[0] for k, v in manifest.items()}
    # Importing that folder with a config of another model fails on config.json, naming the difference.
    p = run("titok_jax.cli.port", "import", "--config=configs/titok_b64.py", f"--weights={out}",
            f"--out={tmp_path / 'bad'}", expect=2)  # fmt: skip
    assert "config.json next to the weights describes another model" in p.stderr
    assert "num_latent_tokens: folder 128 vs config 64" in p.stderr
    run(
        "titok_jax.cli.port", "import", "--config=configs/titok_s128.py", f"--weights={out}", f"--out={tmp_path / 'ok'}"
    )


def test_cli_errors(tmp_path):
    weights = fixture_dir("tiny", "titok_tiny") / "state_dict.safetensors"
    p = run("titok_jax.cli.port", "import", "--config=configs/titok_l32.py", f"--weights={weights}",
            f"--out={tmp_path / 'x'}", expect=2)  # fmt: skip
    assert "shape mismatch at 'latent_tokens'" in p.stderr and "Check that --config" in p.stderr
    p = run("titok_jax.cli.port", "export", "--config=configs/titok_tiny.py", f"--out={tmp_path / 'y'}", expect=1)
    assert "exactly one of --checkpoint, --random_init" in p.stderr
    p = run("titok_jax.cli.port", "--config=configs/titok_tiny.py", f"--out={tmp_path / 'y'}", expect=1)
    assert "expected a command: import or export" in p.stderr
    p = run("titok_jax.cli.reconstruct", "--config=configs/titok_tiny.py", "--random_init=0",
            f"--images={tmp_path / 'missing.png'}", f"--out={tmp_path / 'z'}", expect=2)  # fmt: skip
    assert "image not found" in p.stderr
    huge = tmp_path / "huge.png"
    huge_png(huge, 20000, 20000)
    p = run("titok_jax.cli.reconstruct", "--config=configs/titok_tiny.py", "--random_init=0", f"--images={huge}",
            f"--out={tmp_path / 'z'}", expect=2)  # fmt: skip
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1 and "too large to read" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((6).to_bytes(8, "little") + b"[1, 2]" + b"\0" * 8)
    p = run("titok_jax.cli.port", "import", "--config=configs/titok_tiny.py", f"--weights={bad}",
            f"--out={tmp_path / 'w'}", expect=2)  # fmt: skip
    assert "error:" in p.stderr and "corrupt safetensors header" in p.stderr and "Traceback" not in p.stderr
    p = run("titok_jax.cli.port", "--help", expect=1)  # absl exits 1 after printing help
    assert "--random_init" in p.stdout and "import" in p.stdout


def test_maskgit_jax_checkpoint_import_cli(tmp_path):
    """The original MaskGIT Flax checkpoint -> Orbax -> PyTorch state_dict (what the official .bin holds)."""
    ckpt = fixture_dir("tiny", "maskgit_jax_vqgan_tiny") / "tokenizer_tiny_checkpoint"
    cfg = tmp_path / "vqgan_jax_tiny.py"
    cfg.write_text(
        "from titok_jax.config import presets\nfrom titok_jax.config.models import VQGANConfig\n"
        "def get_config(arg=None):\n"
        "    c = presets.tokenizer_config('maskgit_vqgan', arg)\n"
        "    vq = VQGANConfig(hidden_channels=32, channel_mult=(1, 1, 2), z_channels=32, codebook_size=64)\n"
        "    c.model = vq.to_dict()\n"
        "    c.image_size = 32\n    return c\n"
    )
    run("titok_jax.cli.port", "import", f"--config={cfg}", f"--weights={ckpt}", f"--out={tmp_path / 'ck'}")
    run(
        "titok_jax.cli.port", "export", f"--config={cfg}", f"--checkpoint={tmp_path / 'ck'}", f"--out={tmp_path / 'pt'}"
    )
    sd = load_st(tmp_path / "pt" / "model.safetensors")
    assert len(sd) == 114 and sd["decoder.up.2.upsample_conv.weight"].shape == (64, 64, 3, 3)
