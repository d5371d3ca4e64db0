"""The generator stage: official masking / loss, and pretokenize -> generator -> sample through main.run."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from titok_jax import checkpoint
from titok_jax.config import parse, presets
from titok_jax.data import PhotosSource
from titok_jax.data.tokens import TokenSource
from titok_jax.models import registry
from titok_jax.steps import pipeline
from titok_jax.train.stages import generator as gs


def test_mask_tokens_follows_the_arccos_schedule():
    b, seq_len, k = 512, 16, 64
    tokens = jax.random.randint(jax.random.key(0), (b, seq_len), 0, k)
    inputs, mask = gs.mask_tokens(tokens, jax.random.key(1), k)
    inputs, mask, tokens = map(np.asarray, (inputs, mask, tokens))
    n = mask.sum(-1)
    assert n.min() >= 1 and n.max() <= seq_len
    np.testing.assert_array_equal(inputs[mask], k)
    np.testing.assert_array_equal(inputs[~mask], tokens[~mask])
    # ratio = arccos(t) / (pi/2) with t ~ U(0,1): E[ratio] = 2/pi * E[arccos t] = 2/pi * 1 = 0.6366
    assert abs(n.mean() / seq_len - 2 / math.pi) < 0.03
    # the count equals round(L * ratio) for the t the function drew: reproduce it
    r_t, _ = jax.random.split(jax.random.key(1))
    t = np.asarray(jax.random.uniform(r_t, (b,)))
    want = np.maximum(np.round(seq_len * np.clip(np.arccos(t) / (math.pi / 2), 1e-6, 1)), 1)
    np.testing.assert_array_equal(n, want)


def test_mlm_loss_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    b, seq_len, k = 3, 5, 7
    logits = rng.normal(size=(b, seq_len, k)).astype(np.float32)
    targets = rng.integers(0, k, (b, seq_len))
    mask = rng.random((b, seq_len)) < 0.5
    loss, acc = gs.mlm_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask), 0.1, 0.1)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    smooth = np.full((b, seq_len, k), 0.1 / k) + 0.9 * np.eye(k)[targets]  # PyTorch label_smoothing semantics
    ce = -(smooth * logp).sum(-1)
    w = np.where(mask, 1.0, 0.1)
    np.testing.assert_allclose(float(loss), (w * ce).sum() / (w.sum() + 1e-8), rtol=1e-6)
    correct = (logits.argmax(-1) == targets) & mask
    np.testing.assert_allclose(float(acc), correct.sum() / mask.sum(), rtol=1e-6)


def _pipeline_config(steps=6):
    c = presets.training_config("titok_tiny", "seed=0")
    c.stages = ("pretokenize", "generator", "sample")
    c.data = presets.data_config(source="photos", split="train", eval_split="eval", num_threads=2)
    c.eval.batch_size = 8
    c.pretokenize.update(dict(shard_size=4, batch_size=4))
    c.generator_train.update(
        dict(num_steps=steps, batch_size=8, warmup_steps=2, checkpoint_every=3, log_every=2, eval_every=0, lr=1e-3)
    )
    c.sample.update(dict(classes="0,1,2", per_class=2, batch_size=8))
    return c


@pytest.mark.slow
def test_pretokenize_generator_sample_pipeline(tmp_path):
    config = parse(_pipeline_config())
    handle = registry.tokenizer(config)
    params = handle.init(jax.random.key(0))
    checkpoint.save_params(str(tmp_path / "stage2" / "final"), params, {"stage": "stage2"})

    summaries = pipeline.run_all(config, str(tmp_path))
    names = [s["stage"] for s in summaries]
    assert names == ["pretokenize", "generator", "sample"]
    gen = summaries[1]
    assert gen["steps"] == 6 and np.isfinite(gen["loss_after"]) and "masked_acc_after" in gen
    assert (tmp_path / "generator" / "samples_final.png").exists()

    ids = np.load(tmp_path / "sample" / "tokens.npy")
    labels = np.load(tmp_path / "sample" / "labels.npy")
    samples = np.load(tmp_path / "sample" / "samples.npz")["arr_0"]
    assert ids.shape == (6, 8) and ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 64
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
    assert samples.shape == (6, 64, 64, 3) and samples.dtype == np.uint8
    assert (tmp_path / "sample" / "grid.png").exists()
    # the summary: codebook use of the pre-tokenized set; the class match of the samples (photos source),
    # whose grid rows start with the class's photo (3 rows of 1 photo + 2 samples, 64 px + 2 px padding)
    pre, sam = summaries[0], summaries[2]
    tokens = TokenSource(str(tmp_path / "pretokenize")).tokens
    assert pre["distinct_ids"] == len(np.unique(tokens)) and 1.0 <= pre["perplexity"] <= pre["distinct_ids"]
    assert [r["class"] for r in sam["class_match"]["classes"]] == [0, 1, 2] and 0 <= sam["class_match"]["matched"] <= 3
    assert sam["class_names"][:3] == list(PhotosSource().photos[:3])
    assert Image.open(tmp_path / "sample" / "grid.png").size == (2 + 3 * 66, 2 + 3 * 66)

    # every step is marked done and skipped on a rerun; the generator's final params load by themselves
    for n in names:
        assert json.loads((tmp_path / n / "DONE.json").read_text())["stage"] == n
    again = pipeline.run_all(config, str(tmp_path))
    assert [s["stage"] for s in again] == names
    gparams = checkpoint.load_params(str(tmp_path / "generator" / "final"))
    want = gs.GeneratorStage(config).init_params(jax.random.key(0))
    assert jax.tree.structure(gparams) == jax.tree.structure(want)
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(gparams), jax.tree.leaves(want)))


def test_generator_stage_rejects_a_mismatched_generator():
    config = _pipeline_config()
    config.generator.model.codebook_size = 128
    with pytest.raises(ValueError, match="does not fit the tokenizer"):
        gs.GeneratorStage(parse(config))


def test_generator_stage_needs_pretokenized_data(tmp_path):
    config = _pipeline_config()
    stage = gs.GeneratorStage(parse(config))
    with pytest.raises(ValueError, match="manifest|pretokeni"):
        stage.loaders(str(tmp_path), 0, 1)
