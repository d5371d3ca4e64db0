"""MaskGIT generator parity with the official PyTorch models (tests/fixtures/official/tiny/generator_*).

Each fixture: official random weights -> our name map -> our ImageBert / UViTBert on the same ids and
labels; logits with the class kept (``cond_drop_prob=0``) and replaced by the null class
(``cond_drop_prob=1``) within 1e-5 absolute. Then the name map itself: export reproduces the official
state_dict bit-exactly in the official key order, extra transformers buffers are ignored, wrong
shapes are reported by key, and hub folders round-trip through the port API and CLI.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, fixture_dir, load_st

from titok_jax.config import official, presets
from titok_jax.models import generator as gen_lib
from titok_jax.models import generator_map
from titok_jax.porting.mapping import PortError

FIXTURES = {"generator_imagebert_tiny": "ViT", "generator_uvit_tiny": "UViT"}


def fixture_config(name) -> gen_lib.GeneratorConfig:
    spec = json.loads((fixture_dir("tiny", name) / "config.json").read_text())
    return official.generator_from_official(spec["config"])


def load(name):
    d = fixture_dir("tiny", name)
    cfg = fixture_config(name)
    sd = load_st(d / "state_dict.safetensors")
    params = generator_map.torch_name_map(cfg).to_flax(sd, gen_lib.abstract_params(cfg))
    inp = load_st(d / "inputs.safetensors")
    ids, labels = jnp.asarray(inp["input_ids"], jnp.int32), jnp.asarray(inp["condition"], jnp.int32)
    return cfg, params, sd, ids, labels, load_st(d / "outputs.safetensors")


def strict(ours, ref, name, atol=1e-5):
    err = float(np.max(np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64))))
    assert np.shape(ours) == np.shape(ref), f"{name}: shape {np.shape(ours)} != {np.shape(ref)}"
    assert err <= atol, f"{name}: max|diff| {err:.3g} > {atol}"
    return err


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_config(name):
    cfg = fixture_config(name)
    assert cfg.model_type == FIXTURES[name]
    assert (cfg.codebook_size, cfg.image_seq_len, cfg.condition_num_classes) == (64, 8, 10)
    assert (cfg.mask_token_id, cfg.null_class_id, cfg.vocab_size) == (64, 75, 76)
    if name == "generator_imagebert_tiny":
        assert cfg == presets.GENERATORS["titok_tiny"]  # the tiny preset is the fixture's shape


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_logits_parity(name):
    cfg, params, _, ids, labels, out = load(name)
    m = gen_lib.build(cfg)
    v = {"params": params}
    b = ids.shape[0]
    cond = m.apply(v, ids, labels, jnp.zeros((b,), bool))
    uncond = m.apply(v, ids, labels, jnp.ones((b,), bool))
    assert cond.dtype == jnp.float32 and cond.shape == (b, cfg.image_seq_len, cfg.codebook_size)
    strict(cond, out["logits_cond"], "logits_cond")
    strict(uncond, out["logits_uncond"], "logits_uncond")
    # per-sample drop flags; labels of dropped samples do not matter
    mixed = m.apply(v, ids, labels.at[0].set(3), jnp.asarray([True, False]))
    strict(mixed[0], out["logits_uncond"][0], "mixed drop (sample 0: null class)")
    strict(mixed[1], out["logits_cond"][1], "mixed drop (sample 1: class)")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_bfloat16_compute(name):
    cfg, params, _, ids, labels, out = load(name)
    m = gen_lib.build(cfg, jnp.bfloat16)
    cond = m.apply({"params": params}, ids, labels, jnp.zeros((2,), bool))
    assert cond.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(cond - out["logits_cond"]))) < 0.1  # bf16 matmuls, f32 LN/softmax
    g = jax.grad(lambda p: m.apply({"params": p}, ids, labels, jnp.zeros((2,), bool)).mean())(params)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(g))


def test_dropout_only_in_training_and_only_imagebert():
    for name in sorted(FIXTURES):
        cfg, params, _, ids, labels, out = load(name)
        m = gen_lib.build(cfg)
        v, drop = {"params": params}, jnp.zeros((2,), bool)
        a = m.apply(v, ids, labels, drop, deterministic=False, rngs={"dropout": jax.random.key(0)})
        b = m.apply(v, ids, labels, drop, deterministic=False, rngs={"dropout": jax.random.key(1)})
        if cfg.model_type == "ViT":
            assert float(jnp.max(jnp.abs(a - b))) > 1e-3  # BERT dropout 0.1 is active
        else:
            strict(a, out["logits_cond"], "UViT has no dropout")
            np.testing.assert_array_equal(a, b)


def test_remat_is_numerically_identical():
    cfg, params, _, ids, labels, _ = load("generator_imagebert_tiny")
    a = gen_lib.build(cfg).apply({"params": params}, ids, labels, jnp.zeros((2,), bool))
    b = gen_lib.build(cfg, remat=True).apply({"params": params}, ids, labels, jnp.zeros((2,), bool))
    np.testing.assert_allclose(a, b, atol=1e-6)


def official_order(name, cfg):
    """The fixture's (alphabetical) safetensors keys in official module order: the full-size
    manifest's order restricted to the layers the tiny model has."""
    manifest = "generator_titok_b64" if cfg.model_type == "ViT" else "generator_titok_s128"
    keys = list(json.loads((fixture_dir("manifests") / f"{manifest}.json").read_text())["state_dict"])
    sd_keys = set(load_st(fixture_dir("tiny", name) / "state_dict.safetensors"))
    return [k for k in keys if k in sd_keys]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_export_is_the_official_state_dict(name):
    cfg, params, sd, *_ = load(name)
    nm = generator_map.torch_name_map(cfg)
    back = nm.to_external(params)
    assert list(back) == official_order(name, cfg)
    assert set(back) == set(sd) and len(back) == len(sd)
    for k in sd:
        assert back[k].dtype == np.float32 and back[k].shape == sd[k].shape, k
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_transformers_buffers_are_ignored():
    cfg, _, sd, ids, labels, out = load("generator_imagebert_tiny")
    sd = dict(sd)
    sd["model.embeddings.position_ids"] = np.arange(cfg.image_seq_len + 1, dtype=np.int64)[None]
    sd["model.embeddings.token_type_ids"] = np.zeros((1, cfg.image_seq_len + 1), np.int64)
    nm = generator_map.torch_name_map(cfg)
    params = nm.to_flax(sd, gen_lib.abstract_params(cfg))
    strict(gen_lib.build(cfg).apply({"params": params}, ids, labels, jnp.zeros((2,), bool)), out["logits_cond"], "cond")
    assert "model.embeddings.position_ids" not in nm.to_external(params)
    # the UViT map knows no such buffer: an unknown key is an error there
    ucfg, _, usd, *_ = load("generator_uvit_tiny")
    with pytest.raises(PortError, match="unexpected key"):
        generator_map.torch_name_map(ucfg).to_flax(
            dict(usd, **{"model.embeddings.position_ids": np.zeros((1, 9), np.int64)}), gen_lib.abstract_params(ucfg)
        )


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_wrong_shape_names_the_key(name):
    cfg, _, sd, *_ = load(name)
    key = "model.lm_head.weight" if cfg.model_type == "ViT" else "out_blocks.0.skip_linear.weight"
    bad = dict(sd, **{key: np.zeros((7, 5), np.float32)})
    with pytest.raises(PortError, match=f"shape mismatch at '{key}'") as e:
        generator_map.torch_name_map(cfg).to_flax(bad, gen_lib.abstract_params(cfg))
    assert "Check that --config" in str(e.value)
    # a generator of another size: many mismatches, reported by key
    other = cfg.replace(hidden_size=32)
    with pytest.raises(PortError, match="shape mismatch at"):
        generator_map.torch_name_map(other).to_flax(sd, gen_lib.abstract_params(other))
    missing = {k: v for k, v in sd.items() if not k.endswith("lm_head.bias")}
    with pytest.raises(PortError, match="1 missing key"):
        generator_map.torch_name_map(cfg).to_flax(missing, gen_lib.abstract_params(cfg))


