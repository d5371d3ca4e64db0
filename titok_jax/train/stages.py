"""Training stages: each one is a state initialiser plus pure, jit-able step functions.

Every stage plugs into the one loop of ``titok_jax.train.loop``:

* ``init_state(rng) -> TrainState``                       (pure; jitted with output shardings)
* ``train_step(state, batch, aux) -> (state, metrics)``  (pure; jitted, state donated)
* ``eval_outputs(state, batch, aux) -> arrays``           (pure; default: originals + reconstructions)
* host-side edges: ``loaders(workdir, ...)`` (train/eval data; default: the image pipeline),
  ``eval_summary(outputs) -> (scalars, grid)`` (default: PSNR + an originals/reconstructions grid),
  ``load_aux(workdir)`` (frozen networks: teacher, perceptual net, tokenizer),
  ``handoff(state, workdir)`` (initial weights from earlier stages), ``final_params(state)``.

Stages (official_titok.md sections 5-6):

* ``teacher``: a MaskGIT-VQGAN trained in pixel space (VQ + MSE + perceptual + hinge GAN/LeCam), for
  domains without a pretrained teacher and for the offline demo;
* ``stage1``: TiTok predicts the teacher's proxy codes (CE + quantizer loss), EMA weights;
* ``stage2``: encoder/quantizer frozen (zero updates), ViT decoder + VQGAN pixel decoder + pixel
  codebook fine-tuned with MSE + perceptual + GAN (discriminator from ``discriminator_start``);
* ``single_stage``: a non-legacy (pixel-head) TiTok trained from scratch with the stage-2 losses
  plus the quantizer loss — no teacher;
* ``generator``: the MaskGIT generator on pre-tokenized ids (``titok_jax.train.generator_stage``).

This module never imports TensorFlow.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import os
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from titok_jax import checkpoint
from titok_jax.models import maskgit_vqgan_map, registry
from titok_jax.models.maskgit_vqgan import MaskGITVQGAN, VQGANConfig
from titok_jax.models.maskgit_vqgan import init_params as vqgan_init_params
from titok_jax.models.titok import TiTok, TiTokConfig
from titok_jax.quantizers.vq import codebook_usage
from titok_jax.train import gan_parts
from titok_jax.train.optim import cosine_schedule, ema_update, make_optimizer
from titok_jax.train.state import TrainState

log = logging.getLogger("titok_jax.train")

STAGES = ("teacher", "stage1", "stage2", "single_stage", "generator")


class StageError(ValueError):
    pass


def final_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage, "final")


def _tx(sc, params, name_map, frozen=()):
    return make_optimizer(
        params,
        lr_schedule=cosine_schedule(sc.lr, sc.end_lr, sc.warmup_steps, sc.num_steps),
        b1=sc.b1,
        b2=sc.b2,
        weight_decay=sc.weight_decay,
        grad_clip=sc.grad_clip,
        name_map=name_map,
        frozen=frozen,
        accumulation_steps=sc.get("grad_accum_steps", 1),
    )


def _global_norm(tree) -> jax.Array:
    return optax.tree.norm(tree)


class Stage(abc.ABC):
    """Shared machinery: optimizer, EMA, the GAN half-step, data and eval reconstruction."""

    name: str = ""
    section: str = ""  # config section with the stage's hyper-parameters (default: the stage name)
    has_discriminator: bool = False
    grid_name: str = "recon"  # eval image grid: WORKDIR/<stage>/<grid_name>_final.png

    def __init__(self, config):
        self.config = config
        self.sc = config[self.section or self.name]
        self.dtype = registry.DTYPES[config.get("dtype", "float32")]
        self.image_size = self._image_size()

    # -- to implement ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _image_size(self) -> int:
        """Training image size (pixels)."""

    @abc.abstractmethod
    def init_params(self, rng) -> Any:
        """Random-init parameters of the trained model (pure)."""

    def name_map(self):
        return None

    def frozen(self) -> Tuple[str, ...]:
        return ()

    @abc.abstractmethod
    def generator_loss(self, params, state, batch, aux, rng) -> Tuple[jax.Array, Tuple[Dict[str, jax.Array], Any]]:
        """(loss, (metrics, model output passed to the discriminator step)) of the trained model (pure)."""

    @abc.abstractmethod
    def reconstruct(self, state, batch, aux) -> jax.Array:
        """Eval reconstructions of ``batch['image']`` in [0, 1] (pure)."""

    # -- data and eval (image stages; the generator stage overrides) ----------------------------
    def loaders(self, workdir: str, process_index: int, process_count: int):
        """(train loader, eval loader) for this process."""
        from titok_jax import data as data_lib

        common = dict(image_size=self.image_size, seed=self.config.seed, process_index=process_index,
                      process_count=process_count)  # fmt: skip
        train = data_lib.make_loader(self.config.data, global_batch_size=self.sc.batch_size, train=True, **common)
        eval_batch = self.config.eval.batch_size
        ev = data_lib.make_loader(self.config.data, global_batch_size=eval_batch, train=False, **common)
        return train, ev

    def eval_outputs(self, state, batch, aux) -> Dict[str, jax.Array]:
        return {"orig": batch["image"], "recon": self.reconstruct(state, batch, aux)}

    def eval_summary(self, outputs: Dict[str, Any]) -> Tuple[Dict[str, float], Any]:
        import numpy as np

        from titok_jax import images as im

        orig = np.asarray(outputs["orig"], np.float32)
        recon = np.clip(np.asarray(outputs["recon"], np.float32), 0.0, 1.0)
        return {"psnr": float(np.mean(im.psnr(orig, recon)))}, im.grid([orig, recon])

    # -- common ---------------------------------------------------------------------------------
    def tx(self, params):
        return _tx(self.sc, params, self.name_map(), self.frozen())

    def disc_tx(self, disc_params):
        sc = self.sc
        return make_optimizer(
            disc_params,
            lr_schedule=cosine_schedule(sc.disc_lr, sc.end_lr, sc.warmup_steps, max(sc.num_steps - sc.disc_start, 1)),
            b1=sc.b1,
            b2=sc.b2,
            weight_decay=sc.weight_decay,
            grad_clip=sc.grad_clip,
            name_map=gan_parts.discriminator_name_map(self.config),
        )

    def init_state(self, rng) -> TrainState:
        r_params, r_disc, r_state = jax.random.split(rng, 3)
        params = self.init_params(r_params)
        state = TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=self.tx(params).init(params),
            ema_params=jax.tree.map(jnp.copy, params) if self.sc.ema_decay else None,
            rng=r_state,
        )
        if self.has_discriminator:
            dp = gan_parts.init_discriminator(self.config, r_disc, self.image_size)
            state = state.replace(
                disc_params=dp,
                disc_opt_state=self.disc_tx(dp).init(dp),
                lecam={"ema_real": jnp.zeros((), jnp.float32), "ema_fake": jnp.zeros((), jnp.float32)},
            )
        return state

    def load_aux(self, workdir: str) -> Dict[str, Any]:
        return {}

    def handoff(self, state: TrainState, workdir: str) -> TrainState:
        return state

    def final_params(self, state: TrainState):
        return state.ema_params if state.ema_params is not None else state.params

    def train_step(self, state: TrainState, batch, aux):
        rng, step_rng = jax.random.split(state.rng)

        def loss_fn(params):
            return self.generator_loss(params, state, batch, aux, step_rng)

        (loss, (metrics, recon)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        tx = self.tx(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=_global_norm(grads), update_norm=_global_norm(updates))
        metrics["lr"] = cosine_schedule(self.sc.lr, self.sc.end_lr, self.sc.warmup_steps, self.sc.num_steps)(state.step)
        ema = state.ema_params
        if ema is not None:
            ema = ema_update(ema, params, state.step, self.sc.ema_decay)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema, rng=rng)
        if self.has_discriminator:
            new, d_metrics = self._discriminator_step(new, batch["image"], jax.lax.stop_gradient(recon), state.step)
            metrics.update(d_metrics)
        return new, metrics

    # -- GAN ------------------------------------------------------------------------------------
    def disc_factor(self, step):
        return jnp.where(step >= self.sc.disc_start, self.sc.disc_factor, 0.0)

    def adversarial_term(self, state, recon, step):
        """Generator side: disc_weight * f_D * (-mean D(x_hat)), D frozen."""
        if not self.has_discriminator or not self.sc.disc_weight:
            return jnp.zeros((), jnp.float32)
        logits = gan_parts.discriminate(self.config, jax.lax.stop_gradient(state.disc_params), recon)
        return self.sc.disc_weight * self.disc_factor(step) * gan_parts.generator_loss(logits)

    def _discriminator_step(self, state: TrainState, real, fake, step):
        sc = self.sc
        tx = self.disc_tx(state.disc_params)

        def d_loss_fn(dp):
            lr_ = gan_parts.discriminate(self.config, dp, real)
            lf_ = gan_parts.discriminate(self.config, dp, fake)
            hinge = gan_parts.hinge_loss(lr_, lf_)
            lecam = gan_parts.lecam_loss(lr_, lf_, state.lecam["ema_real"], state.lecam["ema_fake"])
            total = self.disc_factor(step) * hinge + sc.lecam_weight * lecam
            return total, (hinge, lecam, jnp.mean(lr_), jnp.mean(lf_))

        def train_d(s):
            (total, (hinge, lecam, mr, mf)), g = jax.value_and_grad(d_loss_fn, has_aux=True)(s.disc_params)
            upd, dos = tx.update(g, s.disc_opt_state, s.disc_params)
            new_lecam = gan_parts.lecam_ema_update(s.lecam, mr, mf, sc.lecam_decay)
            s = s.replace(disc_params=optax.apply_updates(s.disc_params, upd), disc_opt_state=dos, lecam=new_lecam)
            return s, {"d_loss": total, "d_hinge": hinge, "d_lecam": lecam, "logits_real": mr, "logits_fake": mf}

        def skip_d(s):
            z = jnp.zeros((), jnp.float32)
            return s, {"d_loss": z, "d_hinge": z, "d_lecam": z, "logits_real": z, "logits_fake": z}

        return jax.lax.cond(step >= sc.disc_start, train_d, skip_d, state)

    def pixel_losses(self, images, recon, aux, state, step):
        """w_rec * MSE + w_p * perceptual + adversarial (the stage-2 generator loss without quantizer)."""
        sc = self.sc
        mse = jnp.mean(jnp.square(images.astype(jnp.float32) - recon.astype(jnp.float32)))
        total = sc.reconstruction_weight * mse
        metrics = {"mse": mse}
        if sc.perceptual_weight:
            p = gan_parts.perceptual_loss(aux["perceptual"], images, recon)
            total = total + sc.perceptual_weight * p
            metrics["perceptual"] = p
        adv = self.adversarial_term(state, recon, step)
        metrics["g_adv"] = adv
        return total + adv, metrics


# ----------------------------------------------------------------------------------------------
def teacher_config(config) -> VQGANConfig:
    return VQGANConfig.from_dict(config.teacher.model.to_dict())


class TeacherStage(Stage):
    """MaskGIT-VQGAN trained from scratch in pixel space."""

    name = "teacher"
    section = "teacher_train"
    has_discriminator = True

    def _image_size(self):
        return self.config.image_size

    @property
    def module(self):
        return MaskGITVQGAN(teacher_config(self.config), dtype=self.dtype)

    def name_map(self):
        return maskgit_vqgan_map.torch_name_map(teacher_config(self.config))

    def init_params(self, rng):
        m = self.module
        x = jnp.zeros((1, self.image_size, self.image_size, 3), jnp.float32)
        return nn.meta.unbox(m.init(rng, x)["params"])

    def load_aux(self, workdir):
        return gan_parts.load_perceptual(self.config, self.sc)

    def generator_loss(self, params, state, batch, aux, rng):
        images = batch["image"]

        def fwd(mm, x):
            z = mm.encoder(x.astype(mm.dtype)).astype(jnp.float32)
            zq, ids = mm.quantize(z)
            codebook_loss = jnp.mean(jnp.square(zq - jax.lax.stop_gradient(z)))
            commitment = jnp.mean(jnp.square(jax.lax.stop_gradient(zq) - z))
            z_st = z + jax.lax.stop_gradient(zq - z)
            return mm.decoder(z_st.astype(mm.dtype)).astype(jnp.float32), codebook_loss, commitment, ids

        m = self.module
        recon, cb, commit, ids = m.apply({"params": params}, images, method=fwd)
        qloss = cb + self.sc.commitment_cost * commit
        total, metrics = self.pixel_losses(images, recon, aux, state, state.step)
        total = total + self.sc.quantizer_weight * qloss
        metrics.update(quantizer_loss=qloss, **codebook_usage(ids, teacher_config(self.config).codebook_size))
        return total, (metrics, recon)

    def reconstruct(self, state, batch, aux):
        m = self.module
        return m.apply({"params": self.final_params(state)}, batch["image"])


# ----------------------------------------------------------------------------------------------
def stage_finished(workdir: str, stage: str) -> bool:
    return os.path.isdir(final_dir(workdir, stage))


TOKENIZER_STAGES = ("stage2", "single_stage", "stage1")  # latest first: where a run's tokenizer ends up


def tokenizer_checkpoint(workdir: str, explicit: str = "", section: str = "") -> str:
    """The tokenizer params to use after training: ``explicit`` (an Orbax params directory from
    ``python -m titok_jax.port import`` or a stage's ``final/``) or else the latest finished tokenizer
    stage under ``workdir`` (stage2, then single_stage, then stage1). ``section`` names the config
    section of the step asking (for the error message), e.g. ``linear_probe``."""
    opt = f"config.{section}." if section else ""
    if explicit:
        path = os.path.abspath(os.path.expanduser(explicit))
        if not os.path.isdir(path):
            raise StageError(
                f"{opt}tokenizer_checkpoint={explicit} not found (expected an Orbax params directory: a stage's "
                "final/ or the output of `python -m titok_jax.port import`)"
            )
        return path
    looked = []
    for name in TOKENIZER_STAGES:
        path = final_dir(workdir, name)
        if os.path.isdir(path):
            return path
        looked.append(path)
    raise StageError(
        f"no tokenizer checkpoint: none of {', '.join(looked)} exists. Train one first (list stage1/stage2 or "
        f"single_stage earlier in config.stages), or set {opt}tokenizer_checkpoint to an Orbax params directory "
        "(a stage's final/, or the output of `python -m titok_jax.port import --config=... "
        f"--weights=tokenizer_titok_*.bin --out=DIR`), or {opt}tokenizer_weights to an official weight file "
        "(.safetensors, or .bin with allow_pickle=True)"
    )


def load_tokenizer_params(config, path: str, parts=None) -> Dict[str, Any]:
    """Tokenizer params (only the top-level ``parts`` when given, e.g. the encoder side for
    tokenizing: a stage-1 checkpoint has no pixel decoder, and none is needed to encode)."""
    handle = registry.from_config(config)
    abstract = handle.abstract()
    if parts is None:
        return checkpoint.load_params(path, abstract)
    return checkpoint.load_subtrees(path, {k: abstract[k] for k in parts if k in abstract})


def check_teacher(config, workdir: str) -> str:
    """Path of the frozen MaskGIT-VQGAN: a configured checkpoint (e.g. from `port import`) or the teacher stage's."""
    path = config.teacher.get("checkpoint")
    if not path:
        path = final_dir(workdir, "teacher")
        if not os.path.isdir(path) and "teacher" not in list(config.stages):
            raise StageError(
                "no teacher: set config.teacher.checkpoint to an Orbax checkpoint of the MaskGIT-VQGAN "
                "(convert the official maskgit-vqgan-imagenet-f16-256.bin with `python -m titok_jax.port import "
                "--config=configs/maskgit_vqgan.py --weights=FILE --out=DIR`), or add 'teacher' to config.stages "
                "to train one; for an offline run use --config=configs/demo.py"
            )
    elif not os.path.isdir(os.path.expanduser(path)):
        raise StageError(
            f"teacher checkpoint {path} not found: download maskgit-vqgan-imagenet-f16-256.bin (Hugging Face "
            "fun-research/TiTok) or MaskGIT's tokenizer_imagenet256_checkpoint and convert it with `python -m "
            "titok_jax.port import --config=configs/maskgit_vqgan.py --weights=FILE --out=DIR`, then pass "
            "--config.teacher.checkpoint=DIR. For an offline run use --config=configs/demo.py."
        )
    return os.path.expanduser(path)


def _teacher_params(config, workdir) -> Tuple[Any, str]:
    path = check_teacher(config, workdir)
    cfg = teacher_config(config)
    abstract = jax.eval_shape(lambda r: vqgan_init_params(cfg, r, config.image_size), jax.random.key(0))
    return checkpoint.load_params(path, abstract), path


def titok_stage_config(config, stage1: bool) -> TiTokConfig:
    c = TiTokConfig.from_dict(config.model.to_dict())
    if stage1:
        if not c.is_legacy:
            raise StageError("stage1 (proxy codes) needs a legacy TiTok (titok_s128/b64/l32 or titok_tiny)")
        c = dataclasses.replace(c, finetune_decoder=False)
    return c


class TiTokStage(Stage):
    """Shared by the stages that train a TiTok: module, name map, init from ``model_config``."""

    def _image_size(self):
        return self.model_config.image_size

    @property
    def module(self):
        return TiTok(self.model_config, dtype=self.dtype, remat=self.config.get("remat", False))

    def name_map(self):
        from titok_jax.models.titok_map import torch_name_map

        return torch_name_map(self.model_config)

    def init_params(self, rng):
        from titok_jax.models.titok import init_params

        return init_params(self.model_config, rng, self.dtype)


class Stage1(TiTokStage):
    """Proxy-code training: CE against the frozen teacher's codes on the same augmented batch."""

    name = "stage1"

    @property
    def model_config(self) -> TiTokConfig:
        return titok_stage_config(self.config, stage1=True)

    def load_aux(self, workdir):
        params, path = _teacher_params(self.config, workdir)
        log.info("stage1: proxy codes from the teacher at %s", path)
        return {"teacher": {k: params[k] for k in ("encoder", "quantize", "decoder")}}

    def _teacher(self):
        return MaskGITVQGAN(teacher_config(self.config))

    def generator_loss(self, params, state, batch, aux, rng):
        images = batch["image"]
        t = self._teacher()
        targets = jax.lax.stop_gradient(t.apply({"params": aux["teacher"]}, images, method=t.encode_to_ids))
        m = self.module
        logits, res = m.apply({"params": params}, images)  # [B, g, g, 1024]
        if logits.shape[1:3] != targets.shape[1:3]:
            raise StageError(f"teacher grid {targets.shape[1:3]} != TiTok decoder grid {logits.shape[1:3]}")
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        ce = -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))
        total = ce + self.sc.quantizer_weight * res["quantizer_loss"]
        acc = jnp.mean((jnp.argmax(logits, -1) == targets).astype(jnp.float32))
        metrics = {
            "ce": ce,
            "proxy_acc": acc,
            "quantizer_loss": res["quantizer_loss"],
            "codebook_usage": res["codebook_usage"],
            "codebook_perplexity": res["codebook_perplexity"],
        }
        return total, (metrics, None)

    def reconstruct(self, state, batch, aux):
        m, t = self.module, self._teacher()
        logits, _ = m.apply({"params": self.final_params(state)}, batch["image"])
        return t.apply({"params": aux["teacher"]}, jnp.argmax(logits, -1), method=t.decode_ids)


