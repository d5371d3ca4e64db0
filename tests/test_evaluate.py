"""The evaluate step: tokenizer metrics (rFID, IS, PSNR, SSIM, usage) and sample metrics (gFID, IS).

The Inception weights here are a random initialisation saved in the pt_inception key layout (the real
file cannot be downloaded in CI): the numbers are meaningless, the plumbing — weight file -> features ->
float64 statistics -> Frechet distance, uint8 truncation, gathering, results file — is what is tested.
"""

import json
import logging

import jax
import numpy as np
import pytest
from logcapture import Lines
from safetensors.numpy import save_file

from titok_jax import checkpoint, logs
from titok_jax.config import parse, presets
from titok_jax.errors import InputError
from titok_jax.images import to_uint8
from titok_jax.models import inception, inception_map, registry
from titok_jax.steps import evaluate, pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    params = jax.jit(inception.init_params)(jax.random.key(0))
    state = inception_map.torch_name_map().to_external(params)
    path = tmp_path_factory.mktemp("inc") / "pt_inception_random.safetensors"
    save_file(state, str(path))
    return str(path)


def test_evaluate_step_through_the_pipeline(tmp_path, inception_file, monkeypatch):
    monkeypatch.setattr(logs, "_terminal", lambda: False)  # progress as log lines (log files, notebooks, CI)
    lines, progress_log = Lines(), logging.getLogger("titok_jax.progress")
    progress_log.addHandler(lines)
    monkeypatch.setattr(progress_log, "level", logging.INFO)
    config = presets.training_config("titok_tiny")
    config.stages = ("evaluate",)
    config.data = presets.data_config(source="photos", split="train", eval_split="eval")
    handle = registry.tokenizer(parse(config))
    checkpoint.save_params(str(tmp_path / "stage2" / "final"), handle.init(jax.random.key(0)), {"stage": "stage2"})
    samples = np.random.default_rng(1).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    np.savez(tmp_path / "ref.npz", arr_0=samples[::-1].copy())
    config.evaluate.update(
        dict(inception_weights=inception_file, max_images=6, batch_size=4, samples=str(tmp_path / "samples.npz"),
             reference=str(tmp_path / "ref.npz"))
    )  # fmt: skip
    try:
        (summary,) = pipeline.run_all(parse(config), str(tmp_path))
    finally:
        progress_log.removeHandler(lines)
    # progress with the expected total, on the reconstructions and on the samples
    assert any(line.startswith("[evaluate] 6/6 img (100%)") for line in lines.lines), lines.lines
    assert any(line.startswith("[evaluate samples] 6/6 img (100%)") for line in lines.lines), lines.lines
    res = json.loads((tmp_path / "evaluate" / "results.json").read_text())
    assert summary["num_images"] == res["num_images"] == 6  # batches of 4: the short last one counts too
    for key in ("rfid", "inception_score_recon", "psnr", "ssim", "codebook_usage", "codebook_entropy_bits"):
        assert np.isfinite(res[key]), key
    # the same images in another order: identical statistics, gFID ~ 0; IS of 6 images is in [1, 6]
    assert abs(res["samples"]["gfid"]) < 1e-6 and 1.0 <= res["samples"]["inception_score"] <= 6.0
    # PSNR is that of the uint8-truncated images (the official evaluator's conversion)
    assert res["psnr"] < 60


def test_missing_inception_weights_fail_clearly(tmp_path):
    config = presets.training_config("titok_tiny")
    config.evaluate.inception_weights = str(tmp_path / "nope.pth")
    with pytest.raises(InputError, match="pt_inception-2015-12-05"):
        evaluate.run(parse(config), str(tmp_path))


def test_uint8_conversion_truncates():
    np.testing.assert_array_equal(to_uint8(np.array([0.99999, 1.5, -0.1, 0.5])), [254, 255, 0, 127])
