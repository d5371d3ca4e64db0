"""The stages that train an image tokenizer (official_titok.md sections 5-6).

* ``teacher``: a MaskGIT-VQGAN trained in pixel space (VQ + MSE + perceptual + hinge GAN/LeCam), for
  domains without a pretrained teacher and for the offline demo;
* ``stage1``: TiTok predicts the frozen teacher's proxy codes (CE + quantizer loss), EMA weights;
* ``stage2``: encoder/quantizer frozen (zero updates), ViT decoder + VQGAN pixel decoder + pixel
  codebook fine-tuned with MSE + perceptual + GAN (discriminator from ``disc_start``);
* ``single_stage``: a non-legacy (pixel-head) TiTok trained from scratch with the stage-2 losses plus
  the quantizer (or KL) loss -- no teacher.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Tuple

import jax
import jax.numpy as jnp

from titok_jax import checkpoint
from titok_jax import workdir as workdir_lib
from titok_jax.config.models import TiTokConfig, VQGANConfig
from titok_jax.config.run import RunConfig
from titok_jax.errors import InputError
from titok_jax.models import maskgit_vqgan, maskgit_vqgan_map, titok, titok_map
from titok_jax.quantizers.vq import l2_normalize
from titok_jax.train.stages.base import Stage
from titok_jax.train.stages.gan import GanMixin

log = logging.getLogger(__name__)


class StageError(InputError):
    """A stage cannot run with this config or workdir (wrong model, missing hand-off)."""


# ---------------------------------------------------------------------------------------------- teacher
def check_teacher(run: RunConfig, workdir: str) -> str:
    """Path of the frozen MaskGIT-VQGAN: a configured checkpoint (e.g. from `port import`) or the teacher stage's."""
    path = run.teacher.checkpoint
    if run.image_size == 512:
        files, vq_config = "MaskGIT's tokenizer_imagenet512_checkpoint", "configs/maskgit_vqgan_512.py"
    else:
        files = ("maskgit-vqgan-imagenet-f16-256.bin (Hugging Face fun-research/TiTok) or MaskGIT's "
                 "tokenizer_imagenet256_checkpoint")  # fmt: skip
        vq_config = "configs/maskgit_vqgan.py"
    if not path:
        path = workdir_lib.final_dir(workdir, "teacher")
        if not workdir_lib.is_dir(path) and "teacher" not in run.stages:
            raise StageError(
                f"no teacher: set config.teacher.checkpoint to an Orbax checkpoint of the MaskGIT-VQGAN "
                f"(convert {files} with `titok-port import --config={vq_config} --weights=FILE --out=DIR`), or "
                "add 'teacher' to config.stages to train one; for an offline run use --config=configs/demo.py"
            )
    elif not workdir_lib.is_dir(workdir_lib.resolve(path)):
        raise StageError(
            f"teacher checkpoint {path} not found: download {files} and convert it with `titok-port import "
            f"--config={vq_config} --weights=FILE --out=DIR`, then pass --config.teacher.checkpoint=DIR. "
            "For an offline run use --config=configs/demo.py."
        )
    return workdir_lib.resolve(path)


def teacher_params(run: RunConfig, workdir: str) -> Tuple[Any, str]:
    path = check_teacher(run, workdir)
    return checkpoint.load_params(path, maskgit_vqgan.abstract_params(run.teacher.model)), path


class TeacherStage(GanMixin, Stage):
    """MaskGIT-VQGAN trained from scratch in pixel space."""

    name = "teacher"

    def _image_size(self):
        return self.run.image_size

    @property
    def model_config(self) -> VQGANConfig:
        return self.run.teacher.model

    @property
    def module(self):
        return maskgit_vqgan.MaskGITVQGAN(self.model_config, dtype=self.dtype)

    def name_map(self):
        return maskgit_vqgan_map.torch_name_map(self.model_config)

    def init_params(self, rng):
        return maskgit_vqgan.init_params(self.model_config, rng, self.dtype)

    def generator_loss(self, params, state, batch, aux, rng):
        images = batch["image"]

        def fwd(mm, x):
            z = mm.encoder(x.astype(mm.dtype)).astype(jnp.float32)
            z_st, res = mm.quantize.with_losses(z, self.sc.commitment_cost)
            return mm.decoder(z_st.astype(mm.dtype)).astype(jnp.float32), res, z

        recon, res, z = self.module.apply({"params": params}, images, method=fwd)
        total, metrics = self.pixel_losses(images, recon, aux, state, state.step)
        total = total + self.sc.quantizer_weight * res["quantizer_loss"]
        metrics.update(
            {k: res[k] for k in ("quantizer_loss", "codebook_usage", "codebook_perplexity", "codebook_entropy_bits")}
        )
        if self.restart_every():  # consumed by Stage.train_step's dead-code restart
            metrics.update(_latents=jax.lax.stop_gradient(z), _ids=res["ids"])
        return total, (metrics, recon)

    def restart_codebook_size(self) -> int:
        return self.model_config.codebook_size

    def reconstruct(self, state, batch, aux):
        return self.module.apply({"params": self.final_params(state)}, batch["image"])[0]

    def eval_ids(self, state, batch, aux):
        return self.module.apply({"params": self.final_params(state)}, batch["image"])[1]["ids"]


