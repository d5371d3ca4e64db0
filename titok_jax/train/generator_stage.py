"""The ``generator`` stage: a MaskGIT generator (ImageBert / UViTBert) trained on pre-tokenized ids.

Official recipe (official_titok.md section 7.4; 1d-tokenizer ``modeling/modules/losses.py`` MLMLoss,
``utils/train_utils.py``), as pure functions that plug into the one training loop:

* masking: per sample ``t ~ U(0, 1)``, ``ratio = arccos(t) / (pi / 2)`` clamped to [1e-6, 1],
  ``n = round(L * ratio)`` (half to even) clamped >= 1; the ``n`` positions of a random permutation
  are replaced by the mask id ``K``;
* class-condition dropout: per sample, with probability ``class_label_dropout`` the label becomes the
  null class;
* loss: cross-entropy over the K codes with label smoothing 0.1; masked tokens weigh 1, unmasked
  ones ``loss_weight_unmasked_token`` (0.1): ``sum(w * ce) / (sum(w) + 1e-8)``;
* AdamW (0.9, 0.96), weight decay 0.03 with the official exclusions (through the generator's name
  map), cosine schedule with warmup, gradient clipping 1.0, EMA 0.999.

Data come from ``python -m titok_jax.pretokenize`` (``titok_jax.data.tokens``): batches
``{'tokens': int32 [B, K], 'label': int32 [B]}``. Evaluation on a fixed held-out batch reports the
masked-token loss/accuracy at a fixed masking and writes a grid: the data's own tokens decoded by the
tokenizer (top) and class-conditional samples for the same labels (bottom), drawn by the one-jit
sampler of ``titok_jax.sampling``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from titok_jax.models import generator as gen_lib
from titok_jax.models import generator_map
from titok_jax.models.titok import TiTok, TiTokConfig
from titok_jax.train.stages import Stage, StageError, load_tokenizer_params, tokenizer_checkpoint

# The subtrees ``decode_tokens`` reads (``latent_tokens`` is a top-level param that setup binds).
DECODE_PARTS = ("latent_tokens", "quantize", "decoder", "pixel_quantize", "pixel_decoder")


def generator_config(config) -> "gen_lib.GeneratorConfig":
    """The config's generator (``registry.generator_from_config``: read and checked against the tokenizer)."""
    from titok_jax.models import registry

    try:
        return registry.generator_from_config(config).config
    except ValueError as e:
        raise StageError(str(e)) from None


def mask_tokens(tokens: jax.Array, rng: jax.Array, mask_id: int) -> Tuple[jax.Array, jax.Array]:
    """Official arccos masking: (inputs with masked positions = ``mask_id``, mask bool [B, L])."""
    b, seq_len = tokens.shape
    r_t, r_perm = jax.random.split(rng)
    t = jax.random.uniform(r_t, (b,))
    ratio = jnp.clip(jnp.arccos(t) / (math.pi * 0.5), 1e-6, 1.0)
    n = jnp.maximum(jnp.round(seq_len * ratio), 1.0)
    perm = jnp.argsort(jax.random.uniform(r_perm, (b, seq_len)), axis=-1)
    mask = perm < n[:, None]
    return jnp.where(mask, mask_id, tokens), mask


def mlm_loss(logits, targets, mask, label_smoothing: float, unmasked_weight: float):
    """(loss, masked-token accuracy): smoothed CE, masked weight 1, unmasked ``unmasked_weight``."""
    k = logits.shape[-1]
    labels = optax.smooth_labels(jax.nn.one_hot(targets, k, dtype=jnp.float32), label_smoothing)
    ce = optax.softmax_cross_entropy(logits.astype(jnp.float32), labels)
    w = jnp.where(mask, 1.0, unmasked_weight)
    loss = jnp.sum(w * ce) / (jnp.sum(w) + 1e-8)
    correct = (jnp.argmax(logits, -1) == targets) & mask
    acc = jnp.sum(correct) / jnp.maximum(jnp.sum(mask), 1)
    return loss, acc