class Stage2(TiTokStage):
    """Decoder fine-tuning in pixel space; encoder, quantizer and latent tokens frozen."""

    name = "stage2"
    has_discriminator = True
    FROZEN = ("latent_tokens", "encoder/.*", "quantize/.*")

    @property
    def model_config(self) -> TiTokConfig:
        c = titok_stage_config(self.config, stage1=False)
        if not (c.is_legacy and c.finetune_decoder):
            raise StageError("stage2 needs a legacy TiTok with finetune_decoder=True (the released model layout)")
        return c

    def frozen(self):
        return self.FROZEN

    def load_aux(self, workdir):
        return gan_parts.load_perceptual(self.config, self.sc)

    def handoff(self, state, workdir):
        """Stage-1 EMA weights (ViT encoder/decoder, quantizer, latent tokens) + teacher decoder/codebook."""
        s1 = final_dir(workdir, "stage1")
        path = self.sc.get("init_from") or s1
        if not os.path.isdir(path):
            raise StageError(
                f"stage2 starts from stage 1: {path} not found (run stage1 first or set config.stage2.init_from)"
            )
        want = {k: state.params[k] for k in ("latent_tokens", "encoder", "quantize", "decoder")}
        from_s1 = checkpoint.load_subtrees(path, want)
        teacher, tpath = _teacher_params(self.config, workdir)
        params = dict(state.params)
        params.update(from_s1)
        params["pixel_decoder"] = teacher["decoder"]
        params["pixel_quantize"] = {"embedding": teacher["quantize"]["embedding"]}
        params = jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), params, state.params)
        log.info("stage2: ViT encoder/decoder/quantizer from %s, pixel decoder + codebook from %s", path, tpath)
        return state.replace(
            params=params,
            opt_state=self.tx(params).init(params),
            ema_params=jax.tree.map(jnp.copy, params) if state.ema_params is not None else None,
        )

    def generator_loss(self, params, state, batch, aux, rng):
        images = batch["image"]
        m = self.module
        latents, res = m.apply({"params": params}, images, method=m.encode)
        recon = m.apply({"params": params}, jax.lax.stop_gradient(latents), method=m.decode)
        total, metrics = self.pixel_losses(images, recon, aux, state, state.step)
        metrics.update(codebook_usage=res["codebook_usage"])
        return total, (metrics, recon)

    def reconstruct(self, state, batch, aux):
        m = self.module
        return jnp.clip(m.apply({"params": self.final_params(state)}, batch["image"])[0], 0.0, 1.0)