def test_config_validation():
    with pytest.raises(ValueError, match="model_type must be one of"):
        gen_lib.GeneratorConfig(model_type="GPT")
    with pytest.raises(ValueError, match="not divisible by num_attention_heads"):
        gen_lib.GeneratorConfig(hidden_size=100, num_attention_heads=16)
    with pytest.raises(ValueError, match="unknown generator config keys"):
        gen_lib.GeneratorConfig.from_dict({"hidden": 3})
    cfg = presets.GENERATORS["titok_b64"]
    assert gen_lib.GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    m = gen_lib.build(presets.GENERATORS["titok_tiny"])
    v = {"params": gen_lib.abstract_params(presets.GENERATORS["titok_tiny"])}
    with pytest.raises(ValueError, match=r"input_ids must be \[B, 8\]"):
        jax.eval_shape(lambda p: m.apply(p, jnp.zeros((2, 9), jnp.int32), jnp.zeros(2, jnp.int32), jnp.zeros(2)), v)


def test_hub_folder_api_round_trip(tmp_path):
    """export_generator_weights -> model.safetensors + config.json; re-import checks config.json."""
    import ml_collections

    from titok_jax.api import weights as api

    config = presets.tokenizer_config("titok_tiny")
    config.generator = presets.generator_section("titok_tiny")
    _, params, sd, *_ = load("generator_imagebert_tiny")
    state, paths = api.export_generator_weights(config, params, str(tmp_path / "hub"))
    folder = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert folder["model"]["generator"]["model_type"] == "ViT"
    assert folder["model"]["vq_model"]["codebook_size"] == 64
    assert folder["model"]["generator"]["guidance_decay"] == "constant"
    assert official.generator_from_official(folder) == presets.GENERATORS["titok_tiny"]
    assert official.sampling_from_official(folder)["num_steps"] == 8
    handle, back, meta = api.import_generator_weights(config, str(tmp_path / "hub"))
    assert handle.kind == "generator" and meta["model_kind"] == "generator"
    np.testing.assert_array_equal(back["lm_head"]["kernel"], params["lm_head"]["kernel"])
    # A folder whose config.json describes another generator is refused, naming the difference.
    folder["model"]["generator"]["num_hidden_layers"] = 4
    (tmp_path / "hub" / "config.json").write_text(json.dumps(folder))
    with pytest.raises(PortError, match="num_hidden_layers: folder 4 vs config 2"):
        api.import_generator_weights(config, str(tmp_path / "hub"))
    # A tokenizer that does not fit the generator is refused when the handle is built.
    bad = presets.tokenizer_config("titok_tiny_vq")
    bad.generator = ml_collections.ConfigDict({"model": presets.GENERATORS["titok_tiny"].to_dict()})
    with pytest.raises(ValueError, match="does not fit the tokenizer"):
        api.export_generator_weights(bad, params, str(tmp_path / "x"))


