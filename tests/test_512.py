"""ImageNet 512x512: the two paper models (configs, layout, parameter counts) and the 512-px teacher
(the MaskGIT-VQGAN in MaskGIT's Flax checkpoint format: export -> import round trip, 32x32 codes)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import fixture_dir

from titok_jax import config as config_lib
from titok_jax.api import weights as weights_lib
from titok_jax.config import presets
from titok_jax.models import maskgit_vqgan, registry, titok
from titok_jax.porting import io


def n_params(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


@pytest.mark.parametrize(
    "path,latents,encoder,total,stage1,generator_steps",
    [
        ("configs/titok_l64_512.py", 64, (1024, 24, 16), 644_298_767, 613_558_284, 8),
        ("configs/titok_b128_512.py", 128, (768, 12, 12), 207_320_847, 176_580_364, 64),
    ],
)
def test_512_configs_build(path, latents, encoder, total, stage1, generator_steps):
    run = config_lib.load(path)
    tok = run.tokenizer
    assert run.image_size == tok.image_size == 512 and run.stages == ("stage1", "stage2")
    assert tok.encoder_vit == tok.decoder_vit == encoder and tok.num_latent_tokens == latents
    assert tok.grid_size == 16  # encoder: patch 32, 256 patches as at 256 px
    assert tok.image_size // tok.decoder_patch_size == 32  # decoder: the 32x32 grid of the 512-px teacher
    assert run.teacher.model == presets.MODELS["maskgit_vqgan_512"]
    assert 512 // run.teacher.model.downsample_factor == 32
    # the paper's 177M MaskGIT generator over the tokenizer's ids, its sampler and the 512 evaluation
    gen = run.generator_config
    assert (gen.image_seq_len, gen.codebook_size, gen.hidden_size, gen.num_hidden_layers) == (latents, 4096, 768, 24)
    assert abs(registry.generator(run).num_params / 177e6 - 1) < 0.005
    assert run.sampling().num_steps == generator_steps and run.sampling().mask_schedule == "arccos"
    assert run.evaluate.split == "eval"
    # parameter counts (README): L-64 matches the quoted 644M; B-128 is 2.6% above the quoted 202M
    assert n_params(titok.abstract_params(tok)) == total
    assert n_params(titok.abstract_params(dataclasses.replace(tok, finetune_decoder=False))) == stage1
    s1 = config_lib.load(path + ":stage1")
    assert not s1.tokenizer.finetune_decoder and s1.stages == ("stage1",)


def test_stage1_at_512_predicts_the_teachers_32x32_codes():
    """Shapes only (nothing computed): teacher ids and TiTok proxy logits share the 32x32 grid."""
    for name in ("titok_l64_512", "titok_tiny_512"):
        run = config_lib.load(name)
        teacher = run.teacher.model if name == "titok_l64_512" else presets.MODELS["maskgit_vqgan_tiny_512"]
        x = jax.ShapeDtypeStruct((1, 512, 512, 3), jnp.float32)
        t = maskgit_vqgan.MaskGITVQGAN(teacher)
        ids = jax.eval_shape(lambda p, im: t.apply({"params": p}, im, method=t.encode)[1]["ids"],
                             maskgit_vqgan.abstract_params(teacher), x)  # fmt: skip
        tok = dataclasses.replace(run.tokenizer, finetune_decoder=False)
        m = titok.TiTok(tok)
        logits = jax.eval_shape(lambda p, im: m.apply({"params": p}, im)[0], titok.abstract_params(tok), x)
        assert ids.shape == (1, 32, 32) and logits.shape == (1, 32, 32, teacher.codebook_size)


def test_maskgit_flax_writer_is_byte_exact_on_the_original_fixture(tmp_path):
    """Our MaskGIT-format writer reproduces a checkpoint written by the original code, byte for byte."""
    src = fixture_dir("tiny", "maskgit_jax_vqgan_tiny") / "tokenizer_tiny_checkpoint"
    io.save_maskgit_jax_checkpoint(io.load_maskgit_jax_checkpoint(str(src)), str(tmp_path / "ckpt"))
    assert (tmp_path / "ckpt").read_bytes() == src.read_bytes()


def test_512_teacher_export_import_round_trip_and_codes(tmp_path):
    """A tiny 512-shaped MaskGIT-VQGAN (5 levels, f16) exported in MaskGIT's Flax format, imported back
    (auto-detected like tokenizer_imagenet512_checkpoint), identical; its codes form the 32x32 grid."""
    run = config_lib.load("configs/maskgit_vqgan_512.py")
    assert run.image_size == 512 and run.model == presets.MODELS["maskgit_vqgan"]  # the 256 network
    tiny = config_lib.load("maskgit_vqgan_tiny_512")
    assert tiny.image_size == 512 and tiny.model.downsample_factor == 16
    handle = registry.tokenizer(tiny)
    rng = np.random.default_rng(0)  # random weights without compiling the initialisers (tens of CPU seconds)
    params = jax.tree.map(lambda a: (0.2 * rng.standard_normal(a.shape)).astype(np.float32), handle.abstract())
    state, paths = weights_lib.export_weights(tiny, params, str(tmp_path / "out"), fmt="maskgit_jax")
    assert len(state) == len(handle.torch_map().rules) and "quantizer/codebook" in state
    _, back, meta = weights_lib.import_weights(tiny, paths["weights"])
    assert meta["source_format"] == "maskgit_jax"
    jax.tree.map(np.testing.assert_array_equal, back, params)
    _, paths2 = weights_lib.export_weights(tiny, back, str(tmp_path / "again"), fmt="maskgit_jax")
    assert open(paths2["weights"], "rb").read() == open(paths["weights"], "rb").read()
    # the same file read with the full-size config fails with a clear shape report
    with pytest.raises(ValueError, match="does not match the model built from the config"):
        weights_lib.import_weights(run, paths["weights"])
    # ids at the 512 grid
    m = handle.module()
    x = jax.random.uniform(jax.random.key(1), (1, 512, 512, 3))
    ids = jax.jit(lambda p, im: m.apply({"params": p}, im, method=m.encode)[1]["ids"])(back, x)
    assert ids.shape == (1, 32, 32) and ids.dtype == jnp.int32
    assert 0 <= int(ids.min()) and int(ids.max()) < tiny.model.codebook_size
