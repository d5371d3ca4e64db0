"""Stage-2 training losses: ConvNeXt-S perceptual loss and the hinge / LeCam adversarial losses."""

from titok_jax.losses.gan import (
    discriminator_loss,
    generator_adversarial_loss,
    hinge_d_loss,
    init_lecam_state,
    lecam_ema_update,
    lecam_loss,
)
from titok_jax.losses.perceptual import (
    build_convnext,
    convnext_logits,
    load_convnext_params,
    perceptual_loss,
    preprocess,
)

__all__ = [
    "discriminator_loss",
    "generator_adversarial_loss",
    "hinge_d_loss",
    "lecam_loss",
    "init_lecam_state",
    "lecam_ema_update",
    "build_convnext",
    "convnext_logits",
    "load_convnext_params",
    "perceptual_loss",
    "preprocess",
]