class GeneratorStage(Stage):
    name = "generator"
    section = "generator_train"
    grid_name = "samples"

    def __init__(self, config):
        self.tok_config = TiTokConfig.from_dict(config.model.to_dict())
        if self.tok_config.quantize_mode != "vq":
            raise StageError("the MaskGIT generator needs a VQ tokenizer (discrete ids); this TiTok is a VAE")
        self.gen_config = generator_config(config)
        super().__init__(config)

    # -- model ----------------------------------------------------------------------------------
    def _image_size(self) -> int:
        return self.tok_config.image_size

    @property
    def module(self):
        return gen_lib.build(self.gen_config, self.dtype, remat=bool(self.config.get("remat", False)))

    def name_map(self):
        return generator_map.torch_name_map(self.gen_config)

    def init_params(self, rng):
        return gen_lib.init_params(self.gen_config, rng, self.dtype)

    @property
    def model_config(self):
        return self.gen_config

    # -- data -----------------------------------------------------------------------------------
    def tokens_dir(self, workdir: str) -> str:
        """``generator_train.tokens_dir``, else where the ``pretokenize`` step writes."""
        pre = self.config.get("pretokenize", {}).get("out_dir", "")
        return os.path.expanduser(self.sc.get("tokens_dir") or pre or os.path.join(workdir, "pretokenize"))

    def loaders(self, workdir: str, process_index: int, process_count: int):
        from titok_jax.data import tokens as tokens_lib

        path = self.tokens_dir(workdir)
        common = dict(seed=self.config.seed, process_index=process_index, process_count=process_count)
        train = tokens_lib.make_token_loader(path, global_batch_size=self.sc.batch_size, train=True, **common)
        src = train.source if hasattr(train, "source") else tokens_lib.TokenSource(path)
        g = self.gen_config
        if (src.seq_len, src.codebook_size) != (g.image_seq_len, g.codebook_size):
            raise StageError(
                f"pre-tokenized data in {path} have {src.seq_len} tokens from a {src.codebook_size}-code tokenizer; "
                f"the generator expects {g.image_seq_len} tokens and {g.codebook_size} codes"
            )
        if src.num_classes > g.condition_num_classes:
            raise StageError(
                f"the data have {src.num_classes} classes but the generator is conditioned on "
                f"{g.condition_num_classes} (config.generator.model.condition_num_classes)"
            )
        ev = tokens_lib.make_token_loader(
            path, global_batch_size=self.config.eval.batch_size, train=False, shuffle=False, num_epochs=1, **common
        )
        return train, ev

    def load_aux(self, workdir: str) -> Dict[str, Any]:
        """The tokenizer's decoder side, for the sample grids (nothing when previews are off)."""
        if not self.sc.get("preview_samples", True):
            return {}
        path = tokenizer_checkpoint(workdir, self.sc.get("tokenizer_checkpoint", ""), section="generator_train")
        return {"tokenizer": load_tokenizer_params(self.config, path, DECODE_PARTS)}

    # -- steps ----------------------------------------------------------------------------------
    def generator_loss(self, params, state, batch, aux, rng):
        g, sc = self.gen_config, self.sc
        r_mask, r_drop, r_dropout = jax.random.split(rng, 3)
        tokens, labels = batch["tokens"], batch["label"]
        inputs, mask = mask_tokens(tokens, r_mask, g.mask_token_id)
        drop = jax.random.uniform(r_drop, labels.shape) < g.class_label_dropout
        logits = self.module.apply(
            {"params": params}, inputs, labels, drop, deterministic=False, rngs={"dropout": r_dropout}
        )
        loss, acc = mlm_loss(logits, tokens, mask, sc.label_smoothing, sc.loss_weight_unmasked_token)
        metrics = {"masked_acc": acc, "mask_ratio": jnp.mean(mask.astype(jnp.float32))}
        return loss, (metrics, None)

    def reconstruct(self, state, batch, aux):
        """The data's own tokens decoded by the tokenizer (what a perfect generator would draw)."""
        return self._decode(aux, batch["tokens"])

    def _decode(self, aux, ids):
        tok = TiTok(self.tok_config, dtype=self.dtype)
        x = tok.apply({"params": aux["tokenizer"]}, ids, method=tok.decode_tokens)
        return jnp.clip(x.astype(jnp.float32), 0.0, 1.0)

    def eval_outputs(self, state, batch, aux) -> Dict[str, jax.Array]:
        from titok_jax import sampling

        g, sc = self.gen_config, self.sc
        params = self.final_params(state)
        tokens, labels = batch["tokens"], batch["label"]
        inputs, mask = mask_tokens(tokens, jax.random.key(1234), g.mask_token_id)
        no_drop = jnp.zeros(labels.shape, bool)
        logits = self.module.apply({"params": params}, inputs, labels, no_drop, deterministic=True)
        loss, acc = mlm_loss(logits, tokens, mask, sc.label_smoothing, sc.loss_weight_unmasked_token)
        out = {"loss": loss, "masked_acc": acc}
        if "tokenizer" in aux:
            settings = sampling.SamplingConfig(**dict(sc.preview_sampling))

            def logits_fn(ids, lab, drop):
                return self.module.apply({"params": params}, ids, lab, drop, deterministic=True)

            ids = sampling.generate_tokens(
                logits_fn, labels, jax.random.key(sc.get("preview_seed", 0)), seq_len=g.image_seq_len,
                codebook_size=g.codebook_size, sampling=settings,
            )  # fmt: skip
            out.update(data=self._decode(aux, tokens), samples=self._decode(aux, ids), sample_ids=ids)
        return out

    def eval_summary(self, outputs):
        from titok_jax import images as im

        scalars = {"loss": float(outputs["loss"]), "masked_acc": float(outputs["masked_acc"])}
        if "samples" not in outputs:
            return scalars, None
        ids = np.asarray(outputs["sample_ids"])
        scalars["sample_unique_codes"] = float(len(np.unique(ids)))
        return scalars, im.grid([np.asarray(outputs["data"], np.float32), np.asarray(outputs["samples"], np.float32)])


def default_section() -> Dict[str, Any]:
    """``config.generator_train`` defaults: 1d-tokenizer configs/training/generator/maskgit.yaml."""
    return dict(
        name="generator", tokens_dir="", tokenizer_checkpoint="",
        num_steps=500_000, batch_size=2048, lr=2e-4, end_lr=1e-5, warmup_steps=10_000, b1=0.9, b2=0.96,
        weight_decay=0.03, grad_clip=1.0, ema_decay=0.999, grad_accum_steps=1,
        label_smoothing=0.1, loss_weight_unmasked_token=0.1,
        log_every=50, checkpoint_every=5_000, eval_every=10_000, keep_checkpoints=3,
        preview_samples=True, preview_seed=0,
        # in-training previews use the training config's sampler (constant guidance 4.5, temperature 1.0)
        preview_sampling=dict(num_steps=8, guidance_scale=4.5, guidance_decay="constant", guidance_scale_pow=3.0,
                              randomize_temperature=1.0, softmax_temperature_annealing=False),
    )  # fmt: skip
