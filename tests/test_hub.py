"""Hugging Face hub interop, offline: names, save_pretrained, from_pretrained by repo id from a hub cache
built here (the layout huggingface_hub reads with HF_HUB_OFFLINE=1), through the Python API and the CLIs."""

import hashlib
import json
import os
import stat
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, fixture_dir

from titok_jax.api import Sampler, Tokenizer
from titok_jax.config import load as load_config
from titok_jax.config import official, presets
from titok_jax.errors import InputError
from titok_jax.images import load_images
from titok_jax.models import registry
from titok_jax.porting.hub import HubName, parse_hub_name

TOK_REPO, GEN_REPO = "tiny-org/titok_tiny", "tiny-org/generator_titok_tiny"


def make_hub_cache(cache, repo_id, folder, revision="main"):
    """Lay ``folder``'s files out as huggingface_hub's cache does: blobs/<sha256>, snapshots/<commit>/<file>
    (relative symlinks to the blobs) and refs/<revision> holding the commit."""
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap, blobs = repo / "snapshots" / commit, repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    for f in sorted(folder.iterdir()):
        data = f.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return commit


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The tiny tokenizer + generator of the official fixtures, saved with save_pretrained into an offline hub
    cache."""
    root = tmp_path_factory.mktemp("hub")
    tiny = fixture_dir("tiny", "titok_tiny") / "state_dict.safetensors"
    gen = fixture_dir("tiny", "generator_imagebert_tiny") / "state_dict.safetensors"
    run = load_config("configs/titok_tiny.py")  # with a guidance scale of its own, to see it travel in config.json
    run = run.replace(generator=run.generator.replace(sampling=run.generator.sampling.replace(guidance_scale=2.5)))
    sampler = Sampler.from_weights(run, str(tiny), str(gen))
    tok = Tokenizer.from_weights(run, str(tiny))
    tok.save_pretrained(str(root / "tok"))
    sampler.save_pretrained(str(root / "gen"))
    cache = root / "cache"
    make_hub_cache(cache, TOK_REPO, root / "tok")
    make_hub_cache(cache, GEN_REPO, root / "gen")
    return {"root": root, "cache": cache, "tok": tok, "sampler": sampler}


def assert_same_params(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_hub_names():
    assert parse_hub_name("hf:yucornetto/tokenizer_titok_l32_imagenet") == HubName(
        "yucornetto/tokenizer_titok_l32_imagenet"
    )
    assert parse_hub_name("hf://org/name@v1/sub/w.bin") == HubName("org/name", "v1", "sub/w.bin")
    assert parse_hub_name("https://huggingface.co/org/name/blob/main/w.safetensors") == HubName(
        "org/name", "main", "w.safetensors"
    )
    assert parse_hub_name("https://huggingface.co/org/name/tree/abc") == HubName("org/name", "abc")
    assert parse_hub_name("org/name") == HubName("org/name")  # bare repo id: no such local path
    for local in ("configs/titok_b64.py", "tests", "w.safetensors", "dir/w.safetensors", "./a/b", "/a/b", "a/b/c"):
        assert parse_hub_name(local) is None, local
    with pytest.raises(InputError, match="not a hub name"):
        parse_hub_name("hf:just-a-name")


def test_save_pretrained_files(hub):
    tok_dir, gen_dir = hub["root"] / "tok", hub["root"] / "gen"
    for d in (tok_dir, gen_dir):
        assert sorted(p.name for p in d.iterdir()) == ["README.md", "config.json", "model.safetensors"]
        for p in d.iterdir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    cfg = json.loads((tok_dir / "config.json").read_text())
    assert cfg["titok_jax"]["model"]["num_latent_tokens"] == 8  # custom sizes: described for titok_jax
    gcfg = json.loads((gen_dir / "config.json").read_text())
    assert gcfg["model"]["generator"]["hidden_size"] == 64  # generators: always the official dict
    assert "Sampler.from_pretrained" in (gen_dir / "README.md").read_text()


def test_save_pretrained_is_the_official_state_dict(hub):
    """What the official classes load strictly: the tiny fixtures are state_dicts that the official TiTok and
    ImageBert produced; save_pretrained of the models built from them writes exactly those tensors back (every
    key, shape, dtype and value), so TiTok/ImageBert.from_pretrained(folder) meets no missing or unexpected key."""
    from safetensors.numpy import load_file

    for folder, fixture in (("tok", "titok_tiny"), ("gen", "generator_imagebert_tiny")):
        ours = load_file(str(hub["root"] / folder / "model.safetensors"))
        official_sd = load_file(str(fixture_dir("tiny", fixture) / "state_dict.safetensors"))
        assert sorted(ours) == sorted(official_sd), folder
        for k, v in official_sd.items():
            assert ours[k].dtype == v.dtype and ours[k].shape == v.shape, (folder, k)
            np.testing.assert_array_equal(ours[k], v, err_msg=f"{folder}: {k}")


def test_from_pretrained_by_repo_id_offline(hub, offline):
    cache = str(hub["cache"])
    tok = Tokenizer.from_pretrained(TOK_REPO, cache_dir=cache)
    assert tok.handle.config == presets.MODELS["titok_tiny"] and tok.meta["weights"] == TOK_REPO
    assert_same_params(tok.params, hub["tok"].params)
    # other spellings of the same repo; a local hub folder; a single file with an explicit config
    for name in (f"hf://{TOK_REPO}@main", f"https://huggingface.co/{TOK_REPO}", str(hub["root"] / "tok")):
        assert_same_params(Tokenizer.from_pretrained(name, cache_dir=cache).params, tok.params)
    single = Tokenizer.from_pretrained(f"hf://{TOK_REPO}/model.safetensors", config="configs/titok_tiny.py",
                                       cache_dir=cache)  # fmt: skip
    assert_same_params(single.params, tok.params)

    sampler = Sampler.from_pretrained(GEN_REPO, tokenizer=TOK_REPO, cache_dir=cache)
    assert sampler.gen_config == hub["sampler"].gen_config and sampler.sampling == hub["sampler"].sampling
    assert sampler.sampling.guidance_scale == 2.5
    assert_same_params(sampler.gen_params, hub["sampler"].gen_params)
    assert_same_params(sampler.tok_params, hub["sampler"].tok_params)


def test_from_pretrained_errors(hub, offline, tmp_path):
    cache = str(hub["cache"])
    with pytest.raises(InputError, match="HF_HUB_OFFLINE is set and .* not in the hub cache"):
        Tokenizer.from_pretrained("someone/not_cached", cache_dir=cache)
    lone = tmp_path / "w.safetensors"
    lone.write_bytes((hub["root"] / "tok" / "model.safetensors").read_bytes())
    with pytest.raises(InputError, match="no config.json saying which tokenizer"):
        Tokenizer.from_pretrained(str(lone))
    with pytest.raises(InputError, match="holds no generator"):
        Sampler.from_pretrained(TOK_REPO, tokenizer=TOK_REPO, cache_dir=cache)
    with pytest.raises(InputError, match="describes another model"):
        Tokenizer.from_pretrained(TOK_REPO, config="configs/maskgit_vqgan_tiny.py", cache_dir=cache)


def test_official_hub_configs_give_the_released_models():
    """The official inference yamls (= the config.json of the released hub repos) -> the right presets."""
    for name in ("titok_l32", "titok_b64", "titok_s128"):
        spec = json.loads((fixture_dir("manifests") / f"generator_{name}.json").read_text())["spec"]["config"]
        run = official.run_from_hub_configs(spec, spec)
        assert run.model_name == name and run.model == presets.MODELS[name]
        assert run.generator_config == presets.GENERATORS[name]
        assert run.sampling() == presets.SAMPLING[name]
        tok_only = official.run_from_hub_configs(spec)  # a tokenizer repo: the preset's generator comes along
        assert tok_only.generator_config == presets.GENERATORS[name]


def test_save_pretrained_standard_size_is_official(tmp_path):
    """An official-size model: config.json is the official dict and the state_dict has exactly the official
    keys and shapes (the manifest of the official class), so TiTok.from_pretrained(folder) loads it strictly."""
    official_dict = official.tokenizer_to_official(presets.MODELS["titok_s128"])
    handle = registry.tokenizer(official.run_from_hub_configs(official_dict))
    params = jax.tree.map(lambda a: np.full(a.shape, 0.01, a.dtype), handle.abstract())
    Tokenizer(handle, params).save_pretrained(str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg == official.tokenizer_to_official(presets.MODELS["titok_s128"])
    manifest = json.loads((fixture_dir("manifests") / "titok_s128.json").read_text())["state_dict"]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes == {k: v[0] for k, v in manifest.items()}
    back = Tokenizer.from_pretrained(str(tmp_path))  # no config: config.json says titok_s128
    assert back.handle.name == "titok_s128" and back.handle.config == presets.MODELS["titok_s128"]


@pytest.mark.slow
def test_clis_load_by_repo_id_without_config(hub, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub["cache"]))

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
        assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p

    cache = tmp_path / "xla_cache"
    p = cli("titok_jax.cli.reconstruct", f"--weights=hf:{TOK_REPO}", "--images=skimage:astronaut",
            f"--out={tmp_path / 'r'}", f"--compilation_cache={cache}")  # fmt: skip
    assert "[reconstruct] 1/1 img (100%)" in p.stdout  # the progress line (no terminal: a log line)
    assert "persistent compilation cache" in p.stdout and any(cache.iterdir())  # encode + decode programs kept
    _, x = load_images(["skimage:astronaut"], 64)
    np.testing.assert_array_equal(np.load(tmp_path / "r" / "ids.npy"), hub["tok"].encode(x)[0])
    p = cli("titok_jax.cli.sample", f"--tokenizer_weights={TOK_REPO}", f"--generator_weights=hf://{GEN_REPO}",
            "--classes=1,2", "--seed=5", f"--out={tmp_path / 's'}")  # fmt: skip
    tokens = np.load(tmp_path / "s" / "tokens.npy")
    assert tokens.shape == (2, 8) and tokens.min() >= 0 and tokens.max() < 64
    assert "'guidance_scale': 2.5" in p.stdout  # the sampling settings of the generator's config.json
    assert "[sample] 2/2 img (100%)" in p.stdout