class SingleStage(TiTokStage):
    """A pixel-head TiTok from scratch with the stage-2 losses plus the quantizer (or KL) loss."""

    name = "single_stage"
    has_discriminator = True

    @property
    def model_config(self) -> TiTokConfig:
        c = titok_stage_config(self.config, stage1=False)
        if c.is_legacy or c.finetune_decoder:
            raise StageError(
                "single_stage trains a non-legacy TiTok with a pixel head (is_legacy=False, finetune_decoder=False), "
                "e.g. configs/titok_bl64_vq8k.py"
            )
        return c

    def load_aux(self, workdir):
        return gan_parts.load_perceptual(self.config, self.sc)

    def generator_loss(self, params, state, batch, aux, rng):
        images = batch["image"]
        m = self.module
        if self.model_config.quantize_mode == "vae":
            recon, res = m.apply({"params": params}, images, sample_posterior=True, rngs={"sample": rng})
            reg = res["kl_loss"]
        else:
            recon, res = m.apply({"params": params}, images)
            reg = res["quantizer_loss"]
        total, metrics = self.pixel_losses(images, recon, aux, state, state.step)
        total = total + self.sc.quantizer_weight * reg
        metrics["quantizer_loss"] = reg
        if "codebook_usage" in res:
            metrics.update(codebook_usage=res["codebook_usage"], codebook_perplexity=res["codebook_perplexity"])
        return total, (metrics, recon)

    def reconstruct(self, state, batch, aux):
        m = self.module
        return jnp.clip(m.apply({"params": self.final_params(state)}, batch["image"])[0], 0.0, 1.0)


def make_stage(name: str, config) -> Stage:
    if name == "generator":
        from titok_jax.train.generator_stage import GeneratorStage

        return GeneratorStage(config)
    classes = {"teacher": TeacherStage, "stage1": Stage1, "stage2": Stage2, "single_stage": SingleStage}
    if name not in classes:
        raise StageError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}")
    return classes[name](config)
