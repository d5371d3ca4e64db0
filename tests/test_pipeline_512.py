"""The 512-px pipeline end to end at tiny widths: teacher import (MaskGIT Flax checkpoint) -> stage 1 (32x32
proxy codes) -> stage 2 -> pretokenize -> generator -> sample, on the bundled photos, a few steps each.

The cost driver is the 512x512 image through the tiny conv VQGAN (teacher, pixel decoder) and the
discriminator; widths are minimal and batches 1-2 so the test stays CPU-cheap.
"""

import json

import jax
import numpy as np
import pytest

from titok_jax import checkpoint
from titok_jax.api import weights as weights_lib
from titok_jax.config import load, parse, presets
from titok_jax.models import registry
from titok_jax.steps import pipeline

pytestmark = pytest.mark.slow


def tiny_512_config(teacher_dir: str):
    c = presets.training_config("titok_tiny_512", "seed=0")
    c.stages = ("stage1", "stage2", "pretokenize", "generator", "sample")
    c.data = presets.data_config(source="photos", split="train", eval_split="eval", min_scale=0.5, num_threads=2)
    c.eval.batch_size = 1
    c.teacher.checkpoint = teacher_dir
    c.teacher.model = presets.as_config_dict(presets.MODELS["maskgit_vqgan_tiny_512"])
    c.discriminator = dict(hidden_channels=8, num_stages=1, num_groups=4)
    common = dict(num_steps=2, batch_size=1, warmup_steps=1, checkpoint_every=2, log_every=1, eval_every=0)
    c.stage1.update(common)
    c.stage2.update(dict(perceptual_weight=0.0, disc_start=1, **common))
    c.pretokenize.update(dict(shard_size=4, batch_size=2, flip=False))
    c.generator_train.update(dict(common, batch_size=4, preview_samples=False))
    c.sample.update(dict(classes="0,1", per_class=1, batch_size=2))
    return parse(c)


def test_tiny_512_pipeline_end_to_end(tmp_path):
    # teacher import: a tiny 512-shaped MaskGIT-VQGAN in MaskGIT's Flax checkpoint format -> Orbax
    vq = load("maskgit_vqgan_tiny_512")
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: (0.2 * rng.standard_normal(a.shape)).astype(np.float32),
                          registry.tokenizer(vq).abstract())  # fmt: skip
    _, paths = weights_lib.export_weights(vq, params, str(tmp_path / "maskgit"), fmt="maskgit_jax")
    _, imported, meta = weights_lib.import_weights(vq, paths["weights"])
    assert meta["source_format"] == "maskgit_jax"
    checkpoint.save_params(str(tmp_path / "teacher"), imported, meta)

    run = tiny_512_config(str(tmp_path / "teacher"))
    work = tmp_path / "run"
    summaries = pipeline.run_all(run, str(work))
    names = [s["stage"] for s in summaries]
    assert names == ["stage1", "stage2", "pretokenize", "generator", "sample"]
    s1, s2, pre, gen, _ = summaries
    assert s1["steps"] == s2["steps"] == gen["steps"] == 2
    for s in (s1, s2, gen):
        assert all(np.isfinite(v) for k, v in s.items() if k.startswith("loss"))
    assert (work / "stage1" / "recon_final.png").exists() and (work / "stage2" / "recon_final.png").exists()

    # the stage-1 model predicts the teacher's 32x32 proxy codes; stage 2 carries the teacher's pixel decoder
    s1_params = checkpoint.load_params(str(work / "stage1" / "final"))
    assert s1_params["decoder"]["ffn_2"]["kernel"].shape[-1] == 64  # the tiny teacher's codebook
    assert s1_params["decoder"]["positional_embedding"].shape[0] == 32 * 32 + 1
    s2_params = checkpoint.load_params(str(work / "stage2" / "final"))
    assert set(s2_params) >= {"pixel_decoder", "pixel_quantize"}

    ids = np.load(work / "sample" / "tokens.npy")
    samples = np.load(work / "sample" / "samples.npz")["arr_0"]
    assert ids.shape == (2, 8) and ids.min() >= 0 and ids.max() < 64
    assert samples.shape == (2, 512, 512, 3) and samples.dtype == np.uint8
    assert json.loads((work / "generator" / "DONE.json").read_text())["stage"] == "generator"
    assert pre["stage"] == "pretokenize"