# ---------------------------------------------------------------------------------------------- TiTok
class TiTokStage(Stage):
    """Shared by the stages that train a TiTok: module, name map, init from ``model_config``."""

    def _image_size(self):
        return self.model_config.image_size

    @property
    def module(self):
        return titok.TiTok(self.model_config, dtype=self.dtype, remat=self.run.remat)

    def name_map(self):
        return titok_map.torch_name_map(self.model_config)

    def init_params(self, rng):
        return titok.init_params(self.model_config, rng, self.dtype)

    def eval_ids(self, state, batch, aux):
        if self.model_config.quantize_mode != "vq":
            return None
        m = self.module
        return m.apply({"params": self.final_params(state)}, batch["image"], method=m.encode)[1]["ids"]

    def _titok(self) -> TiTokConfig:
        if not isinstance(self.run.model, TiTokConfig):
            raise StageError(f"{self.name} trains a TiTok; this config describes a {self.run.model_kind}")
        return self.run.model


class Stage1(TiTokStage):
    """Proxy-code training: CE against the frozen teacher's codes on the same augmented batch."""

    name = "stage1"

    @property
    def model_config(self) -> TiTokConfig:
        c = self._titok()
        if not c.is_legacy:
            raise StageError("stage1 (proxy codes) needs a legacy TiTok (titok_s128/b64/l32 or titok_tiny)")
        return dataclasses.replace(c, finetune_decoder=False)

    def load_aux(self, workdir):
        params, path = teacher_params(self.run, workdir)
        log.info("stage1: proxy codes from the teacher at %s", path)
        return {"teacher": {k: params[k] for k in ("encoder", "quantize", "decoder")}}

    def _teacher(self):
        return maskgit_vqgan.MaskGITVQGAN(self.run.teacher.model)

    def generator_loss(self, params, state, batch, aux, rng):
        images = batch["image"]
        t = self._teacher()
        targets = jax.lax.stop_gradient(t.apply({"params": aux["teacher"]}, images, method=t.encode)[1]["ids"])

        def fwd(mm, x):
            z = mm.encode_continuous(x)
            z_st, res = mm.quantize(z)
            return mm.decode(z_st), res, z

        logits, res, z = self.module.apply({"params": params}, images, method=fwd)  # [B, g, g, 1024]
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
        if self.restart_every():  # the latents as the quantizer compares them (l2-normalised if it normalises)
            z = l2_normalize(z) if self.model_config.use_l2_norm else z
            metrics.update(_latents=jax.lax.stop_gradient(z), _ids=res["ids"])
        return total, (metrics, None)

    def restart_codebook_size(self) -> int:
        return self.model_config.codebook_size

    def reconstruct(self, state, batch, aux):
        t = self._teacher()
        logits, _ = self.module.apply({"params": self.final_params(state)}, batch["image"])
        return t.apply({"params": aux["teacher"]}, jnp.argmax(logits, -1), method=t.decode_tokens)


class Stage2(GanMixin, TiTokStage):
    """Decoder fine-tuning in pixel space; encoder, quantizer and latent tokens frozen."""

    name = "stage2"
    FROZEN = ("latent_tokens", "encoder/.*", "quantize/.*")

    @property
    def model_config(self) -> TiTokConfig:
        c = self._titok()
        if not (c.is_legacy and c.finetune_decoder):
            raise StageError("stage2 needs a legacy TiTok with finetune_decoder=True (the released model layout)")
        return c

    def frozen(self):
        return self.FROZEN

    def handoff(self, state, workdir):
        """Stage-1 EMA weights (ViT encoder/decoder, quantizer, latent tokens) + teacher decoder/codebook."""
        path = workdir_lib.resolve(self.sc.init_from or workdir_lib.final_dir(workdir, "stage1"))
        if not workdir_lib.is_dir(path):
            raise StageError(
                f"stage2 starts from stage 1: {path} not found (run stage1 first or set config.stage2.init_from)"
            )
        want = {k: state.params[k] for k in ("latent_tokens", "encoder", "quantize", "decoder")}
        from_s1 = checkpoint.load_subtrees(path, want)
        teacher, tpath = teacher_params(self.run, workdir)
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
        metrics.update(codebook_usage=res["codebook_usage"], codebook_perplexity=res["codebook_perplexity"])
        return total, (metrics, recon)

    def reconstruct(self, state, batch, aux):
        return jnp.clip(self.module.apply({"params": self.final_params(state)}, batch["image"])[0], 0.0, 1.0)


class SingleStage(GanMixin, TiTokStage):
    """A pixel-head TiTok from scratch with the stage-2 losses plus the quantizer (or KL) loss."""

    name = "single_stage"

    @property
    def model_config(self) -> TiTokConfig:
        c = self._titok()
        if c.is_legacy or c.finetune_decoder:
            raise StageError(
                "single_stage trains a non-legacy TiTok with a pixel head (is_legacy=False, finetune_decoder=False), "
                "e.g. configs/titok_bl64_vq8k.py"
            )
        return c

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
        return jnp.clip(self.module.apply({"params": self.final_params(state)}, batch["image"])[0], 0.0, 1.0)
