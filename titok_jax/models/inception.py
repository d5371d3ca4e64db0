"""FID Inception-v3 (pytorch-fid's ``fid_inception_v3``), channels-last, inference only.

The network every FID/IS number of TiTok is measured with: torchvision ``Inception3(num_classes=1008,
aux_logits=False)`` with Mixed_5b..7c replaced by pytorch-fid's FID blocks, carrying the weights of the
TensorFlow 2015-12-05 Inception graph (pytorch-fid release asset ``pt_inception-2015-12-05-6726825d.pth``;
``titok_jax.models.inception_map.load_inception_params`` reads it). official_titok.md section 9.

    block0  Conv2d_1a_3x3 (s2), Conv2d_2a_3x3, Conv2d_2b_3x3 (pad 1), MaxPool 3/2       -> 73x73x64
    block1  Conv2d_3b_1x1, Conv2d_4a_3x3, MaxPool 3/2                                    -> 35x35x192
    block2  Mixed_5b/5c/5d (InceptionA), Mixed_6a (B), Mixed_6b..6e (C)                  -> 17x17x768
    block3  Mixed_7a (D), Mixed_7b (E, avg-pool branch), Mixed_7c (E, MAX-pool branch),
            global mean                                                                   -> pool3 [B, 2048]
    fc      logits = pool3 @ W + b  [B, 1008];  logits_unbiased = pool3 @ W (torch-fidelity's IS input)

Each ``BasicConv2d`` is conv (no bias) -> BatchNorm (eval, eps 1e-3) -> ReLU. The FID blocks differ from
torchvision's in their pooling branch: 3x3/1 average pools exclude the zero padding from the count
(``count_include_pad=False``) and Mixed_7c max-pools instead.

BatchNorm running statistics live in the ``params`` tree next to scale/bias (``{scale, bias, mean, var}``
per ``bn``), not in a ``batch_stats`` collection: the network is only ever evaluated, so one tree keeps
the name map, loading and sharding trivial. Do not train through it (the statistics would get gradients).

Preprocessing (both take uint8 NHWC and return float32 NHWC at 299x299):

* ``preprocess_pytorch_fid``: k/255 -> ``F.interpolate(bilinear, align_corners=False)`` (half-pixel
  centres, no antialias) -> 2x - 1. This is pytorch-fid's ``InceptionV3`` wrapper (the seeded fixture).
* ``preprocess_tf1`` (default for rFID): torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``
  (TF1 ``ResizeBilinear``: source = dst * in/out, no half-pixel offset, no antialias) on 0..255 values,
  then (x - 128) / 128. This is what the 1d-tokenizer evaluator and the TF graph of the ADM suite do.

Both resizes are written here as index gathers plus a two-tap blend per axis, because
``jax.image.resize`` always uses half-pixel centres (so it can never match TF1: on the seeded fixture
that changes pool3 by 4e-2) and by default antialiases when downsampling, which ``F.interpolate`` does
not (with ``antialias=False`` its ``"linear"`` mode agrees with the pytorch mode here to 1e-6 on pool3
for the fixture's 256 -> 299 upsampling). Numerics: the official evaluator runs the
network in float64; this port runs in float32 with ``Precision.HIGHEST`` convolutions (so GPUs do not
drop to TF32/bf16 passes: on an H200 the seeded fixture's pool3 is off by 2e-3 with the default precision,
by 1.7e-6 with HIGHEST; HIGHEST ran the 'tf1' features at ~2,300 images/s at batch 250 there, the default
at ~9,700). Expect pool3 to differ from a float64 run by ~1e-6 relative; FID statistics
are accumulated in float64 (``titok_jax.evaluation.metrics``), which is where precision matters.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

BN_EPS = 1e-3
FID_IMAGE_SIZE = 299
NUM_CLASSES = 1008
POOL3_DIM = 2048
MIN_IMAGE_SIZE = 75  # smallest input the stride-2 stem and reductions accept
HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


class FrozenBatchNorm(nn.Module):
    """Eval-mode BatchNorm over the last axis: (x - mean) / sqrt(var + eps) * scale + bias."""

    eps: float = BN_EPS

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        mean = self.param("mean", nn.initializers.zeros, (c,), jnp.float32)
        var = self.param("var", nn.initializers.ones, (c,), jnp.float32)
        inv = scale * jax.lax.rsqrt(var + self.eps)
        return x * inv.astype(x.dtype) + (bias - mean * inv).astype(x.dtype)


class BasicConv2d(nn.Module):
    """conv (no bias, explicit torch-style symmetric padding) -> FrozenBatchNorm -> ReLU."""

    features: int
    kernel: Tuple[int, int]
    stride: int = 1
    padding: Tuple[int, int] = (0, 0)
    dtype: Dtype = jnp.float32
    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel,
            strides=(self.stride, self.stride),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            precision=self.precision,
            name="conv",
        )(x)
        return nn.relu(FrozenBatchNorm(name="bn")(x))


def _avg_pool_3x3_exclude_pad(x: jax.Array) -> jax.Array:
    """3x3/1 average pool, padding 1, divided by the number of real (unpadded) pixels."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: jax.Array, stride: int, pad: int = 0) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class _Block(nn.Module):
    dtype: Dtype = jnp.float32
    precision: Any = HIGHEST

    def conv(self, name: str, features: int, kernel, stride: int = 1, padding=(0, 0)) -> BasicConv2d:
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        return BasicConv2d(features, kernel, stride, tuple(padding), self.dtype, self.precision, name=name)


