"""bfloat16 compute, and inference/porting without TensorFlow."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, fixture_dir, load_st
from titok_fixtures import TITOK_TINY

from titok_jax.models.titok import TiTok, abstract_params
from titok_jax.models.titok_map import torch_name_map


def test_bfloat16_compute_keeps_float32_params_and_quantizer():
    d = fixture_dir("tiny", "titok_tiny")
    params = torch_name_map(TITOK_TINY).to_flax(load_st(d / "state_dict.safetensors"), abstract_params(TITOK_TINY))
    x = jnp.asarray(load_st(d / "inputs.safetensors")["images_nhwc"])
    out = load_st(d / "outputs.safetensors")
    m16, m32 = TiTok(TITOK_TINY, dtype=jnp.bfloat16), TiTok(TITOK_TINY)
    z16, res16 = m16.apply({"params": params}, x, method=m16.encode)
    z32, res32 = m32.apply({"params": params}, x, method=m32.encode)
    assert z16.dtype == jnp.float32 and res16["quantizer_loss"].dtype == jnp.float32
    # bf16 has ~3 significant digits: latents agree loosely, most ids survive.
    cont16 = m16.apply({"params": params}, x, method=m16.encode_continuous)
    assert float(jnp.max(jnp.abs(cont16 - m32.apply({"params": params}, x, method=m32.encode_continuous)))) < 0.1
    agree = float(np.mean(np.asarray(res16["ids"]) == out["encode.min_encoding_indices"][:, 0]))
    assert agree >= 0.75
    pix = m16.apply({"params": params}, z32, method=m16.decode)
    assert pix.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(pix)))
    # Parameters are never cast: gradients w.r.t. float32 params come back float32.
    g = jax.grad(lambda p: m16.apply({"params": p}, x)[0].mean())(params)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(g))


def test_codebook_usage_is_reported():
    d = fixture_dir("tiny", "titok_tiny")
    params = torch_name_map(TITOK_TINY).to_flax(load_st(d / "state_dict.safetensors"), abstract_params(TITOK_TINY))
    m = TiTok(TITOK_TINY)
    _, res = m.apply({"params": params}, jnp.asarray(load_st(d / "inputs.safetensors")["images_nhwc"]), method=m.encode)
    distinct = len(np.unique(np.asarray(res["ids"])))
    np.testing.assert_allclose(res["codebook_usage"], distinct / TITOK_TINY.codebook_size)
    assert 1.0 <= float(res["codebook_perplexity"]) <= distinct


@pytest.mark.parametrize(
    "modules",
    [
        # Library modules together; each command line alone (each defines its own absl flags).
        "titok_jax.models, titok_jax.models.registry, titok_jax.api, titok_jax.checkpoint, titok_jax.config",
        "titok_jax.sampling, titok_jax.models.generator_map, titok_jax.models.inception_map, "
        "titok_jax.evaluation, titok_jax.data.tokens, titok_jax.train.stages, titok_jax.steps.pipeline",
        "titok_jax.cli.train",
        "titok_jax.cli.port",
        "titok_jax.cli.reconstruct",
        "titok_jax.cli.sample",
        "titok_jax.cli.pretokenize",
        "titok_jax.cli.evaluate",
        "titok_jax.cli.linear_probe",
    ],
)
def test_inference_and_porting_import_without_tensorflow(modules):
    code = (
        "import sys\n"
        f"import {modules}\n"
        "bad = [m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_benchmark_imports_without_tensorflow_or_grain():
    """The GPU machines have neither TensorFlow nor grain: the benchmark must not need them (Orbax, a pure-Python
    JAX package of the runtime set, comes in with the weights loader that every command shares)."""
    code = (
        "import sys\n"
        "import titok_jax.cli.bench, titok_jax.benchmarks.inference\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'grain', 'tensorflow_datasets')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]
