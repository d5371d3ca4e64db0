"""The contract every training stage fulfils, and the machinery they share (optimizer, EMA, data, eval).

A stage plugs into the one loop of ``titok_jax.train.loop`` with:

* ``init_state(rng) -> TrainState``                       (pure; jitted with output shardings)
* ``train_step(state, batch, aux) -> (state, metrics)``  (pure; jitted, state donated)
* ``eval_outputs(state, batch, aux) -> arrays``           (pure; default: originals + reconstructions)
* host-side edges: ``loaders(workdir, ...)`` (train/eval data; default: the image pipeline),
  ``eval_summary(outputs) -> (scalars, grid)`` (default: PSNR + an originals/reconstructions grid),
  ``load_aux(workdir)`` (frozen networks: teacher, perceptual net, tokenizer),
  ``handoff(state, workdir)`` (initial weights from earlier stages), ``final_params(state)``.

Subclasses say what they train (``init_params``, ``generator_loss``, ``reconstruct``, the official
``name_map`` for the weight-decay rule, ``frozen`` subtrees). Stages with a discriminator mix in
``titok_jax.train.stages.gan.GanMixin``.
"""

from __future__ import annotations

import abc
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from titok_jax import data as data_lib
from titok_jax import images as im
from titok_jax.config.run import RunConfig
from titok_jax.errors import ConfigError
from titok_jax.evaluation import metrics as metrics_lib
from titok_jax.models.layers import DTYPES
from titok_jax.porting.mapping import NameMap
from titok_jax.quantizers.vq import restart_dead_codes
from titok_jax.train.optim import cosine_schedule, ema_update, make_optimizer
from titok_jax.train.state import TrainState


def optimizer_for(sc, params, name_map: Optional[NameMap], frozen: Tuple[str, ...] = ()):
    """The optimizer of a stage section: clip -> AdamW (official decay mask) with the cosine schedule."""
    return make_optimizer(
        params,
        lr_schedule=cosine_schedule(sc.lr, sc.end_lr, sc.warmup_steps, sc.num_steps),
        b1=sc.b1,
        b2=sc.b2,
        weight_decay=sc.weight_decay,
        grad_clip=sc.grad_clip,
        name_map=name_map,
        frozen=frozen,
        accumulation_steps=sc.grad_accum_steps,
    )