class InceptionA(_Block):
    """Mixed_5b/5c/5d (pytorch-fid FIDInceptionA): 1x1 | 5x5 | double 3x3 | avg-pool(excl. pad) + 1x1."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x):
        b1 = self.conv("branch1x1", 64, 1)(x)
        b5 = self.conv("branch5x5_2", 64, 5, padding=(2, 2))(self.conv("branch5x5_1", 48, 1)(x))
        b3 = self.conv("branch3x3dbl_1", 64, 1)(x)
        b3 = self.conv("branch3x3dbl_2", 96, 3, padding=(1, 1))(b3)
        b3 = self.conv("branch3x3dbl_3", 96, 3, padding=(1, 1))(b3)
        bp = self.conv("branch_pool", self.pool_features, 1)(_avg_pool_3x3_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """Mixed_6a (torchvision InceptionB): 3x3/2 | double 3x3 (last /2) | max-pool 3/2."""

    @nn.compact
    def __call__(self, x):
        b3 = self.conv("branch3x3", 384, 3, stride=2)(x)
        bd = self.conv("branch3x3dbl_1", 64, 1)(x)
        bd = self.conv("branch3x3dbl_2", 96, 3, padding=(1, 1))(bd)
        bd = self.conv("branch3x3dbl_3", 96, 3, stride=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


class InceptionC(_Block):
    """Mixed_6b..6e (pytorch-fid FIDInceptionC): factorised 7x7 branches, avg-pool excluding padding."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = self.conv("branch1x1", 192, 1)(x)
        b7 = self.conv("branch7x7_1", c7, 1)(x)
        b7 = self.conv("branch7x7_2", c7, (1, 7), padding=(0, 3))(b7)
        b7 = self.conv("branch7x7_3", 192, (7, 1), padding=(3, 0))(b7)
        bd = self.conv("branch7x7dbl_1", c7, 1)(x)
        bd = self.conv("branch7x7dbl_2", c7, (7, 1), padding=(3, 0))(bd)
        bd = self.conv("branch7x7dbl_3", c7, (1, 7), padding=(0, 3))(bd)
        bd = self.conv("branch7x7dbl_4", c7, (7, 1), padding=(3, 0))(bd)
        bd = self.conv("branch7x7dbl_5", 192, (1, 7), padding=(0, 3))(bd)
        bp = self.conv("branch_pool", 192, 1)(_avg_pool_3x3_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """Mixed_7a (torchvision InceptionD): 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool 3/2."""

    @nn.compact
    def __call__(self, x):
        b3 = self.conv("branch3x3_2", 320, 3, stride=2)(self.conv("branch3x3_1", 192, 1)(x))
        b7 = self.conv("branch7x7x3_1", 192, 1)(x)
        b7 = self.conv("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
        b7 = self.conv("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
        b7 = self.conv("branch7x7x3_4", 192, 3, stride=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


class InceptionE(_Block):
    """Mixed_7b (``pool="avg"``, FIDInceptionE_1: avg excluding padding) / Mixed_7c (``pool="max"``,
    FIDInceptionE_2: 3x3/1 max-pool, padding 1)."""

    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        b1 = self.conv("branch1x1", 320, 1)(x)
        b3 = self.conv("branch3x3_1", 384, 1)(x)
        b3 = jnp.concatenate(
            [
                self.conv("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                self.conv("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3),
            ],
            axis=-1,
        )
        bd = self.conv("branch3x3dbl_1", 448, 1)(x)
        bd = self.conv("branch3x3dbl_2", 384, 3, padding=(1, 1))(bd)
        bd = jnp.concatenate(
            [
                self.conv("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                self.conv("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd),
            ],
            axis=-1,
        )
        if self.pool == "avg":
            pooled = _avg_pool_3x3_exclude_pad(x)
        elif self.pool == "max":
            pooled = _max_pool(x, 1, 1)
        else:
            raise ValueError(f"InceptionE pool must be 'avg' or 'max', got {self.pool!r}")
        bp = self.conv("branch_pool", 192, 1)(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FcHead(nn.Module):
    """The 1008-way classifier, exposing the logits with and without its bias."""

    num_classes: int = NUM_CLASSES
    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, pool3: jax.Array) -> Tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (pool3.shape[-1], self.num_classes), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.num_classes,), jnp.float32)
        unbiased = jnp.dot(pool3, kernel.astype(pool3.dtype), precision=self.precision)
        return unbiased + bias.astype(pool3.dtype), unbiased


# --------------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------------

# Mixed block name -> (class, keyword arguments); the names are the torch state_dict prefixes.
MIXED_BLOCKS: Tuple[Tuple[str, type, Dict[str, Any]], ...] = (
    ("Mixed_5b", InceptionA, {"pool_features": 32}),
    ("Mixed_5c", InceptionA, {"pool_features": 64}),
    ("Mixed_5d", InceptionA, {"pool_features": 64}),
    ("Mixed_6a", InceptionB, {}),
    ("Mixed_6b", InceptionC, {"channels_7x7": 128}),
    ("Mixed_6c", InceptionC, {"channels_7x7": 160}),
    ("Mixed_6d", InceptionC, {"channels_7x7": 160}),
    ("Mixed_6e", InceptionC, {"channels_7x7": 192}),
    ("Mixed_7a", InceptionD, {}),
    ("Mixed_7b", InceptionE, {"pool": "avg"}),
    ("Mixed_7c", InceptionE, {"pool": "max"}),
)
BLOCK2_END = "Mixed_6e"


class FIDInceptionV3(nn.Module):
    """Preprocessed images [B, H, W, 3] (normally 299x299 from ``preprocess_*``) -> dict of
    ``pool3`` [B, 2048], ``logits`` [B, 1008] (with the fc bias), ``logits_unbiased`` [B, 1008];
    with ``return_blocks=True`` also ``block0`` [B, 73, 73, 64], ``block1`` [B, 35, 35, 192],
    ``block2`` [B, 17, 17, 768] (NHWC, sizes for 299 input).

    ``dtype`` is the compute dtype (float32 for FID; parameters always stay float32)."""

    num_classes: int = NUM_CLASSES
    dtype: Dtype = jnp.float32
    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array, return_blocks: bool = False) -> Dict[str, jax.Array]:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected preprocessed images [B, H, W, 3] (NHWC), got shape {tuple(x.shape)}")
        if min(x.shape[1:3]) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"images of {x.shape[1]}x{x.shape[2]} are too small for Inception-v3 (needs >= {MIN_IMAGE_SIZE}); "
                f"resize them to {FID_IMAGE_SIZE} with preprocess_tf1 / preprocess_pytorch_fid first"
            )
        kw = dict(dtype=self.dtype, precision=self.precision)
        out: Dict[str, jax.Array] = {}
        x = x.astype(self.dtype)
        x = BasicConv2d(32, (3, 3), 2, name="Conv2d_1a_3x3", **kw)(x)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3", **kw)(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3", **kw)(x)
        x = _max_pool(x, 2)
        out["block0"] = x
        x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1", **kw)(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3", **kw)(x)
        x = _max_pool(x, 2)
        out["block1"] = x
        for name, cls, extra in MIXED_BLOCKS:
            x = cls(name=name, **kw, **extra)(x)
            if name == BLOCK2_END:
                out["block2"] = x
        pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        logits, unbiased = FcHead(self.num_classes, self.precision, name="fc")(pool3)
        result = {"pool3": pool3, "logits": logits, "logits_unbiased": unbiased}
        if return_blocks:
            result.update({k: out[k] for k in ("block0", "block1", "block2")})
        return result


