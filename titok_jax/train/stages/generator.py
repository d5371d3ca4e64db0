"""The ``generator`` stage: a MaskGIT generator (ImageBert / UViTBert) trained on pre-tokenized ids.

Official recipe (official_titok.md section 7.4; 1d-tokenizer ``modeling/modules/losses.py`` MLMLoss,
``utils/train_utils.py``), as pure functions that plug into the one training loop:

* masking: per sample ``t ~ U(0, 1)``, ``ratio = arccos(t) / (pi / 2)`` clamped to [1e-6, 1],
  ``n = round(L * ratio)`` (half to even) clamped >= 1; the ``n`` positions of a random permutation
  are replaced by the mask id ``K`` (``generator_train.mask_schedule`` swaps the arccos for another
  ``titok_jax.sampling.mask_ratio`` form, the paper's schedule ablation);
* class-condition dropout: per sample, with probability ``class_label_dropout`` the label becomes the
  null class;
* loss: cross-entropy over the K codes with label smoothing 0.1; masked tokens weigh 1, unmasked
  ones ``loss_weight_unmasked_token`` (0.1): ``sum(w * ce) / (sum(w) + 1e-8)``;
* AdamW (0.9, 0.96), weight decay 0.03 with the official exclusions (through the generator's name
  map), cosine schedule with warmup, gradient clipping 1.0, EMA 0.999.

Data come from the ``pretokenize`` step (``titok_jax.data.tokens``): batches ``{'tokens': int32
[B, K], 'label': int32 [B]}``. Evaluation on a fixed held-out batch reports the masked-token
loss/accuracy at a fixed masking (always the official arccos one, so that runs with different
training schedules are compared on the same masked inputs) and writes a grid: the data's own tokens
decoded by the tokenizer (top) and class-conditional samples for the same labels (bottom), drawn by
the one-jit sampler.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from titok_jax import images as im
from titok_jax import sampling
from titok_jax import workdir as workdir_lib
from titok_jax.config.run import RunConfig
from titok_jax.data import tokens as tokens_lib
from titok_jax.models import generator as generator_lib
from titok_jax.models import generator_map, registry, titok
from titok_jax.train.stages.base import Stage
from titok_jax.train.stages.tokenizer import StageError


def mask_tokens(
    tokens: jax.Array, rng: jax.Array, mask_id: int, schedule: str = "arccos"
) -> Tuple[jax.Array, jax.Array]:
    """Random masking (official: arccos): (inputs with masked positions = ``mask_id``, mask bool [B, L])."""
    b, seq_len = tokens.shape
    r_t, r_perm = jax.random.split(rng)
    t = jax.random.uniform(r_t, (b,))
    ratio = sampling.mask_ratio(t, schedule, seq_len, xp=jnp)
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
    grid_name = "samples"

    def __init__(self, run: RunConfig):
        self.tok_config = run.tokenizer
        if self.tok_config.quantize_mode != "vq":
            raise StageError("the MaskGIT generator needs a VQ tokenizer (discrete ids); this TiTok is a VAE")
        self.gen_config = run.generator_config
        super().__init__(run)

    # -- model ----------------------------------------------------------------------------------
    def _image_size(self) -> int:
        return self.tok_config.image_size

    @property
    def module(self):
        return generator_lib.build(self.gen_config, self.dtype, remat=self.run.remat)

    def name_map(self):
        return generator_map.torch_name_map(self.gen_config)

    def init_params(self, rng):
        return generator_lib.init_params(self.gen_config, rng, self.dtype)

    @property
    def model_config(self):
        return self.gen_config

    # -- data -----------------------------------------------------------------------------------
    def tokens_dir(self, workdir: str) -> str:
        """``generator_train.tokens_dir``, else where the ``pretokenize`` step writes."""
        path = self.sc.tokens_dir or self.run.pretokenize.out_dir or os.path.join(workdir, "pretokenize")
        return os.path.expanduser(path)

    def loaders(self, workdir: str, process_index: int, process_count: int):
        path = self.tokens_dir(workdir)
        common = dict(seed=self.run.seed, process_index=process_index, process_count=process_count)
        src = tokens_lib.TokenSource(path)
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
        train = tokens_lib.make_token_loader(src, global_batch_size=self.sc.batch_size, train=True, **common)
        ev = tokens_lib.make_token_loader(src, global_batch_size=self.run.eval.batch_size, train=False,
                                          shuffle=False, num_epochs=1, **common)  # fmt: skip
        return train, ev

    def load_aux(self, workdir: str) -> Dict[str, Any]:
        """The tokenizer's decoder side, for the sample grids (nothing when previews are off)."""
        if not self.sc.preview_samples:
            return {}
        path = workdir_lib.tokenizer_checkpoint(workdir, self.sc.tokenizer_checkpoint, section="generator_train")
        return {"tokenizer": registry.tokenizer(self.run).load(path, titok.DECODE_PARTS)}

    # -- steps ----------------------------------------------------------------------------------
    def generator_loss(self, params, state, batch, aux, rng):
        g, sc = self.gen_config, self.sc
        r_mask, r_drop, r_dropout = jax.random.split(rng, 3)
        tokens, labels = batch["tokens"], batch["label"]
        inputs, mask = mask_tokens(tokens, r_mask, g.mask_token_id, sc.mask_schedule)
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
        tok = titok.TiTok(self.tok_config, dtype=self.dtype)
        x = tok.apply({"params": aux["tokenizer"]}, ids, method=tok.decode_tokens)
        return jnp.clip(x.astype(jnp.float32), 0.0, 1.0)

    def eval_outputs(self, state, batch, aux) -> Dict[str, jax.Array]:
        g, sc = self.gen_config, self.sc
        params = self.final_params(state)
        tokens, labels = batch["tokens"], batch["label"]
        inputs, mask = mask_tokens(tokens, jax.random.key(1234), g.mask_token_id)
        no_drop = jnp.zeros(labels.shape, bool)
        logits = self.module.apply({"params": params}, inputs, labels, no_drop, deterministic=True)
        loss, acc = mlm_loss(logits, tokens, mask, sc.label_smoothing, sc.loss_weight_unmasked_token)
        out = {"loss": loss, "masked_acc": acc}
        if "tokenizer" in aux:

            def logits_fn(ids, lab, drop):
                return self.module.apply({"params": params}, ids, lab, drop, deterministic=True)

            ids = sampling.generate_tokens(
                logits_fn, labels, jax.random.key(sc.preview_seed), seq_len=g.image_seq_len,
                codebook_size=g.codebook_size, sampling=sc.preview_sampling,
            )  # fmt: skip
            out.update(data=self._decode(aux, tokens), samples=self._decode(aux, ids), sample_ids=ids)
        return out

    def eval_summary(self, outputs):
        scalars = {"loss": float(outputs["loss"]), "masked_acc": float(outputs["masked_acc"])}
        if "samples" not in outputs:
            return scalars, None
        ids = np.asarray(outputs["sample_ids"])
        scalars["sample_unique_codes"] = float(len(np.unique(ids)))
        return scalars, im.grid([np.asarray(outputs["data"], np.float32), np.asarray(outputs["samples"], np.float32)])