@pytest.mark.slow
def test_port_cli_generator_import_export(tmp_path):
    """python -m titok_jax.port {import,export} --generator on the official tiny ImageBert."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    weights = fixture_dir("tiny", "generator_imagebert_tiny") / "state_dict.safetensors"

    def run(*args, expect=0):
        p = subprocess.run([sys.executable, "-m", "titok_jax.cli.port", *args, "--config=configs/titok_tiny.py"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert p.returncode == expect, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        return p

    p = run("import", "--generator", f"--weights={weights}", f"--out={tmp_path / 'ck'}")
    assert "39 tensors read" in p.stdout and "ImageBert generator" in p.stdout
    run("export", "--generator", f"--checkpoint={tmp_path / 'ck'}", f"--out={tmp_path / 'hub'}")
    ours, ref = load_st(tmp_path / "hub" / "model.safetensors"), load_st(weights)
    assert set(ours) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)
    assert json.loads((tmp_path / "hub" / "config.json").read_text())["model"]["generator"]["hidden_size"] == 64
    # the UViT weights do not fit the ViT generator of this config: a PortError naming keys, exit 2
    uvit = fixture_dir("tiny", "generator_uvit_tiny") / "state_dict.safetensors"
    p = run("import", "--generator", f"--weights={uvit}", f"--out={tmp_path / 'bad'}", expect=2)
    assert "missing key(s), first: 'model.embeddings.word_embeddings.weight'" in p.stderr
