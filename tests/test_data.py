"""Data pipeline: sources, transforms, grain loader, sharding, exact resume, robustness, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from titok_jax import data, parallel
from titok_jax.config.sections import DataConfig
from titok_jax.data import DataError, make_loader
from titok_jax.errors import ConfigError
from titok_jax.images import resize_center_crop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _loader(cfg, *, batch=4, size=16, train=True, seed=0, pi=0, pc=1):
    return make_loader(
        DataConfig.from_dict(cfg, where="data"),
        global_batch_size=batch,
        image_size=size,
        train=train,
        seed=seed,
        process_index=pi,
        process_count=pc,
    )


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert set(x) == set(y) == {"image", "label"}
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def _write_png(path, h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, seed * 37 % 256)], -1)
    img = np.clip(base + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(img).save(path)
    return img


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """12 PNGs: 'root.png' at the top (class ''), 6 under cat/ (one nested deeper), 5 under dog/."""
    root = tmp_path_factory.mktemp("folder")
    _write_png(str(root / "root.png"), 20, 30, 0)
    for k in range(6):
        sub = "cat/deep" if k == 5 else "cat"
        _write_png(str(root / sub / f"c{k}.png"), 18 + k, 26, 10 + k)
    for k in range(5):
        _write_png(str(root / "dog" / f"d{k}.png"), 30, 20 + k, 20 + k)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"ignored")
    return str(root)


# ------------------------------------------------------------------------------------------ imports


def test_import_does_not_pull_tensorflow():
    code = (
        "import sys, titok_jax.data as d\n"
        "L = d.make_loader(d.DataConfig(source='photos', min_scale=0.25), global_batch_size=2, image_size=8,"
        " train=True, seed=0, process_index=0, process_count=1)\n"
        "next(iter(L))\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "assert 'tensorflow_datasets' not in sys.modules, 'tfds imported eagerly'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# ------------------------------------------------------------------------------------------- photos


def test_photos_train_batches_shapes_dtypes_ranges():
    loader = _loader({"source": "photos", "min_scale": 0.25}, batch=7, size=24)
    assert len(loader.source) == len(data.PhotosSource().photos) == 7
    batches = _take(iter(loader), 2)
    for b in batches:
        assert b["image"].shape == (7, 24, 24, 3) and b["image"].dtype == np.float32
        assert b["label"].shape == (7,) and b["label"].dtype == np.int32
        assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0 and b["image"].std() > 0.01
        # batch == global batch == one epoch of 7 photos: every photo exactly once
        assert sorted(b["label"].tolist()) == list(range(7))


def test_photos_heldout_eval_split_is_disjoint_and_fixed():
    src = data.PhotosSource(split="eval")
    for name, (top, left, h, w) in src.train_boxes.items():
        photo_h, photo_w = src.photo_sizes[name]
        assert (top, left, h) == (0, 0, photo_h) and w == photo_w - round(0.25 * photo_w)
        tiles = src.eval_boxes[name]
        assert tiles, name
        for tt, tl, th, tw in tiles:
            assert tl >= left + w, f"{name}: eval tile overlaps the train region"
            assert tl + tw <= photo_w and tt >= 0 and tt + th <= photo_h and th == tw
    assert len(src) == sum(len(v) for v in src.eval_boxes.values()) == 20

    loader = _loader({"source": "photos"}, batch=4, size=16, train=False, seed=0)
    other = _loader({"source": "photos"}, batch=4, size=16, train=False, seed=123)
    assert len(loader) == 5
    first = list(loader)
    _assert_batches_equal(first, list(iter(loader)))  # fixed across passes
    _assert_batches_equal(first, list(other))  # and independent of the seed
    # eval example k is exactly the official eval transform of tile k (source order, no shuffle)
    for k in (0, 7, 19):
        rec = src[k]
        want = resize_center_crop(Image.fromarray(rec["image"]), 16)
        np.testing.assert_array_equal(first[k // 4]["image"][k % 4], want)
        assert first[k // 4]["label"][k % 4] == rec["label"]


def test_train_crops_vary_across_steps_eval_does_not():
    loader = _loader({"source": "photos", "min_scale": 0.25}, batch=7, size=16)
    per_label = {}
    for b in _take(iter(loader), 3):
        for img, lab in zip(b["image"], b["label"]):
            per_label.setdefault(int(lab), []).append(img)
    for lab, imgs in per_label.items():
        assert len(imgs) == 3
        assert not np.array_equal(imgs[0], imgs[1]) and not np.array_equal(imgs[1], imgs[2]), lab


# ---------------------------------------------------------------------------------------- transforms


def test_official_train_transform_is_random_crop_and_flip_of_resized_image():
    rng0 = np.random.default_rng(0)
    img = Image.fromarray(rng0.integers(0, 256, (30, 45, 3), dtype=np.uint8))
    resized = np.asarray(data.resize_shorter(img, 16), np.float32) / 255.0
    assert resized.shape == (16, 24, 3)
    offsets, flips = set(), set()
    for s in range(24):
        out = data.train_transform(img, 16, np.random.default_rng(s))
        assert out.shape == (16, 16, 3) and out.dtype == np.float32
        found = None
        for left in range(0, 24 - 16 + 1):
            win = resized[:, left : left + 16]
            if np.array_equal(out, win):
                found = (left, False)
            elif np.array_equal(out, win[:, ::-1]):
                found = (left, True)
        assert found is not None, "output is not a (flipped) window of the resized image"
        offsets.add(found[0])
        flips.add(found[1])
        # deterministic given the rng seed
        np.testing.assert_array_equal(out, data.train_transform(img, 16, np.random.default_rng(s)))
    assert len(offsets) > 3 and flips == {True, False}


def test_min_scale_random_resized_crop():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8))
    outs = [data.train_transform(img, 8, np.random.default_rng(s), min_scale=0.2) for s in range(6)]
    assert all(o.shape == (8, 8, 3) and o.dtype == np.float32 for o in outs)
    assert len({o.tobytes() for o in outs}) == 6


def test_to_pil_accepts_arrays_bytes_paths(tmp_path):
    arr = _write_png(str(tmp_path / "x.png"), 5, 7, 3)
    a = data.to_pil(arr)
    b = data.to_pil((tmp_path / "x.png").read_bytes())
    c = data.to_pil(str(tmp_path / "x.png"))
    g = data.to_pil(arr[..., 0])
    for im in (a, b, c, g):
        assert im.mode == "RGB" and im.size == (7, 5)
    assert np.array_equal(np.asarray(a), np.asarray(c))


# ------------------------------------------------------------------------- folder, seeds, sharding


def test_folder_source_labels_and_order(image_folder):
    src = data.FolderSource(image_folder)
    assert src.files[0] == "cat/c0.png" and "cat/deep/c5.png" in src.files and "root.png" in src.files
    assert src.files == sorted(src.files) and len(src) == 12
    assert src.class_names == ["", "cat", "dog"]
    rec = {src[i]["name"]: src[i]["label"] for i in range(len(src))}
    assert rec["root.png"] == 0 and rec["cat/deep/c5.png"] == 1 and rec["dog/d0.png"] == 2


def test_same_seed_same_batches_different_seed_different(image_folder):
    cfg = {"source": "folder", "path": image_folder}
    a = _take(iter(_loader(cfg, seed=3)), 4)
    b = _take(iter(_loader(cfg, seed=3)), 4)
    c = _take(iter(_loader(cfg, seed=4)), 4)
    _assert_batches_equal(a, b)
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))
    # reshuffled each epoch: epoch 1 (batches 3..5) is not epoch 0's order
    a6 = _take(iter(_loader(cfg, seed=3)), 6)
    order = [lab for bt in a6 for lab in bt["label"].tolist()]
    assert sorted(order[:12]) == sorted(order[12:])
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a6[:3], a6[3:]))


@pytest.mark.parametrize("train", [False, True])
def test_per_process_shards_union_to_global_batch(image_folder, train):
    cfg = {"source": "folder", "path": image_folder, "shuffle": True}
    n_batches = 3  # one epoch: 12 images / global batch 4
    full = _take(iter(_loader(cfg, batch=4, train=train, seed=7, pc=1)), n_batches)
    p0 = _take(iter(_loader(cfg, batch=4, train=train, seed=7, pi=0, pc=2)), n_batches)
    p1 = _take(iter(_loader(cfg, batch=4, train=train, seed=7, pi=1, pc=2)), n_batches)
    seen0, seen1 = set(), set()
    for g, a, b in zip(full, p0, p1):
        assert a["image"].shape == b["image"].shape == (2, 16, 16, 3)
        # process p holds global positions p, p + 2, ... of the global batch: bit-identical
        np.testing.assert_array_equal(g["image"][0::2], a["image"])
        np.testing.assert_array_equal(g["image"][1::2], b["image"])
        np.testing.assert_array_equal(g["label"][0::2], a["label"])
        seen0 |= {x.tobytes() for x in a["image"]}
        seen1 |= {x.tobytes() for x in b["image"]}
    assert not seen0 & seen1 and len(seen0) == len(seen1) == 6
    if not train:  # one eval epoch covers every file exactly once
        src = data.FolderSource(image_folder)
        want = {data.eval_transform(data.to_pil(src[i]["image"]), 16).tobytes() for i in range(len(src))}
        assert seen0 | seen1 == want


def test_eval_pass_drops_partial_global_batch(image_folder):
    loader = _loader({"source": "folder", "path": image_folder}, batch=5, train=False)
    assert len(loader) == 2 and len(list(loader)) == 2
    p1 = _loader({"source": "folder", "path": image_folder}, batch=6, train=False, pi=1, pc=2)
    assert len(p1) == 2  # equal batch counts on every process


# ----------------------------------------------------------------------------------------- resume


def test_exact_resume_from_iterator_state(image_folder):
    cfg = {"source": "folder", "path": image_folder, "min_scale": 0.5}
    it = iter(_loader(cfg, batch=4, seed=11))
    _take(it, 3)
    state = it.get_state()
    expected = _take(it, 4)  # crosses an epoch boundary (3 batches per epoch)
    fresh = iter(_loader(cfg, batch=4, seed=11))
    fresh.set_state(state)
    _assert_batches_equal(_take(fresh, 4), expected)


def test_loader_level_state_json_roundtrip_and_process_count_change(image_folder):
    cfg = {"source": "folder", "path": image_folder}
    loader = _loader(cfg, batch=4, seed=2)
    assert loader.get_state() == {"next_index": 0}
    it = iter(loader)
    _take(it, 2)
    state = json.loads(json.dumps(loader.get_state()))  # what a training loop stores as JSON
    assert state == {"next_index": 2}
    expected = _take(it, 3)
    # restore on a new loader, then iterate (the position sticks to every later iter(loader))
    resumed = _loader(cfg, batch=4, seed=2)
    resumed.set_state(state)
    _assert_batches_equal(_take(iter(resumed), 3), expected)
    assert resumed.get_state() == {"next_index": 5}
    # the state counts global batches, so it also resumes under another process count
    halves = []
    for pi in range(2):
        part = _loader(cfg, batch=4, seed=2, pi=pi, pc=2)
        part.set_state(state)
        halves.append(_take(iter(part), 3))
    for g, a, b in zip(expected, *halves):
        np.testing.assert_array_equal(g["image"][0::2], a["image"])
        np.testing.assert_array_equal(g["image"][1::2], b["image"])
    with pytest.raises(DataError, match="invalid loader state"):
        resumed.set_state({"bogus": 1})


def test_orbax_checkpoint_manager_roundtrip(tmp_path, image_folder):
    import grain
    import orbax.checkpoint as ocp

    cfg = {"source": "folder", "path": image_folder}
    it = iter(_loader(cfg, batch=4, seed=5))
    _take(it, 2)
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    with ocp.CheckpointManager(str(tmp_path / "ckpt"), options=options) as mngr:
        mngr.save(
            2,
            args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it), meta=ocp.args.JsonSave({"step": 2})),
        )
        mngr.wait_until_finished()
    expected = _take(it, 3)
    fresh = iter(_loader(cfg, batch=4, seed=5))
    with ocp.CheckpointManager(str(tmp_path / "ckpt"), options=options) as mngr:
        r = mngr.restore(
            mngr.latest_step(),
            args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh), meta=ocp.args.JsonRestore()),
        )
    assert r.meta["step"] == 2
    _assert_batches_equal(_take(fresh, 3), expected)


# ------------------------------------------------------------------------------------- robustness


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = tmp_path / "imgs"
    imgs = {f"a{k}.png": _write_png(str(root / f"a{k}.png"), 20, 20, k) for k in range(5)}
    (root / "bad.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    good = (root / "a4.png").read_bytes()
    (root / "b_trunc.png").write_bytes(good[: len(good) // 2])
    # sorted: a0..a4, b_trunc.png, bad.jpg  -> 7 files, both broken ones at the end
    loader = _loader({"source": "folder", "path": str(root)}, batch=7, size=8, train=False)
    (batch,) = list(loader)
    stats = loader.stats()
    names = [n for n, _ in stats["skipped"]]
    assert names == ["b_trunc.png", "bad.jpg"]
    assert all(reason for _, reason in stats["skipped"]) and stats["skipped_count"] >= 2
    # deterministic replacement: a broken example becomes the next readable one (wrapping around)
    src = data.FolderSource(str(root))
    assert src.files[5:] == ["b_trunc.png", "bad.jpg"]
    a0 = resize_center_crop(Image.fromarray(imgs["a0.png"]), 8)
    np.testing.assert_array_equal(batch["image"][5], a0)
    np.testing.assert_array_equal(batch["image"][6], a0)
    # also in training (random access, any thread): no crash, same records
    train = _loader({"source": "folder", "path": str(root)}, batch=7, size=8, train=True)
    _take(iter(train), 3)
    assert [n for n, _ in train.stats()["skipped"]] == ["b_trunc.png", "bad.jpg"]


def test_all_unreadable_is_a_clear_error(tmp_path):
    root = tmp_path / "broken"
    root.mkdir()
    for k in range(3):
        (root / f"x{k}.png").write_bytes(b"nope")
    loader = make_loader(
        DataConfig(source="folder", path=str(root), max_skip=2, num_threads=0),
        global_batch_size=1,
        image_size=8,
        train=False,
        seed=0,
        process_index=0,
        process_count=1,
    )
    with pytest.raises(DataError, match="consecutive unreadable"):
        loader.batch(0)


def test_clear_errors_for_missing_or_bad_inputs(tmp_path, image_folder):
    with pytest.raises(DataError, match="does not exist.*put the images there.*source='photos'"):
        _loader({"source": "folder", "path": str(tmp_path / "missing")})
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no image files"):
        _loader({"source": "folder", "path": str(tmp_path / "empty")})
    with pytest.raises(DataError, match="data.path is required"):
        _loader({"source": "folder"})
    with pytest.raises(ConfigError, match="data.source must be one of .* got 'imagenet'"):
        _loader({"source": "imagenet"})
    with pytest.raises(ConfigError, match=r"unknown keys \['data.pth'\]"):
        _loader({"source": "folder", "pth": image_folder})
    with pytest.raises(DataError, match="multiple of process_count"):
        _loader({"source": "folder", "path": image_folder}, batch=3, pc=2)
    with pytest.raises(DataError, match="fewer than one global batch"):
        _loader({"source": "folder", "path": image_folder}, batch=16, train=False)
    with pytest.raises(DataError, match="unknown photo"):
        _loader({"source": "photos", "photos": ["lena"]})


def test_tfds_errors_are_clear_and_never_download(tmp_path):
    with pytest.raises(DataError, match="data_dir .* does not exist.*imagenet2012.*manual.*source='photos'"):
        _loader({"source": "tfds", "name": "imagenet2012", "data_dir": str(tmp_path / "nope")})
    assert not (tmp_path / "nope").exists()
    empty = tmp_path / "tfds_empty"
    empty.mkdir()
    with pytest.raises(DataError, match="not prepared in .*ILSVRC2012_img_train.tar.*array_record.*source='photos'"):
        _loader({"source": "tfds", "name": "imagenet2012", "data_dir": str(empty)})
    with pytest.raises(DataError, match="unknown tfds dataset 'no_such_dataset_xyz'"):
        _loader({"source": "tfds", "name": "no_such_dataset_xyz", "data_dir": str(empty)})
    with pytest.raises(DataError, match="data.name is required"):
        _loader({"source": "tfds", "data_dir": str(empty)})
    assert os.listdir(empty) == []  # nothing downloaded or created


# -------------------------------------------------------------------------------------------- tfds

TFDS_TRAIN, TFDS_TEST = 6, 4


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A tiny tfds dataset prepared in array_record format with a custom builder (no TensorFlow)."""
    import tensorflow_datasets as tfds

    pngs = tmp_path_factory.mktemp("tfds_png")
    data_dir = str(tmp_path_factory.mktemp("tfds_data"))

    class TitokDataTestImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, 3)),
                        "label": tfds.features.ClassLabel(num_classes=3),
                        "file_name": tfds.features.Text(),
                    }
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples("train", TFDS_TRAIN), "test": self._generate_examples("test", 4)}

        def _generate_examples(self, split, n):
            for k in range(n):
                path = str(pngs / f"{split}{k}.png")
                if split == "train" and k == TFDS_TRAIN - 1:
                    with open(path, "wb") as f:
                        f.write(b"corrupt record")
                else:
                    _write_png(path, 20 + k, 24, 100 * (split == "test") + k)
                yield f"{split}{k}", {"image": path, "label": k % 3, "file_name": f"{split}{k}.png"}

    TitokDataTestImages(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir, str(pngs)


def test_tfds_array_record_source(tfds_dir):
    data_dir, pngs = tfds_dir
    cfg = {"source": "tfds", "name": "titok_data_test_images", "data_dir": data_dir, "eval_split": "test"}
    train = _loader(cfg, batch=4, size=16, train=True, seed=0)
    assert len(train.source) == TFDS_TRAIN and train.source[0]["name"].startswith("train")
    for b in _take(iter(train), 3):
        assert b["image"].shape == (4, 16, 16, 3) and b["image"].dtype == np.float32
        assert b["label"].dtype == np.int32 and set(b["label"].tolist()) <= {0, 1, 2}
    assert [n for n, _ in train.stats()["skipped"]] == [f"train{TFDS_TRAIN - 1}.png"]

    ev = _loader(cfg, batch=4, size=16, train=False)
    (batch,) = list(ev)
    names = sorted(os.path.join(pngs, f"test{k}.png") for k in range(TFDS_TEST))
    want = {resize_center_crop(Image.open(p), 16).tobytes() for p in names}
    assert {x.tobytes() for x in batch["image"]} == want
    assert sorted(batch["label"].tolist()) == sorted(k % 3 for k in range(TFDS_TEST))

    with pytest.raises(DataError, match="cannot open split 'validation'"):
        _loader({**cfg, "eval_split": None}, train=False)


# ------------------------------------------------------------------------------------------ global


def test_to_global_array_single_process(image_folder):
    import jax
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    batch = next(iter(_loader({"source": "folder", "path": image_folder}, batch=4)))
    g = parallel.to_global_array(batch, mesh, PartitionSpec("data"))
    assert g["image"].shape == (4, 16, 16, 3) and g["label"].shape == (4,)
    assert g["image"].sharding.spec == PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(g["image"]), batch["image"])
    g2 = parallel.to_global_array(batch, mesh, {"image": PartitionSpec("data"), "label": PartitionSpec()})
    np.testing.assert_array_equal(np.asarray(g2["label"]), batch["label"])
