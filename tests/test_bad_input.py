"""Bad input gets a clear error that says what was wrong and what to do."""

import json
import os
import shutil
import struct

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
from conftest import fixture_dir, load_st
from safetensors.numpy import save_file
from titok_fixtures import TITOK_TINY, VQGAN_JAX_TINY

from titok_jax.config import presets
from titok_jax.images import ImageError, load_images, validate_batch
from titok_jax.models import maskgit_vqgan_map
from titok_jax.models.maskgit_vqgan import init_params as vqgan_init
from titok_jax.models.titok import TiTok, TiTokConfig, abstract_params
from titok_jax.models.titok_map import torch_name_map
from titok_jax.porting.io import WeightFileError, load_maskgit_jax_checkpoint, load_state_dict
from titok_jax.porting.mapping import PortError


@pytest.fixture(scope="module")
def tiny_sd():
    return load_st(fixture_dir("tiny", "titok_tiny") / "state_dict.safetensors")


def convert(sd, cfg=TITOK_TINY):
    return torch_name_map(cfg).to_flax(sd, abstract_params(cfg))


def test_missing_key_is_named(tiny_sd):
    sd = dict(tiny_sd)
    del sd["encoder.transformer.1.mlp.c_fc.weight"]
    with pytest.raises(PortError, match=r"1 missing key.*encoder\.transformer\.1\.mlp\.c_fc\.weight.*\[256, 64\]"):
        convert(sd)


