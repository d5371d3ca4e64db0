"""Stage-2 perceptual loss ``PerceptualLoss('convnext_s')`` of bytedance/1d-tokenizer.

``modeling/modules/perceptual_loss.py`` (official_titok.md section 6): both images (RGB in [0, 1])
are resized to 224x224 with ``F.interpolate(mode='bilinear', align_corners=False, antialias=True)``,
normalised with the ImageNet mean/std, passed through a frozen torchvision ConvNeXt-S in eval mode,
and the loss is the MSE between the two 1000-way **logit** vectors (mean over batch and classes).

``jax.image.resize(method='linear', antialias=True)`` is the same triangle filter, widened by the
downscale factor and renormalised at the borders, that PyTorch's antialiased bilinear uses; on the
seeded fixture (256 -> 224) it matches ``F.interpolate`` to 2.7e-7 (float32 rounding), so it is used
as is. Channels-last: images are ``[B, H, W, 3]``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from titok_jax.models.convnext import CONVNEXT_SMALL, ConvNeXt, ConvNeXtConfig
from titok_jax.models.convnext_map import load_params

INPUT_SIZE = 224
IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], np.float32)


def build_convnext(config: ConvNeXtConfig = CONVNEXT_SMALL) -> ConvNeXt:
    """The perceptual network (float32; parameters come from ``load_convnext_params``)."""
    return ConvNeXt(config)


def load_convnext_params(path: str, allow_pickle: bool = False, prefix: str = "",
                         config: ConvNeXtConfig = CONVNEXT_SMALL) -> dict:  # fmt: skip
    """ConvNeXt-S weights from torchvision's checkpoint (``convnext_small-0c510722.pth`` needs
    ``allow_pickle=True``; a ``.safetensors`` conversion does not), or from a stage-2 loss-module
    state_dict with ``prefix=titok_jax.models.convnext_map.LOSS_MODULE_PREFIX``."""
    return load_params(path, config, allow_pickle=allow_pickle, prefix=prefix)


def resize_to_input(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """[B, H, W, C] -> [B, size, size, C]: PyTorch antialiased bilinear (align_corners=False)."""
    b, _, _, c = images.shape
    return jax.image.resize(images, (b, size, size, c), method="linear", antialias=True)


def normalize_imagenet(images: jax.Array) -> jax.Array:
    return (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def preprocess(images: jax.Array) -> jax.Array:
    """Images in [0, 1] -> the ConvNeXt input: resize to 224, ImageNet normalisation (float32)."""
    return normalize_imagenet(resize_to_input(jnp.asarray(images, jnp.float32)))


def convnext_logits(convnext_params, images: jax.Array, model: Optional[ConvNeXt] = None) -> jax.Array:
    """Images [B, H, W, 3] in [0, 1] -> ConvNeXt logits [B, 1000] with frozen parameters."""
    model = build_convnext() if model is None else model
    params = jax.lax.stop_gradient(convnext_params)
    return model.apply({"params": params}, preprocess(images))


def perceptual_loss(convnext_params, real: jax.Array, recon: jax.Array, model: Optional[ConvNeXt] = None) -> jax.Array:
    """MSE between ConvNeXt logits of ``real`` and ``recon`` ([B, H, W, 3] in [0, 1]) -> scalar.

    The network is frozen (``stop_gradient`` on its parameters); the gradient flows to ``recon``
    (and to ``real`` if differentiated). Both batches go through one forward pass.
    """
    if real.shape != recon.shape:
        raise ValueError(f"real {tuple(real.shape)} and recon {tuple(recon.shape)} must have the same shape")
    logits = convnext_logits(convnext_params, jnp.concatenate([real, recon], axis=0), model)
    a, b = jnp.split(logits.astype(jnp.float32), 2, axis=0)
    return jnp.mean(jnp.square(a - b))
