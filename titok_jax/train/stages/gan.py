"""The pixel-space recipe of the GAN stages (teacher, stage 2, single stage): MSE + perceptual + hinge GAN + LeCam.

``GanMixin`` adds the official discriminator (``NLayerDiscriminator``) to a stage: its parameters,
optimizer and LeCam EMAs in the train state, the generator-side adversarial term, and the
discriminator half-step after every generator update (official_titok.md section 6).
``load_perceptual`` reads the frozen ConvNeXt-S of the perceptual loss.
"""

from __future__ import annotations

import logging
from typing import Any, Dict

import jax
import jax.numpy as jnp
import optax

from titok_jax.errors import InputError
from titok_jax.losses import gan, perceptual
from titok_jax.models import discriminator as disc_lib
from titok_jax.models import discriminator_map
from titok_jax.train.optim import cosine_schedule, make_optimizer
from titok_jax.train.state import TrainState

log = logging.getLogger(__name__)


class PerceptualConfigError(InputError):
    pass


def load_perceptual(sc) -> Dict[str, Any]:
    """{'perceptual': ConvNeXt-S params} when the stage uses the perceptual loss, else {} (+ a warning)."""
    if not sc.perceptual_weight:
        log.warning("%s runs WITHOUT the perceptual (ConvNeXt-S) loss of the official recipe (perceptual_weight=0)",
                    sc.name)  # fmt: skip
        return {}
    path = sc.perceptual_checkpoint
    if not path:
        raise PerceptualConfigError(
            f"{sc.name}.perceptual_weight > 0 needs the torchvision ConvNeXt-S ImageNet weights: download "
            "convnext_small-0c510722.pth (torchvision ConvNeXt_Small_Weights.IMAGENET1K_V1) and set "
            f"{sc.name}.perceptual_checkpoint=PATH with {sc.name}.allow_pickle=True (or convert it to .safetensors), "
            f"or set {sc.name}.perceptual_weight=0 explicitly"
        )
    return {"perceptual": perceptual.load_convnext_params(path, allow_pickle=sc.allow_pickle)}


class GanMixin:
    """Discriminator, LeCam and the pixel losses for a ``Stage`` (put it before ``Stage`` in the bases)."""

    run: Any
    sc: Any
    has_discriminator = True

    # -- discriminator --------------------------------------------------------------------------
    @property
    def disc_config(self):
        return self.run.discriminator

    def discriminate(self, disc_params, images):
        m = disc_lib.NLayerDiscriminator(self.disc_config)
        return m.apply({"params": disc_params}, images).astype(jnp.float32)

    def disc_tx(self, disc_params):
        sc = self.sc
        return make_optimizer(
            disc_params,
            lr_schedule=cosine_schedule(sc.disc_lr, sc.end_lr, sc.warmup_steps, max(sc.num_steps - sc.disc_start, 1)),
            b1=sc.b1,
            b2=sc.b2,
            weight_decay=sc.weight_decay,
            grad_clip=sc.grad_clip,
            name_map=discriminator_map.torch_name_map(self.disc_config),
        )

    def init_state(self, rng) -> TrainState:
        state = super().init_state(rng)
        _, r_disc, _ = jax.random.split(rng, 3)
        dp = disc_lib.init_params(self.disc_config, r_disc)
        return state.replace(
            disc_params=dp,
            disc_opt_state=self.disc_tx(dp).init(dp),
            lecam=gan.init_lecam_state(),
        )

    def load_aux(self, workdir: str) -> Dict[str, Any]:
        return load_perceptual(self.sc)

    def after_update(self, new: TrainState, old: TrainState, batch, output, metrics):
        new, d_metrics = self._discriminator_step(new, batch["image"], jax.lax.stop_gradient(output), old.step)
        metrics.update(d_metrics)
        return new, metrics

    # -- losses ---------------------------------------------------------------------------------
    def disc_factor(self, step):
        return jnp.where(step >= self.sc.disc_start, self.sc.disc_factor, 0.0)

    def adversarial_term(self, state, recon, step):
        """Generator side: disc_weight * f_D * (-mean D(x_hat)), D frozen."""
        if not self.sc.disc_weight:
            return jnp.zeros((), jnp.float32)
        logits = self.discriminate(jax.lax.stop_gradient(state.disc_params), recon)
        return self.sc.disc_weight * self.disc_factor(step) * gan.generator_adversarial_loss(logits)

    def pixel_losses(self, images, recon, aux, state, step):
        """w_rec * MSE + w_p * perceptual + adversarial (the stage-2 generator loss without quantizer)."""
        sc = self.sc
        mse = jnp.mean(jnp.square(images.astype(jnp.float32) - recon.astype(jnp.float32)))
        total = sc.reconstruction_weight * mse
        metrics = {"mse": mse}
        if sc.perceptual_weight:
            p = perceptual.perceptual_loss(aux["perceptual"], images, recon)
            total = total + sc.perceptual_weight * p
            metrics["perceptual"] = p
        adv = self.adversarial_term(state, recon, step)
        metrics["g_adv"] = adv
        return total + adv, metrics

    def _discriminator_step(self, state: TrainState, real, fake, step):
        sc = self.sc
        tx = self.disc_tx(state.disc_params)

        def d_loss_fn(dp):
            lr_, lf_ = self.discriminate(dp, real), self.discriminate(dp, fake)
            hinge = gan.hinge_d_loss(lr_, lf_)
            lecam = gan.lecam_loss(lr_, lf_, state.lecam["ema_real"], state.lecam["ema_fake"])
            total = self.disc_factor(step) * hinge + sc.lecam_weight * lecam
            return total, (hinge, lecam, jnp.mean(lr_), jnp.mean(lf_))

        def train_d(s):
            (total, (hinge, lecam, mr, mf)), g = jax.value_and_grad(d_loss_fn, has_aux=True)(s.disc_params)
            upd, dos = tx.update(g, s.disc_opt_state, s.disc_params)
            new_lecam = gan.lecam_ema_update(s.lecam, mr, mf, sc.lecam_decay)
            s = s.replace(disc_params=optax.apply_updates(s.disc_params, upd), disc_opt_state=dos, lecam=new_lecam)
            return s, {"d_loss": total, "d_hinge": hinge, "d_lecam": lecam, "logits_real": mr, "logits_fake": mf}

        def skip_d(s):
            z = jnp.zeros((), jnp.float32)
            return s, {"d_loss": z, "d_hinge": z, "d_lecam": z, "logits_real": z, "logits_fake": z}

        return jax.lax.cond(step >= sc.disc_start, train_d, skip_d, state)
