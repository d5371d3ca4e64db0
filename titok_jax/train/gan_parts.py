"""The stage-2 loss networks as the training stages use them: discriminator, GAN losses, perceptual net.

Thin glue between the stages and ``titok_jax.models.discriminator`` / ``titok_jax.losses``.
The perceptual network (ConvNeXt-S logits, official recipe) needs torchvision's ImageNet weights,
which cannot be downloaded at run time: the config names the file (``perceptual_checkpoint``); with
``perceptual_weight`` > 0 and no file the run stops with a message, and a config that sets
``perceptual_weight = 0`` gets a logged warning (never silently).
"""

from __future__ import annotations

import logging
from typing import Any, Dict

import jax
import jax.numpy as jnp

from titok_jax.losses import gan
from titok_jax.models import discriminator as disc_lib
from titok_jax.models import discriminator_map

log = logging.getLogger("titok_jax.train")


class PerceptualConfigError(ValueError):
    pass


def discriminator_config(config) -> disc_lib.DiscriminatorConfig:
    d = config.get("discriminator")
    return disc_lib.DiscriminatorConfig.from_dict(d.to_dict() if d is not None else {})


def init_discriminator(config, rng, image_size: int):
    import flax.linen as nn

    return nn.meta.unbox(disc_lib.init_params(discriminator_config(config), rng, image_size))


def discriminator_name_map(config):
    return discriminator_map.torch_name_map(discriminator_config(config))


def discriminate(config, disc_params, images):
    m = disc_lib.NLayerDiscriminator(discriminator_config(config))
    return m.apply({"params": disc_params}, images).astype(jnp.float32)


hinge_loss = gan.hinge_d_loss
generator_loss = gan.generator_adversarial_loss
lecam_loss = gan.lecam_loss


def lecam_ema_update(lecam: Dict[str, jax.Array], mean_real, mean_fake, decay: float) -> Dict[str, jax.Array]:
    return gan.lecam_ema_update(lecam, mean_real, mean_fake, decay)


def load_perceptual(config, sc) -> Dict[str, Any]:
    """{'perceptual': ConvNeXt-S params} when the stage uses the perceptual loss, else {} (+ warning)."""
    if not sc.perceptual_weight:
        log.warning(
            "%s: perceptual_weight is 0 -- training WITHOUT the perceptual (ConvNeXt-S) loss of the official recipe",
            sc.get("name", "stage"),
        )
        print(
            f"warning: {sc.get('name', 'this stage')} runs without the perceptual loss (perceptual_weight=0)",
            flush=True,
        )
        return {}
    path = sc.get("perceptual_checkpoint")
    if not path:
        raise PerceptualConfigError(
            "perceptual_weight > 0 needs the torchvision ConvNeXt-S ImageNet weights: download "
            "convnext_small-0c510722.pth (torchvision ConvNeXt_Small_Weights.IMAGENET1K_V1) and set "
            "perceptual_checkpoint=PATH (or convert it to .safetensors), or set perceptual_weight=0 explicitly"
        )
    from titok_jax.losses import perceptual

    return {"perceptual": perceptual.load_convnext_params(path, allow_pickle=True)}


def perceptual_loss(params, real, recon):
    from titok_jax.losses import perceptual

    return perceptual.perceptual_loss(params, real, recon)
