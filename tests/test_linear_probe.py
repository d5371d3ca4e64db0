"""Linear probing (``titok_jax.steps.linear_probe``) on a tiny labelled folder dataset.

Three classes of 72x80 noisy images that differ only in their mean colour (linearly separable), a
randomly initialised titok_tiny saved as if it were ``WORKDIR/stage1/final``. Checks: the probe
separates the classes, the 'encoder' features equal an independent forward pass of the encoder
(and feed ``conv_out`` exactly like the model does, legacy reshape included), the feature shards of
two processes cover the split exactly once, and the error messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, assert_parity
from PIL import Image

from titok_jax import checkpoint, parallel, workdir
from titok_jax.config import ConfigError, parse, presets, with_changes
from titok_jax.config.sections import LinearProbeConfig
from titok_jax.errors import InputError
from titok_jax.evaluation import linear_probe as lpe
from titok_jax.models import registry
from titok_jax.models.layers import TORCH_LN_EPS, Transformer
from titok_jax.models.titok import init_params
from titok_jax.steps import linear_probe as lp

COLOURS = {"blue": (50, 60, 210), "green": (40, 190, 60), "red": (200, 40, 40)}  # labels 0, 1, 2 (sorted)
N_TRAIN, N_EVAL = 8, 5  # per class: 24 train images (3 batches of 8), 15 eval (1 batch + a remainder of 7)


def _write_images(root, per_class, seed, flat=False):
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        folder = root if flat else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.asarray(rgb, np.float64)[None, None] + rng.normal(0.0, 40.0, (72, 80, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{name}_{i}.png")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("lp")
    _write_images(base / "train", N_TRAIN, seed=0)
    _write_images(base / "eval", N_EVAL, seed=1)
    config = presets.training_config("titok_tiny")
    config.data = presets.data_config(source="folder", path=str(base / "train"), eval_path=str(base / "eval"),
                                      num_threads=0)  # fmt: skip
    config.linear_probe.update(dict(feature_batch_size=8, epochs=30, batch_size=16, lr=1e-2))
    config = parse(config)
    handle = registry.tokenizer(config)
    # A stage-1 tokenizer (no VQGAN pixel decoder: cheaper to build; the probe reads only the encoder side).
    stage1_cfg = config.tokenizer.replace(finetune_decoder=False)
    params = jax.jit(lambda r: init_params(stage1_cfg, r))(jax.random.key(0))
    work = base / "work"
    checkpoint.save_params(workdir.final_dir(str(work), "stage1"), params, {"stage": "stage1"})
    return dict(base=base, config=config, handle=handle, params=params, workdir=str(work))


def _images(n=4, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, 64, 64, 3), jnp.float32)


def _config(setup, **probe):
    return with_changes(setup["config"], linear_probe=probe)


def test_probe_separates_colour_classes(setup):
    summary = lp.run(_config(setup, feature="encoder"), setup["workdir"])
    assert (summary["num_train"], summary["num_eval"], summary["num_classes"]) == (24, 15, 3)
    assert summary["feature_dim"] == 64 and summary["top5_k"] == 3
    assert summary["train_top1"] == 1.0
    assert summary["top1"] >= 0.9, summary
    assert summary["tokenizer"] == workdir.final_dir(setup["workdir"], "stage1")
    with open(os.path.join(setup["workdir"], "linear_probe", "results.json")) as f:
        results = json.load(f)
    assert results["top1"] == summary["top1"] and results["settings"]["epochs"] == 30
    assert len(results["loss_history"]) == 30 and results["loss_history"][-1] < 0.5 * results["loss_history"][0]


def test_latent_features_probe(setup):
    summary = lp.run(_config(setup, feature="latent"), setup["workdir"])
    assert summary["feature_dim"] == 12 and summary["num_eval"] == 15
    assert summary["top1"] >= 0.8, summary


def _ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + TORCH_LN_EPS) * p["scale"] + p["bias"]


def test_encoder_features_match_an_independent_forward(setup):
    cfg, params = setup["handle"].config, setup["params"]
    module = setup["handle"].module()
    x = _images()
    w, depth, heads = cfg.encoder_vit
    g, k, p = cfg.grid_size, cfg.num_latent_tokens, cfg.patch_size
    enc = params["encoder"]
    # Patch embedding as a matmul over row-major p x p patches (an independent path from nn.Conv).
    patches = x.reshape(4, g, p, g, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(4, g * g, p * p * 3)
    h = patches @ enc["patch_embed"]["kernel"].reshape(p * p * 3, w) + enc["patch_embed"]["bias"]
    h = jnp.concatenate([jnp.broadcast_to(enc["class_embedding"], (4, 1, w)), h], axis=1) + enc["positional_embedding"]
    lat = params["latent_tokens"] + enc["latent_token_positional_embedding"]
    h = jnp.concatenate([h, jnp.broadcast_to(lat, (4, k, w))], axis=1)
    h = Transformer(w, depth, heads, cfg.mlp_ratio).apply({"params": enc["transformer"]}, _ln(h, enc["ln_pre"]))
    tokens = _ln(h, enc["ln_post"])[:, 1 + g * g :]  # [cls | g*g patches | K latents]
    got_tokens = lpe.encoder_token_features(module, params, x)
    assert got_tokens.shape == (4, k, w)
    err = assert_parity(got_tokens, tokens, "encoder ln_post tokens")
    feats = lpe.extract_features(module, params, x, "encoder")
    assert feats.shape == (4, w)
    assert_parity(feats, tokens.mean(axis=1), "encoder features")
    # The captured tokens are exactly conv_out's input: the legacy reshape (official_titok.md 1.3) of them
    # through conv_out reproduces encode_continuous.
    z = module.apply({"params": params}, x, method=module.encode_continuous)
    s = jnp.swapaxes(got_tokens.reshape(4, w, k), 1, 2)
    assert_parity(s @ enc["conv_out"]["kernel"] + enc["conv_out"]["bias"], z, "conv_out(legacy reshape(tokens))")
    lat_feats = lpe.extract_features(module, params, x, "latent")
    assert lat_feats.shape == (4, cfg.token_size)
    assert_parity(lat_feats, z.mean(axis=1), "latent features")
    assert err < 1e-4


def test_two_process_shards_cover_the_split_once(setup):
    module = setup["handle"].module()
    fn = parallel.data_parallel(lambda p, x: lpe.extract_features(module, p, x, "latent"), setup["params"], 8,
                                item_shape=(64, 64, 3))  # fmt: skip
    common = dict(train=True, image_size=64, batch_size=8)
    one = lp.local_features(fn, setup["config"].data, **common)
    parts = [lp.local_features(fn, setup["config"].data, process_index=i, process_count=2, **common) for i in (0, 1)]
    assert [len(q["labels"]) for q in parts] == [12, 12]  # one global batch of 16 + a remainder of 8
    pos = np.concatenate([q["positions"] for q in parts])
    order = np.argsort(pos)
    np.testing.assert_array_equal(one["positions"], np.arange(24))
    np.testing.assert_array_equal(pos[order], np.arange(24))
    np.testing.assert_array_equal(np.concatenate([q["labels"] for q in parts])[order], one["labels"])
    np.testing.assert_array_equal(one["labels"], np.repeat([0, 1, 2], N_TRAIN))
    assert_parity(np.concatenate([q["features"] for q in parts])[order], one["features"], "sharded features")


def test_errors_are_clear(setup, tmp_path):
    flat = tmp_path / "flat"
    _write_images(flat, 2, seed=2, flat=True)
    c = with_changes(setup["config"], data={"path": str(flat), "eval_path": str(flat)})
    with pytest.raises(lpe.LinearProbeError, match="needs class labels.*sub-folder per class"):
        lp.run(c, setup["workdir"])
    with pytest.raises(InputError, match="no tokenizer checkpoint.*stage2.*single_stage.*stage1.*"
                                         "tokenizer_checkpoint.*tokenizer_weights"):  # fmt: skip
        lp.run(_config(setup), str(tmp_path / "empty_workdir"))
    with pytest.raises(InputError, match="tokenizer_checkpoint=.*nope.*not found"):
        lp.run(_config(setup, tokenizer_checkpoint=str(tmp_path / "nope")), setup["workdir"])
    with pytest.raises(ConfigError, match="feature must be one of"):
        _config(setup, feature="pixels")
    with pytest.raises(ConfigError, match=r"unknown keys \['linear_probe.epochz'\]"):
        parse(dict(setup["config"].to_dict(), linear_probe={"epochz": 3}))
    with pytest.raises(ConfigError, match="feature_batch_size=3 must be a positive multiple"):
        parallel.data_parallel(
            lambda p, x: x, setup["params"], 3, item_shape=(64, 64, 3), devices=jax.local_devices() * 2,
            what="config.linear_probe.feature_batch_size",
        )  # fmt: skip
    assert setup["config"].linear_probe.replace(feature_batch_size=64, epochs=100, batch_size=256, lr=1e-3) == (
        LinearProbeConfig()
    )


def test_cli_reports_missing_tokenizer(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "titok_jax.cli.linear_probe", "--config=configs/titok_tiny.py", f"--workdir={tmp_path}"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr[-3000:]
    assert "error: no tokenizer checkpoint" in p.stderr and "stage1" in p.stderr


def test_default_tokenizer_is_the_latest_finished_stage(tmp_path):
    for name in ("stage1", "single_stage"):
        os.makedirs(workdir.final_dir(str(tmp_path), name))
    assert workdir.tokenizer_checkpoint(str(tmp_path)) == workdir.final_dir(str(tmp_path), "single_stage")
    os.makedirs(workdir.final_dir(str(tmp_path), "stage2"))
    assert workdir.tokenizer_checkpoint(str(tmp_path)) == workdir.final_dir(str(tmp_path), "stage2")
    explicit = str(tmp_path / "stage1" / "final")
    assert workdir.tokenizer_checkpoint(str(tmp_path), explicit) == explicit