class Stage(abc.ABC):
    """Shared machinery: optimizer, EMA, data and eval reconstruction (see the module docstring)."""

    name: str = ""
    has_discriminator: bool = False
    grid_name: str = "recon"  # eval image grid: WORKDIR/<stage>/<grid_name>_final.png

    def __init__(self, run: RunConfig):
        self.run = run
        self.sc = run.section(self.name)
        self.dtype = DTYPES[run.dtype]
        self.image_size = self._image_size()

    # -- to implement ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _image_size(self) -> int:
        """Training image size (pixels)."""

    @abc.abstractmethod
    def init_params(self, rng) -> Any:
        """Random-init parameters of the trained model (pure)."""

    @abc.abstractmethod
    def generator_loss(self, params, state, batch, aux, rng) -> Tuple[jax.Array, Tuple[Dict[str, jax.Array], Any]]:
        """(loss, (metrics, model output passed to the discriminator step)) of the trained model (pure)."""

    @abc.abstractmethod
    def reconstruct(self, state, batch, aux) -> jax.Array:
        """Eval reconstructions of ``batch['image']`` in [0, 1] (pure)."""

    def name_map(self) -> Optional[NameMap]:
        return None

    def frozen(self) -> Tuple[str, ...]:
        return ()

    @property
    def model_config(self):
        """The typed config of the trained model (stored with the final params)."""
        return None

    def restart_codebook_size(self) -> int:
        """Rows of ``params['quantize']['embedding']``, for stages that support the dead-code restart."""
        raise ConfigError(f"{self.name}: dead_code_restart_every is not supported by this stage (only the teacher "
                          "and stage1 have a codebook it restarts); set it to 0")

    # -- data and eval (image stages; the generator stage overrides) ----------------------------
    def loaders(self, workdir: str, process_index: int, process_count: int):
        """(train loader, eval loader) for this process."""
        common = dict(image_size=self.image_size, seed=self.run.seed, process_index=process_index,
                      process_count=process_count)  # fmt: skip
        train = data_lib.make_loader(self.run.data, global_batch_size=self.sc.batch_size, train=True, **common)
        ev = data_lib.make_loader(self.run.data, global_batch_size=self.run.eval.batch_size, train=False, **common)
        return train, ev

    def eval_ids(self, state, batch, aux) -> Optional[jax.Array]:
        """Token ids of the eval images under the trained tokenizer (None: the stage has none)."""
        return None

    def eval_outputs(self, state, batch, aux) -> Dict[str, jax.Array]:
        out = {"orig": batch["image"], "recon": self.reconstruct(state, batch, aux)}
        ids = self.eval_ids(state, batch, aux)
        return out if ids is None else dict(out, ids=ids)

    def eval_summary(self, outputs: Dict[str, Any]) -> Tuple[Dict[str, float], Any]:
        """PSNR of the held-out batch (+ codebook use of its ids: distinct ids, perplexity = 2^entropy)
        and the grid of originals (top row) over their reconstructions."""
        orig = np.asarray(outputs["orig"], np.float32)
        recon = np.clip(np.asarray(outputs["recon"], np.float32), 0.0, 1.0)
        scalars = {"psnr": float(np.mean(metrics_lib.psnr(orig, recon)))}
        if "ids" in outputs:
            ids = np.asarray(outputs["ids"]).astype(np.int64)
            _, bits = metrics_lib.codebook_usage(ids, self.model_config.codebook_size)
            scalars.update(distinct_ids=int(len(np.unique(ids))), perplexity=float(2.0**bits))
        return scalars, im.grid([orig, recon])

    # -- common ---------------------------------------------------------------------------------
    def tx(self, params):
        return optimizer_for(self.sc, params, self.name_map(), self.frozen())

    def init_state(self, rng) -> TrainState:
        r_params, r_disc, r_state = jax.random.split(rng, 3)
        params = self.init_params(r_params)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=self.tx(params).init(params),
            ema_params=jax.tree.map(jnp.copy, params) if self.sc.ema_decay else None,
            rng=r_state,
            code_counts=jnp.zeros((self.restart_codebook_size(),), jnp.int32) if self.restart_every() else None,
        )

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

        (loss, (metrics, output)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        restart_in = {k: metrics.pop(k) for k in ("_latents", "_ids") if k in metrics}  # never logged
        updates, opt_state = self.tx(state.params).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), update_norm=optax.tree.norm(updates))
        metrics["lr"] = cosine_schedule(self.sc.lr, self.sc.end_lr, self.sc.warmup_steps, self.sc.num_steps)(state.step)
        ema = state.ema_params
        if ema is not None:
            ema = ema_update(ema, params, state.step, self.sc.ema_decay)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema, rng=rng)
        if restart_in:
            new, metrics["restarted_codes"] = self._restart_dead_codes(new, restart_in["_latents"], restart_in["_ids"])
        return self.after_update(new, state, batch, output, metrics)

    # -- optional dead-code restart (off in the official recipes) -------------------------------
    # With ``<section>.dead_code_restart_every = N > 0`` the state counts the assignments of the codebook
    # at ``params['quantize']['embedding']`` (``TrainState.code_counts``); every N steps each row that no
    # latent chose in those N steps becomes a (pre-quantization) latent of the current batch plus
    # ``dead_code_restart_noise`` x their RMS, in the trained and EMA params alike, and the counts restart.
    # A stage supports it with ``restart_codebook_size`` and ``_latents`` / ``_ids`` in its metrics.
    def restart_every(self) -> int:
        return int(getattr(self.sc, "dead_code_restart_every", 0))

    def _restart_dead_codes(self, state: TrainState, latents, ids):
        k = self.restart_codebook_size()
        counts = state.code_counts + jnp.bincount(ids.reshape(-1), length=k).astype(jnp.int32)
        due = state.step % self.restart_every() == 0  # state.step: already advanced
        dead = due & (counts == 0)
        rng = jax.random.fold_in(state.rng, 0xDC)

        def restart(params):
            q = dict(params["quantize"])
            q["embedding"] = restart_dead_codes(q["embedding"], dead, latents, rng, self.sc.dead_code_restart_noise)
            return dict(params, quantize=q)

        state = state.replace(
            params=restart(state.params),
            ema_params=restart(state.ema_params) if state.ema_params is not None else None,
            code_counts=jnp.where(due, 0, counts),
        )
        return state, jnp.sum(dead).astype(jnp.float32)

    def after_update(self, new: TrainState, old: TrainState, batch, output, metrics):
        """Hook after the trained model's update (the GAN stages train their discriminator here)."""
        return new, metrics