def init_params(rng: jax.Array, image_size: int = FID_IMAGE_SIZE) -> dict:
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    return FIDInceptionV3().init(rng, x)["params"]


def abstract_params() -> dict:
    """Parameter shapes/dtypes (23,885,486 float32 values incl. BatchNorm statistics) without allocating."""
    return jax.eval_shape(lambda r: init_params(r), jax.random.key(0))


# --------------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------------

RESIZE_MODES = ("pytorch", "tf1")


def bilinear_taps(in_size: int, out_size: int, mode: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the two source indices (lo, hi) and the weight of ``hi`` (float32).

    ``mode="pytorch"``: ``F.interpolate(bilinear, align_corners=False)``: src = max((dst + .5) * in/out
    - .5, 0), computed in float32 like torch's CPU kernel. ``mode="tf1"``: TF1 ``ResizeBilinear``
    (torch-fidelity): src = dst * float32(in/out), evaluated in float64 as in the float64 evaluator.
    Both: lo = floor(src) (<= in - 1), hi = min(lo + 1, in - 1), weight = src - lo."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    dst = np.arange(out_size)
    if mode == "pytorch":
        scale = np.float32(in_size) / np.float32(out_size)
        src = np.maximum(scale * (dst.astype(np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    elif mode == "tf1":
        src = dst.astype(np.float64) * np.float64(np.float32(in_size / out_size))
    else:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    w = np.clip(src - lo, 0.0, 1.0).astype(np.float32)
    return lo.astype(np.int32), hi.astype(np.int32), w


def _resize_axis(x: jax.Array, axis: int, out_size: int, mode: str) -> jax.Array:
    lo, hi, w = bilinear_taps(x.shape[axis], out_size, mode)
    a, b = jnp.take(x, lo, axis=axis), jnp.take(x, hi, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = out_size
    w = jnp.asarray(w, x.dtype).reshape(shape)
    if mode == "tf1":
        return a + (b - a) * w  # torch-fidelity's lerp form
    return a * (1 - w) + b * w  # torch's two-tap weighted sum


def resize_bilinear(x: jax.Array, size: Tuple[int, int], mode: str) -> jax.Array:
    """Bilinear resize of NHWC float images without antialiasing: width pass, then height pass."""
    if x.ndim != 4:
        raise ValueError(f"expected images [B, H, W, C], got shape {tuple(x.shape)}")
    x = _resize_axis(x, 2, int(size[1]), mode)
    return _resize_axis(x, 1, int(size[0]), mode)


def _check_uint8(images) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [B, H, W, 3] (NHWC, RGB), got shape {tuple(images.shape)}")
    if images.dtype != jnp.uint8:
        raise TypeError(
            f"expected uint8 images, got {images.dtype}; convert [0, 1] floats with "
            "titok_jax.evaluation.metrics.to_uint8 (the official truncation) first"
        )
    return jnp.asarray(images)


def preprocess_pytorch_fid(images_u8: jax.Array, size: int = FID_IMAGE_SIZE) -> jax.Array:
    """pytorch-fid ``InceptionV3(resize_input=True, normalize_input=True)``: uint8 NHWC -> k/255 ->
    bilinear (half-pixel, no antialias) to ``size`` -> 2x - 1; float32 [B, size, size, 3]."""
    x = _check_uint8(images_u8).astype(jnp.float32) / jnp.float32(255)
    return 2 * resize_bilinear(x, (size, size), "pytorch") - 1


def preprocess_tf1(images_u8: jax.Array, size: int = FID_IMAGE_SIZE) -> jax.Array:
    """1d-tokenizer evaluator / torch-fidelity / ADM TF graph: uint8 NHWC -> TF1 bilinear (no half-pixel
    offset) on 0..255 values -> (x - 128) / 128; float32 [B, size, size, 3]."""
    x = _check_uint8(images_u8).astype(jnp.float32)
    return (resize_bilinear(x, (size, size), "tf1") - 128) / 128


PREPROCESS = {"tf1": preprocess_tf1, "pytorch_fid": preprocess_pytorch_fid}
