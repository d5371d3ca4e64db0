"""Bad input is stopped up front with a message, not a traceback or a silent wrong result (issue 10, point 7).

In-process and fast; the command-line ends (one ``error:`` line, exit 2) are in test_cli.py and
test_training_loop.py.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from conftest import huge_png
from PIL import Image

from titok_jax import images as im
from titok_jax.config import parse, presets
from titok_jax.data.transforms import to_pil
from titok_jax.errors import ConfigError
from titok_jax.porting.io import WeightFileError, load_safetensors, load_state_dict
from titok_jax.steps import pipeline
from titok_jax.train.stages.gan import load_perceptual


def _png16(path, h=16, w=64):
    ramp = np.tile(np.linspace(0, 65535, w).round().astype(np.uint16), (h, 1))
    Image.fromarray(ramp).save(path)
    return ramp


def test_16_bit_grayscale_png_is_scaled_not_white(tmp_path):
    ramp = _png16(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = np.asarray(to_pil(str(tmp_path / "g16.png")))  # the training loader's decoder
    want = np.round(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb, np.repeat(want[..., None], 3, axis=-1))
    np.testing.assert_array_equal(np.asarray(to_pil(np.stack([ramp] * 3, -1))), rgb)  # uint16 arrays too
    _, x = im.load_images([str(tmp_path / "g16.png")], 16)  # reconstruct's reader
    assert abs(x.mean() - 0.5) < 0.02 and x.max() < 0.7  # the centre crop of the ramp, not white


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_size_is_bounded_before_decoding(tmp_path):
    huge_png(tmp_path / "huge.png")  # beyond PIL's own guard (twice its limit)
    with pytest.raises(im.ImageError, match=r"huge\.png is too large to read: .*400000000 pixels.*downscale it"):
        im.load_images([str(tmp_path / "huge.png")], 32)
    with pytest.raises(im.ImageError, match="too large to read"):  # training: a reported skip, not a crash
        to_pil(str(tmp_path / "huge.png"))
    huge_png(tmp_path / "big.png", 10000, 10000)  # between PIL's warning and its guard: our bound
    with pytest.raises(im.ImageError, match=r"10000x10000 = 100,000,000 pixels, more than the limit of 89,478,485"):
        im.load_images([str(tmp_path / "big.png")], 32)


def _cfg(**single_stage):
    c = presets.training_config("titok_tiny_vq", "seed=0")
    c.stages = ("single_stage",)
    c.data = presets.data_config(source="photos", split="train", eval_split="eval")
    c.single_stage.update(single_stage)
    return c


@pytest.mark.parametrize(
    "field,value", [("checkpoint_every", 0), ("num_steps", 0), ("num_steps", -3), ("log_every", 0), ("lr", 0.0)]
)
def test_step_counts_and_rates_are_checked_when_parsed(field, value):
    with pytest.raises(ConfigError, match=rf"{field} must be"):
        parse(_cfg(**{field: value}))


def test_safetensors_header_that_is_json_but_not_an_object(tmp_path):
    for i, header in enumerate([b"[1, 2]", b'"text"', b'{"w": 3}']):
        path = tmp_path / f"bad{i}.safetensors"
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
        with pytest.raises(WeightFileError, match="corrupt safetensors header"):
            load_safetensors(str(path))


class _Trap:
    """Unpickling this writes a marker file: it shows whether anything was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_no_unpickling_of_the_perceptual_checkpoint_without_the_opt_in(tmp_path):
    marker = tmp_path / "unpickled"
    pth = tmp_path / "convnext_small.pth"
    pth.write_bytes(pickle.dumps(_Trap(str(marker))))
    run = parse(_cfg(perceptual_weight=0.1, perceptual_checkpoint=str(pth)))
    with pytest.raises(ConfigError, match=r"config\.single_stage\.allow_pickle=True"):
        pipeline.preflight(run, str(tmp_path / "wd"))  # before anything is compiled
    with pytest.raises(WeightFileError, match="--allow_pickle"):
        load_perceptual(run.single_stage)
    with pytest.raises(WeightFileError, match="--allow_pickle"):
        load_state_dict(str(pth))
    assert not marker.exists()


def test_reconstruct_output_names_are_unique():
    sources = ["a/x.png", "b/x.png", "c/grid.png", "skimage:coffee", "d/Coffee.png"]
    names = im.unique_names(sources, ["x", "x", "grid", "coffee", "Coffee"], reserved=("grid",))
    assert names == ["a_x", "b_x", "c_grid", "coffee", "d_Coffee"]
    assert len({n.lower() for n in names}) == len(names)
    assert im.unique_names(["p/x.png", "p/x.jpg"], ["x", "x"]) == ["p_x", "p_x-2"]


def test_a_bucket_workdir_is_refused_up_front_for_the_steps_that_write_locally():
    run = parse(_cfg()).replace(stages=("single_stage", "pretokenize"))
    with pytest.raises(ConfigError, match=r"the steps pretokenize write with local file I/O.*gs://bucket/run"):
        pipeline.preflight(run, "gs://bucket/run")
