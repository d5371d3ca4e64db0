"""Pre-tokenization (``titok_jax.steps.pretokenize``) and the token loader (``titok_jax.data.tokens``).

A random-init tiny TiTok would give (nearly) the same ids for every image, so the tests first
"sharpen" it: its codebook becomes encoder outputs of the test images themselves (+ small noise), so
every image and its flip get their own ids and a mix-up of entries cannot pass unnoticed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from titok_jax import checkpoint
from titok_jax.api import Tokenizer
from titok_jax.config import ConfigError, parse, presets, with_changes
from titok_jax.data import DataConfig, make_source
from titok_jax.data import tokens as tk
from titok_jax.data.transforms import eval_transform, to_pil
from titok_jax.models import registry
from titok_jax.models.titok import ENCODE_PARTS
from titok_jax.steps import pretokenize as pt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, SHARD, BATCH = 64, 2, 4  # 7 photos -> 4 shards (2, 2, 2, 1 images), 14 entries with flips


def _images(source):
    return np.stack([eval_transform(to_pil(source[i]["image"]), SIZE) for i in range(len(source))])


def _sharpen(tok: Tokenizer, images: np.ndarray, seed: int = 0) -> Tokenizer:
    """Make the ids depend on the image: shrink the learned latent-token embeddings (so the latents
    carry image content rather than their own embeddings) and use well-separated encoder outputs of
    ``images`` as the codebook. Asserts that no latent of ``images`` is near a tie between two codes
    (exact id comparisons across differently compiled programs are then robust)."""
    enc = dict(tok.params["encoder"])
    enc["latent_token_positional_embedding"] = enc["latent_token_positional_embedding"] * 1e-3
    params = dict(tok.params, latent_tokens=tok.params["latent_tokens"] * 1e-3, encoder=enc)
    m = tok.module
    z = np.asarray(jax.jit(lambda p, x: m.apply({"params": p}, x, method=m.encode_continuous))(params, images))
    flat = z.reshape(-1, z.shape[-1]).astype(np.float64)
    l2 = tok.handle.config.use_l2_norm
    if l2:
        flat = flat / np.linalg.norm(flat, axis=-1, keepdims=True)
    scale = float((flat**2).sum(-1).max())
    rng = np.random.default_rng(seed)
    k = tok.handle.config.codebook_size
    rows = []
    for i in rng.permutation(len(flat)):  # greedy: codes at least sqrt(1e-3 * scale) apart
        if len(rows) < k and all(((flat[i] - r) ** 2).sum() > 1e-3 * scale for r in rows):
            rows.append(flat[i])
    rows = np.concatenate([np.stack(rows), rng.normal(0.0, 10.0, (k - len(rows), flat.shape[1]))])
    params["quantize"] = {"embedding": rows.astype(np.float32)}
    cb = rows / np.linalg.norm(rows, axis=-1, keepdims=True) if l2 else rows
    d = np.sort((flat**2).sum(-1)[:, None] + (cb**2).sum(-1)[None] - 2 * flat @ cb.T, axis=1)
    gap = float((d[:, 1] - d[:, 0]).min() / scale)
    assert gap > 1e-5, f"sharpened tokenizer has a near-tie (relative gap {gap:.2g}); change the seed"
    return Tokenizer(tok.handle, params)


def _encode_parts(tok: Tokenizer):
    return Tokenizer(tok.handle, {k: tok.params[k] for k in ENCODE_PARTS})


class _Broken:
    """The photos source with some unreadable examples."""

    def __init__(self, source, bad):
        self.source, self.bad = source, set(bad)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        rec = dict(self.source[i])
        if i in self.bad:
            rec["image"] = b"not an image"
        return rec


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    source = make_source(DataConfig(source="photos"), train=True)
    images = _images(source)
    both = np.concatenate([images, images[:, :, ::-1]])
    tok = _sharpen(Tokenizer.random_init("titok_tiny_vq", seed=0), both)
    ref = np.concatenate([tok.encode(both[i : i + BATCH])[0] for i in range(0, len(both), BATCH)])
    n = len(source)
    assert len({tuple(r) for r in ref}) == 2 * n, "sharpened tokenizer should give every view its own ids"
    encode_fn = _encode_parts(tok).ids_fn(BATCH)
    meta = {"config": tok.handle.config.to_dict(), "weights": "random-init seed 0 (sharpened)"}
    kw = dict(image_size=SIZE, flip=True, shard_size=SHARD, batch_size=BATCH, meta=meta)
    base = str(tmp_path_factory.mktemp("tokens") / "base")
    summary = pt.pretokenize(encode_fn, source, base, **kw)
    return dict(source=source, tok=tok, ref_orig=ref[:n], ref_flip=ref[n:], encode_fn=encode_fn, kw=kw, base=base,
                summary=summary, labels=np.asarray([source[i]["label"] for i in range(n)]))  # fmt: skip


def _copy(base, tmp_path, name="copy"):
    dst = str(tmp_path / name)
    shutil.copytree(base, dst)
    return dst


def _assert_ids(src, tok, source):
    images = _images(source)
    assert len(src) == 2 * len(images)
    np.testing.assert_array_equal(src.index, np.repeat(np.arange(len(images)), 2))
    np.testing.assert_array_equal(src.tokens[~src.flipped], tok.encode(images)[0])
    np.testing.assert_array_equal(src.tokens[src.flipped], tok.encode(images[:, :, ::-1])[0])


def _arrays(directory):
    s = tk.TokenSource(directory)
    return {k: np.asarray(getattr(s, k)) for k in ("tokens", "labels", "index", "flipped")}


# -------------------------------------------------------------------------------------- pretokenize


def test_end_to_end_shards_manifest_and_ids(setup):
    base, n = setup["base"], len(setup["source"])
    files = sorted(f for f in os.listdir(base) if f.startswith("tokens-"))
    assert files == [tk.shard_filename(s, 4) for s in range(4)]
    with open(os.path.join(base, tk.MANIFEST)) as f:
        man = json.load(f)
    assert man["num_examples"] == 2 * n and man["num_shards"] == 4 and man["count_check"]["ok"]
    assert [s["count"] for s in man["shards"]] == [4, 4, 4, 2]
    assert (man["seq_len"], man["codebook_size"], man["num_classes"]) == (8, 256, 7)
    assert man["flip"] is True and man["image_size"] == SIZE and man["skipped"] == []
    assert man["tokenizer"]["weights"].startswith("random-init")
    assert setup["summary"]["shards_written"] == 4 and setup["summary"]["num_examples"] == 2 * n

    src = tk.TokenSource(base)
    assert (len(src), src.seq_len, src.codebook_size, src.num_classes) == (2 * n, 8, 256, 7)
    assert src.tokens.dtype == np.int32 and src.labels.dtype == np.int32
    # entries sorted by (image, flipped): original then flip of every image
    np.testing.assert_array_equal(src.index, np.repeat(np.arange(n), 2))
    np.testing.assert_array_equal(src.flipped, np.tile([False, True], n))
    np.testing.assert_array_equal(src.labels, np.repeat(setup["labels"], 2))
    np.testing.assert_array_equal(src.tokens[~src.flipped], setup["ref_orig"])
    np.testing.assert_array_equal(src.tokens[src.flipped], setup["ref_flip"])


def test_resume_recomputes_only_missing_shard(setup, tmp_path):
    d = _copy(setup["base"], tmp_path)
    want = _arrays(d)
    victim = os.path.join(d, tk.shard_filename(1, 4))
    os.remove(victim)
    os.remove(os.path.join(d, tk.MANIFEST))
    stale = os.path.join(d, tk.shard_filename(2, 4) + ".tmp-0-12345")
    with open(stale, "wb") as f:
        f.write(b"half-written shard of a killed run")
    others = {f: os.stat(os.path.join(d, f)).st_mtime_ns for f in os.listdir(d) if f.endswith(".npz")}
    with pytest.raises(tk.TokenDataError, match="manifest.json not found"):
        tk.TokenSource(d)
    summary = pt.pretokenize(setup["encode_fn"], setup["source"], d, **setup["kw"])
    assert (summary["shards_written"], summary["shards_reused"], summary["images_encoded"]) == (1, 3, 2)
    assert os.path.exists(victim) and not os.path.exists(stale)
    assert {f: os.stat(os.path.join(d, f)).st_mtime_ns for f in others} == others
    got = _arrays(d)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    again = pt.pretokenize(setup["encode_fn"], setup["source"], d, **setup["kw"])
    assert again["shards_written"] == 0 and again["num_examples"] == 14


def test_damaged_shard_clear_error_then_repaired_by_rerun(setup, tmp_path):
    d = _copy(setup["base"], tmp_path)
    want = _arrays(d)
    bad = os.path.join(d, tk.shard_filename(2, 4))
    with open(bad, "r+b") as f:
        f.truncate(100)
    with pytest.raises(tk.TokenDataError, match=r"tokens-00002-of-00004\.npz is unreadable"):
        tk.TokenSource(d)
    summary = pt.pretokenize(setup["encode_fn"], setup["source"], d, **setup["kw"])
    assert summary["shards_written"] == 1
    got = _arrays(d)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_token_source_errors(setup, tmp_path):
    with pytest.raises(tk.TokenDataError, match="does not exist"):
        tk.TokenSource(str(tmp_path / "nowhere"))
    d = _copy(setup["base"], tmp_path)
    man_path = os.path.join(d, tk.MANIFEST)
    with open(man_path) as f:
        man = json.load(f)
    with open(man_path, "w") as f:
        f.write("{ not json")
    with pytest.raises(tk.TokenDataError, match="not valid JSON"):
        tk.TokenSource(d)
    bad = dict(man, shards=[dict(s) for s in man["shards"]])
    bad["shards"][0]["count"] += 1
    bad["num_examples"] += 1
    with open(man_path, "w") as f:
        json.dump(bad, f)
    with pytest.raises(tk.TokenDataError, match="holds 4 examples but manifest.json says 5"):
        tk.TokenSource(d)
    with open(man_path, "w") as f:
        json.dump(dict(man, num_examples=13), f)
    with pytest.raises(tk.TokenDataError, match="do not add up"):
        tk.TokenSource(d)
    with open(man_path, "w") as f:
        json.dump(man, f)
    os.remove(os.path.join(d, tk.shard_filename(3, 4)))
    with pytest.raises(tk.TokenDataError, match=r"tokens-00003-of-00004\.npz is missing"):
        tk.TokenSource(d)


def test_token_source_checks_the_images_each_shard_covers(setup, tmp_path):
    d = _copy(setup["base"], tmp_path)
    first, second = (os.path.join(d, tk.shard_filename(i, 4)) for i in (0, 1))
    os.rename(first, first + ".swap")  # two shards of equal size and settings, swapped: counts still add up
    os.rename(second, first)
    os.rename(first + ".swap", second)
    with pytest.raises(tk.TokenDataError, match=r"00000-of-00004\.npz does not cover the images it should.*image 2"):
        tk.TokenSource(d)


def test_other_settings_are_refused(setup, tmp_path):
    d = _copy(setup["base"], tmp_path)
    kw = dict(setup["kw"], flip=False)
    with pytest.raises(pt.PretokenizeError, match="other settings"):
        pt.pretokenize(setup["encode_fn"], setup["source"], d, **kw)


def test_two_processes_union_equals_one_process(setup, tmp_path):
    d = str(tmp_path / "two")
    run = dict(setup["kw"], process_count=2)
    with pytest.raises(pt.PretokenizeError, match=r"2 of 4 shard\(s\) missing"):
        pt.pretokenize(setup["encode_fn"], setup["source"], d, process_index=0, **run)  # process 1 not done yet
    assert sorted(f for f in os.listdir(d) if f.endswith(".npz")) == [tk.shard_filename(s, 4) for s in (0, 2)]
    s1 = pt.pretokenize(setup["encode_fn"], setup["source"], d, process_index=1, **run)
    assert s1["shards_written"] == 2 and "num_examples" not in s1 and not os.path.exists(os.path.join(d, tk.MANIFEST))
    s0 = pt.pretokenize(setup["encode_fn"], setup["source"], d, process_index=0, **run)
    assert s0["shards_written"] == 0 and s0["num_examples"] == 14
    got, want = _arrays(d), _arrays(setup["base"])
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_unreadable_images_are_skipped_and_counted(setup, tmp_path):
    d = str(tmp_path / "broken")
    source = _Broken(setup["source"], bad={3, 6})
    summary = pt.pretokenize(setup["encode_fn"], source, d, **setup["kw"])
    assert summary["num_examples"] == 10 and summary["skipped_images"] == 2
    with open(os.path.join(d, tk.MANIFEST)) as f:
        man = json.load(f)
    assert [s["index"] for s in man["skipped"]] == [3, 6]
    assert "cannot identify image file" in man["skipped"][0]["reason"]
    assert [s["count"] for s in man["shards"]] == [4, 2, 4, 0]
    src = tk.TokenSource(d)
    keep = np.asarray([i for i in range(7) if i not in (3, 6)])
    np.testing.assert_array_equal(src.index, np.repeat(keep, 2))
    np.testing.assert_array_equal(src.tokens[~src.flipped], setup["ref_orig"][keep])
    np.testing.assert_array_equal(src.tokens[src.flipped], setup["ref_flip"][keep])


def test_batch_size_must_divide_local_devices(setup):
    tok = setup["tok"]
    with pytest.raises(ConfigError, match="multiple of the 2 local device"):
        _encode_parts(tok).ids_fn(3, devices=jax.local_devices() * 2)


# --------------------------------------------------------------------------------------- token loader


def _loader(d, batch=4, pi=0, pc=1, **kw):
    return tk.make_token_loader(d, global_batch_size=batch, seed=0, process_index=pi, process_count=pc, **kw)


def test_token_loader_batches_state_and_process_sharding(setup):
    d = setup["base"]
    src = tk.TokenSource(d)
    loader = _loader(src)
    assert loader.steps_per_epoch == 3 and loader.num_batches is None
    it = iter(loader)
    first = [next(it) for _ in range(3)]
    for b in first:
        assert set(b) == {"tokens", "label"}
        assert b["tokens"].shape == (4, 8) and b["tokens"].dtype == np.int32
        assert b["label"].shape == (4,) and b["label"].dtype == np.int32
    state = json.loads(json.dumps(loader.get_state()))
    assert state == {"next_index": 3}
    cont = [next(it) for _ in range(4)]  # crosses the epoch boundary (14 entries = 3.5 batches)
    resumed = _loader(src)
    resumed.set_state(state)
    it2 = iter(resumed)
    for a, b in zip(cont, [next(it2) for _ in range(4)]):
        np.testing.assert_array_equal(a["tokens"], b["tokens"])
        np.testing.assert_array_equal(a["label"], b["label"])
    # batch rows are the source rows the loader says, and every entry appears once per epoch
    rows = np.concatenate([loader.indices(k) for k in range(7)])  # 28 positions = 2 epochs
    np.testing.assert_array_equal(first[1]["tokens"], src.tokens[loader.indices(1)])
    assert sorted(rows[:14].tolist()) == sorted(rows[14:].tolist()) == list(range(14))
    assert not np.array_equal(rows[:14], np.arange(14)), "train loader should shuffle"
    assert not np.array_equal(rows[:14], rows[14:]), "train loader should reshuffle every epoch"
    # two processes: disjoint halves that interleave into the single-process global batch
    p0, p1 = _loader(src, pi=0, pc=2), _loader(src, pi=1, pc=2)
    for k in range(7):
        r0, r1, r = p0.indices(k), p1.indices(k), loader.indices(k)
        assert len(r0) == len(r1) == 2
        if k < 3:  # (batch 3 spans the epoch boundary and may repeat an entry legitimately)
            assert not set(r0) & set(r1)
        np.testing.assert_array_equal(np.stack([r0, r1], 1).reshape(-1), r)
        np.testing.assert_array_equal(p1.batch(k)["tokens"], src.tokens[r1])


def test_token_loader_eval_is_one_ordered_pass(setup):
    ev = _loader(setup["base"], train=False)
    assert ev.num_batches == 3 and len(ev) == 3
    np.testing.assert_array_equal(np.concatenate([ev.indices(k) for k in range(3)]), np.arange(12))
    assert len(list(iter(ev))) == 3
    with pytest.raises(tk.DataError, match="multiple of process_count"):
        _loader(setup["base"], batch=3, pc=2)


# ----------------------------------------------------------------------------------- config entry / CLI


@pytest.fixture(scope="module")
def stage1_workdir(tmp_path_factory, setup):
    """A workdir whose finished stage 1 holds a legacy tiny TiTok without pixel decoder."""
    config = presets.training_config("titok_tiny")
    config.data = presets.data_config(source="photos")
    config = parse(config)
    stage1 = presets.training_config("titok_tiny", "stage1")
    both = _images(setup["source"])
    tok = _sharpen(Tokenizer.random_init(stage1, seed=1), np.concatenate([both, both[:, :, ::-1]]), seed=1)
    assert "pixel_decoder" not in tok.params and "pixel_decoder" in registry.tokenizer(config).abstract()
    wd = tmp_path_factory.mktemp("wd")
    checkpoint.save_params(str(wd / "stage1" / "final"), tok.params, {"stage": "stage1"})
    return config, str(wd), tok


def test_run_loads_encoder_of_a_stage1_checkpoint(stage1_workdir, setup):
    config, wd, tok = stage1_workdir
    summary = pt.run(with_changes(config, pretokenize=dict(shard_size=4, batch_size=4)), wd)
    out = os.path.join(wd, "pretokenize")
    assert summary["out_dir"] == out and summary["num_examples"] == 14 and summary["num_shards"] == 2
    src = tk.TokenSource(out)
    assert src.manifest["tokenizer"]["weights"] == os.path.join(wd, "stage1", "final")
    assert src.codebook_size == 64 and src.seq_len == 8
    _assert_ids(src, tok, setup["source"])
    with pytest.raises(ConfigError, match=r"unknown keys \['pretokenize.batch_sizes'\]"):
        parse(dict(config.to_dict(), pretokenize=dict(shard_size=4, batch_sizes=4)))


def test_cli_two_local_devices(stage1_workdir, setup, tmp_path):
    """``python -m titok_jax.pretokenize`` with the batch split over 2 (forced CPU) devices; same ids."""
    config, wd, tok = stage1_workdir
    out = str(tmp_path / "cli")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "titok_jax.cli.pretokenize", "--config=configs/titok_tiny.py", f"--workdir={wd}",
           f"--out={out}", "--config.data.source=photos"]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "summary:" in r.stdout
    _assert_ids(tk.TokenSource(out), tok, setup["source"])