def test_unexpected_key_is_named(tiny_sd):
    sd = dict(tiny_sd, **{"decoder.extra.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(PortError, match=r"1 unexpected key.*decoder\.extra\.weight.*\[3, 3\]"):
        convert(sd)


def test_shape_mismatch_names_both_shapes(tiny_sd):
    sd = dict(tiny_sd, latent_tokens=np.zeros((16, 64), np.float32))
    with pytest.raises(
        PortError, match=r"shape mismatch at 'latent_tokens': checkpoint \[16, 64\], model expects \[8, 64\]"
    ):
        convert(sd)


def test_wrong_config_for_weights(tiny_sd):
    """Tiny weights against the full-size b64 config: the first mismatch is reported with shapes."""
    cfg = presets.MODELS["titok_b64"]
    with pytest.raises(
        PortError, match="shape mismatch at 'latent_tokens': checkpoint \\[8, 64\\], model expects \\[64, 768\\]"
    ):
        torch_name_map(cfg).to_flax(tiny_sd, abstract_params(cfg))


def test_non_float_and_nan_tensors(tiny_sd):
    with pytest.raises(PortError, match="dtype int64, expected a float"):
        convert(dict(tiny_sd, latent_tokens=np.zeros((8, 64), np.int64)))
    bad = tiny_sd["latent_tokens"].copy()
    bad[0, 0] = np.nan
    with pytest.raises(PortError, match="NaN or Inf"):
        convert(dict(tiny_sd, latent_tokens=bad))


def test_export_with_wrong_tree_is_refused():
    params = {"latent_tokens": np.zeros((8, 64), np.float32)}
    with pytest.raises(PortError, match="rule\\(s\\) point at no Flax parameter"):
        torch_name_map(TITOK_TINY).to_external(params)


def test_truncated_and_garbage_safetensors(tmp_path, tiny_sd):
    path = tmp_path / "w.safetensors"
    save_file({"latent_tokens": tiny_sd["latent_tokens"]}, str(path))
    data = path.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(WeightFileError, match="truncated"):
        load_state_dict(str(tmp_path / "t.safetensors"))
    (tmp_path / "g.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(WeightFileError, match="truncated or not a safetensors file"):
        load_state_dict(str(tmp_path / "g.safetensors"))
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(WeightFileError, match="empty"):
        load_state_dict(str(tmp_path / "e.safetensors"))
    with pytest.raises(WeightFileError, match="not found"):
        load_state_dict(str(tmp_path / "nope.safetensors"))
    with pytest.raises(WeightFileError, match="unknown weight file type"):
        shutil.copy(path, tmp_path / "w.npz")
        load_state_dict(str(tmp_path / "w.npz"))


def test_pickles_need_explicit_permission(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(WeightFileError, match="--allow_pickle"):
        load_state_dict(str(p))
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(WeightFileError, match="needs torch"):
            load_state_dict(str(p), allow_pickle=True)
    else:
        with pytest.raises(WeightFileError, match="could not read PyTorch checkpoint"):
            load_state_dict(str(p), allow_pickle=True)


def test_bf16_safetensors_are_widened(tmp_path):
    x = np.array([1.0, -2.5, 3.140625], np.float32)
    data = (x.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"a": {"dtype": "BF16", "shape": [3], "data_offsets": [0, len(data)]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    np.testing.assert_array_equal(load_state_dict(str(path))["a"], x)


def test_maskgit_checkpoint_errors(tmp_path):
    src = fixture_dir("tiny", "maskgit_jax_vqgan_tiny") / "tokenizer_tiny_checkpoint"
    data = src.read_bytes()
    (tmp_path / "trunc").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="not a readable flax msgpack checkpoint"):
        load_maskgit_jax_checkpoint(str(tmp_path / "trunc"))
    (tmp_path / "noparams").write_bytes(msgpack.packb({"step": 3}))
    with pytest.raises(WeightFileError, match="'params' collection"):
        load_maskgit_jax_checkpoint(str(tmp_path / "noparams"))
    # A checkpoint of another size: the map reports the first shape mismatch.
    ckpt = load_maskgit_jax_checkpoint(str(src))
    big = presets.MODELS["maskgit_vqgan"]
    with pytest.raises(PortError, match="shape mismatch"):
        maskgit_vqgan_map.maskgit_jax_name_map(big).to_flax(
            ckpt, jax.eval_shape(lambda r: vqgan_init(big, r), jax.random.key(0))
        )
    ok = maskgit_vqgan_map.maskgit_jax_name_map(VQGAN_JAX_TINY).to_flax(
        ckpt, jax.eval_shape(lambda r: vqgan_init(VQGAN_JAX_TINY, r), jax.random.key(0))
    )
    assert ok["quantize"]["embedding"].shape == (64, 32)


@pytest.mark.parametrize(
    "x,match",
    [
        (np.zeros((2, 3, 64, 64), np.float32), "looks like NCHW"),
        (np.zeros((2, 64, 64, 3), np.uint8), "uint8.*x / 255"),
        (np.full((1, 64, 64, 3), -0.5, np.float32), r"\[-1, 1\]: use \(x \+ 1\) / 2"),
        (np.full((1, 64, 64, 3), 200.0, np.float32), r"\[0, 255\]: divide by 255"),
        (np.zeros((1, 32, 32, 3), np.float32), "expected 64x64"),
        (np.zeros((64, 64, 3), np.float32), "add a batch axis"),
        (np.full((1, 64, 64, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_image_validation(x, match):
    with pytest.raises(ImageError, match=match):
        validate_batch(x, 64)


def test_model_checks_layout_at_trace_time():
    m = TiTok(TITOK_TINY)
    with pytest.raises(ValueError, match="looks like NCHW"):
        jax.eval_shape(lambda x: m.init(jax.random.key(0), x), jnp.zeros((1, 3, 64, 64)))
    with pytest.raises(ValueError, match="must be 64x64"):
        jax.eval_shape(lambda x: m.init(jax.random.key(0), x), jnp.zeros((1, 128, 128, 3)))


def test_image_files(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError, match="cannot read image"):
        load_images([str(tmp_path / "broken.png")], 64)
    with pytest.raises(ImageError, match="not found"):
        load_images([str(tmp_path / "missing.jpg")], 64)
    with pytest.raises(ImageError, match="unknown bundled photo"):
        load_images(["skimage:nonexistent"], 64)
    names, x = load_images(["skimage:chelsea"], 64)  # 300x451 -> resize short side + center crop
    assert names == ["chelsea"] and x.shape == (1, 64, 64, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_config_errors():
    with pytest.raises(ValueError, match="unknown TiTok config keys \\['widht'\\]"):
        TiTokConfig.from_dict({"widht": 3})
    with pytest.raises(ValueError, match="finetune_decoder=True needs quantize_mode='vq'"):
        TiTokConfig(quantize_mode="vae", finetune_decoder=True)
    with pytest.raises(ValueError, match="encoder_size='huge'"):
        TiTokConfig(encoder_size="huge")
    with pytest.raises(ValueError, match="unknown config flag 'stage3'"):
        presets.tokenizer_config("titok_b64", "stage3")
    with pytest.raises(ValueError, match="unknown model 'titok_b65'"):
        presets.tokenizer_config("titok_b65")
    with pytest.raises(ValueError, match="':stage1' applies to the legacy"):
        presets.tokenizer_config("titok_bl64_vq8k", "stage1")


def test_token_id_validation():
    from titok_jax.api import Tokenizer

    tok = Tokenizer.random_init("titok_tiny", 0)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 64\)"):
        tok.decode_tokens(np.full((1, 8), 64))
    with pytest.raises(ValueError, match="must be integers"):
        tok.decode_tokens(np.zeros((1, 8), np.float32))
    assert os.path.basename(__file__)
