"""TiTok's MaskGIT sampler (official ``ImageBert.generate``, official_titok.md section 7.5) as pure JAX.

The whole loop is one ``jax.lax.scan`` inside one ``jax.jit``; the per-step constants (guidance scale,
softmax and Gumbel temperatures, number of tokens to keep masked) depend only on the sequence length
and the settings, so they are computed on the host (NumPy, with the official float64 / float32
arithmetic) and scanned over as constant arrays: nothing data-dependent leaves the device.

One step ``s`` of ``T`` (``r = (s + 1) / T``, ``K`` = codebook size = mask id):

1. ``logits``: conditional ``c`` (class token) and, when guidance is on, unconditional ``u`` (null
   class) from ONE generator call on the batch ``[ids; ids]`` of size 2B.
   constant / linear: ``c + cfg (c - u)``; power-cosine: ``u + cfg (c - u)``; where ``cfg == 0``
   (linear at step 0, or guidance 0) the logits are ``c`` from one pass on the B conditional rows, as
   the official single pass. The steps are scanned in runs of equal pass count (linear: step 0 alone,
   then steps 1..T-1), all inside the one program.
   Guidance schedules: constant ``g``; linear ``g s / T``; power-cosine
   ``(g - 1) (1 - cos(pi (s / T)^p)) / 2 + 1`` (p = ``guidance_scale_pow``, computed in float32 as
   the official code does). If ``cfg`` is 0 at every step, only the B conditional pass runs.
2. softmax temperature annealing (optional): ``logits / (0.5 + 0.8 (1 - r))``.
3. Gumbel-max sampling at temperature ``tau (1 - r)``, ``tau`` = ``randomize_temperature``; the
   confidence of a sampled token is its (guided, scaled) raw logit, ``+inf`` for already fixed tokens.
4. ``n = max(1, min(#masked(sample 0) - 1, floor(L arccos(r) / (pi / 2))))`` (float64 on the host;
   ``SamplingConfig.mask_schedule`` swaps ``arccos(r) / (pi / 2)`` for another ``mask_ratio`` form);
   confidences get fresh Gumbel noise at the same temperature and every token whose confidence is
   ``<=`` the n-th smallest is masked again (the last step keeps everything).

Tokens still masked after each step (``masked_counts``), i.e. how many tokens each step fixes:

* titok_l32 (L 32, T 8): 29 26 24 21 18 14 10 0 (3, 3, 2, 3, 3, 4, 4, 10 tokens fixed per step)
* titok_b64 (L 64, T 8): 58 53 48 42 36 29 20 0 (6, 5, 5, 6, 6, 7, 9, 20)
* titok_s128 (L 128, T 64): 126 125 124 122 ... 28 25 20 14 0 (1-2 per step early on, 14 at the end)

Randomness: step ``s`` draws its two Gumbel fields (sampling, confidences) from ``fold_in(rng, s)``:
the same rng and labels give the same ids, and ``randomize_temperature == 0`` needs no randomness at all
(then the ids equal the official sampler's exactly). ``rng`` may also be one key per sample ([B] keys):
then sample ``i``'s noise comes from ``fold_in(rng[i], s)`` alone, so a sample does not depend on the
batch it is drawn in (``titok_jax.api.Sampler`` uses ``fold_in(key(seed), i)`` for the i-th label). The
official code draws from torch's global generator instead, so randomized samples agree with it in
distribution, not value.

API: ``SamplingConfig`` (``titok_jax.config.models``, + ``SamplingConfig.official(name)``),
``mask_ratio`` (the masking schedules, shared with the generator's training masks),
``schedule``/``masked_counts`` (host tables), ``generate_tokens`` (traceable; call it inside
``jax.jit``) and ``make_sample_fn`` (the jitted ``labels -> (ids, uint8 images)`` function with the
tokenizer's ``decode_tokens`` fused).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from titok_jax.config.models import (  # noqa: F401 (re-exported)
    GUIDANCE_DECAYS,
    MASK_SCHEDULES,
    OFFICIAL_SAMPLING,
    SamplingConfig,
)
from titok_jax.images import to_uint8


# -------------------------------------------------------------------------------------------------
# Masking schedules
def mask_ratio(r, schedule: str = "arccos", seq_len: int = 1, xp=np):
    """Fraction of the ``seq_len`` tokens that are masked at progress ``r`` in [0, 1] (1 at r = 0, 0 at r = 1),
    clamped to [1e-6, 1]. ``xp``: ``numpy`` (the sampler's float64 host tables) or ``jax.numpy`` (training masks).

    arccos (TiTok, official): ``arccos(r) / (pi/2)``. MaskGIT's ``libml/mask_schedule.py`` forms: linear
    ("uniform") ``1 - r``; cosine ``cos(pi r / 2)``; square / cubic / sqrt ("pow2", "pow3", "pow0.5")
    ``1 - r^2``, ``1 - r^3``, ``1 - r^0.5``; log ``-log2(r) / log2(L)``; exp ``1 - L^-(1 - r)``.
    """
    if schedule == "arccos":
        ratio = xp.arccos(r) / (math.pi * 0.5)
    elif schedule == "linear":
        ratio = 1.0 - r
    elif schedule == "cosine":
        ratio = xp.cos(math.pi * 0.5 * r)
    elif schedule in ("square", "cubic", "sqrt"):
        ratio = 1.0 - r ** {"square": 2.0, "cubic": 3.0, "sqrt": 0.5}[schedule]
    elif schedule == "log":
        with np.errstate(divide="ignore"):  # r = 0 -> inf -> clamped to 1
            ratio = -xp.log2(r) / math.log2(max(int(seq_len), 2))
    elif schedule == "exp":
        ratio = 1.0 - xp.exp2(-math.log2(max(int(seq_len), 2)) * (1.0 - r))
    else:
        raise ValueError(f"mask schedule must be one of {MASK_SCHEDULES}, got {schedule!r}")
    return xp.clip(ratio, 1e-6, 1.0)


# -------------------------------------------------------------------------------------------------
# Host-side schedule
def guidance_schedule(sampling: SamplingConfig) -> np.ndarray:
    """cfg scale of every step, float32 [T], with the official arithmetic (python floats for constant and
    linear, float32 tensors for power-cosine)."""
    t, g = int(sampling.num_steps), float(sampling.guidance_scale)
    if sampling.guidance_decay == "constant":
        return np.full(t, g, np.float32)
    if sampling.guidance_decay == "linear":  # updated after each step: step s uses ((s) / T) * g
        return np.asarray([0.0] + [(1.0 * s / t) * g for s in range(1, t)], np.float32)
    f32 = np.float32
    out = []
    for s in range(t):
        x = np.power(f32(s / t), f32(sampling.guidance_scale_pow), dtype=f32)
        step = (f32(1) - np.cos(x * f32(math.pi), dtype=f32)) * f32(1) / f32(2)
        out.append(f32(g - 1) * step + f32(1))
    return np.asarray(out, np.float32)


def schedule(seq_len: int, sampling: SamplingConfig) -> Dict[str, np.ndarray]:
    """Per-step constants [T]: ``cfg`` (float32), ``softmax_temperature`` (float32; 1 without annealing),
    ``gumbel_temperature`` (float32), ``n_keep_masked`` (int32, ``floor(L mask_ratio(r))`` in float64; arccos:
    ``floor(L arccos(r) / (pi/2))``),
    ``two_passes`` (bool: the official sampler makes a conditional and an unconditional pass)."""
    t = int(sampling.num_steps)
    ratio = np.asarray([1.0 * (s + 1) / t for s in range(t)], np.float64)
    cfg = guidance_schedule(sampling)
    soft = np.asarray([0.5 + 0.8 * (1.0 - r) for r in ratio], np.float64)
    if not sampling.softmax_temperature_annealing:
        soft = np.ones(t)
    gumbel = np.asarray([float(sampling.randomize_temperature) * (1.0 - r) for r in ratio], np.float64)
    keep = np.floor(seq_len * mask_ratio(ratio, sampling.mask_schedule, seq_len))
    return {
        "cfg": cfg,
        "softmax_temperature": soft.astype(np.float32),
        "gumbel_temperature": gumbel.astype(np.float32),
        "n_keep_masked": keep.astype(np.int32),
        "two_passes": cfg != 0,
    }


def masked_counts(seq_len: int, sampling: SamplingConfig) -> np.ndarray:
    """Tokens still masked after each step [T] (exact barring ties in the confidences)."""
    keep = schedule(seq_len, sampling)["n_keep_masked"]
    out, masked = [], seq_len
    for s in range(int(sampling.num_steps)):
        masked = 0 if s == sampling.num_steps - 1 else max(1, min(masked - 1, int(keep[s])))
        out.append(masked)
    return np.asarray(out, np.int32)


# -------------------------------------------------------------------------------------------------
# The sampler
def _gumbel(rng: jax.Array, shape) -> jax.Array:
    """-log(-log(u)), u ~ U[0, 1), logs clamped at 1e-20 as officially."""
    u = jax.random.uniform(rng, shape, jnp.float32)
    return -jnp.log(jnp.maximum(-jnp.log(jnp.maximum(u, 1e-20)), 1e-20))


LogitsFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _noise(rng: jax.Array, s: jax.Array, shape) -> tuple:
    """The step's two Gumbel fields, [B, L, K] (sampling) and [B, L] (confidences): from one key for the
    batch, or from each sample's own key when ``rng`` holds [B] keys."""
    if rng.ndim == 0:
        r_sample, r_conf = jax.random.split(jax.random.fold_in(rng, s))
        return _gumbel(r_sample, shape), _gumbel(r_conf, shape[:-1])

    def one(key):
        r_sample, r_conf = jax.random.split(jax.random.fold_in(key, s))
        return _gumbel(r_sample, shape[1:]), _gumbel(r_conf, shape[1:-1])

    return jax.vmap(one)(rng)


def _runs(flags: np.ndarray) -> list:
    """[(start, stop, flag)] of the runs of equal values in a 1-D array."""
    cuts = [0] + [i for i in range(1, len(flags)) if flags[i] != flags[i - 1]] + [len(flags)]
    return [(a, b, bool(flags[a])) for a, b in zip(cuts[:-1], cuts[1:])]


def generate_tokens(
    logits_fn: LogitsFn,
    labels: jax.Array,
    rng: jax.Array,
    *,
    seq_len: int,
    codebook_size: int,
    sampling: SamplingConfig,
    return_history: bool = False,
):
    """Class-conditional token ids int32 [B, L] (``return_history``: also the ids after every step [T, B, L]).

    ``logits_fn(ids [N, L], labels [N], drop [N] bool) -> logits [N, L, K]`` (drop True = null class).
    ``rng``: one key, or [B] keys (one per sample). Traceable: call it inside ``jax.jit``
    (``make_sample_fn`` does) so the loop compiles once.
    """
    labels = jnp.asarray(labels, jnp.int32)
    if labels.ndim != 1:
        raise ValueError(f"labels must be [B] class ids; got shape {tuple(labels.shape)}")
    b, k = labels.shape[0], int(codebook_size)
    if rng.ndim not in (0, 1) or (rng.ndim == 1 and rng.shape[0] != b):
        raise ValueError(f"rng must be one key or one key per label ({b}); got shape {tuple(rng.shape)}")
    sched = schedule(seq_len, sampling)
    power_cosine = sampling.guidance_decay == "power-cosine"
    t = int(sampling.num_steps)
    xs = (
        np.arange(t, dtype=np.int32),
        sched["cfg"],
        sched["softmax_temperature"],
        sched["gumbel_temperature"],
        sched["n_keep_masked"],
    )
    no_drop = jnp.zeros((b,), bool)
    labels2 = jnp.concatenate([labels, labels])
    drop2 = jnp.concatenate([no_drop, jnp.ones((b,), bool)])

    def step(ids, x, two_pass):
        s, cfg, soft_t, gumbel_t, n_keep = x
        is_mask = ids == k
        if two_pass:
            both = logits_fn(jnp.concatenate([ids, ids]), labels2, drop2).astype(jnp.float32)
            cond, uncond = both[:b], both[b:]
            logits = uncond + (cond - uncond) * cfg if power_cosine else cond + (cond - uncond) * cfg
        else:  # guidance 0 at this step: the conditional pass alone
            logits = logits_fn(ids, labels, no_drop).astype(jnp.float32)
        if sampling.softmax_temperature_annealing:
            logits = logits / soft_t
        g_sample, g_conf = _noise(rng, s, logits.shape)
        sampled = jnp.argmax(logits + gumbel_t * g_sample, axis=-1).astype(jnp.int32)
        conf = jnp.take_along_axis(logits, sampled[..., None], axis=-1)[..., 0]
        sampled = jnp.where(is_mask, sampled, ids)
        conf = jnp.where(is_mask, conf, jnp.inf)
        n = jnp.maximum(1, jnp.minimum(jnp.sum(is_mask[0]).astype(jnp.int32) - 1, n_keep))
        conf = conf + gumbel_t * g_conf
        cutoff = jnp.take(jnp.sort(conf, axis=-1), n - 1, axis=1)
        remasked = jnp.where(conf <= cutoff[:, None], k, sampled)
        new_ids = jnp.where(s == t - 1, sampled, remasked).astype(jnp.int32)
        return new_ids, (new_ids if return_history else None)

    ids = jnp.full((b, seq_len), k, jnp.int32)
    history = []
    # One scan per run of steps with the same pass count (the one-pass steps run at batch B).
    for start, stop, two_pass in _runs(sched["two_passes"]):
        run_xs = tuple(jnp.asarray(a[start:stop]) for a in xs)
        ids, h = jax.lax.scan(lambda c, x, tp=two_pass: step(c, x, tp), ids, run_xs)
        history.append(h)
    return (ids, jnp.concatenate(history)) if return_history else ids


def make_sample_fn(generator_module, sampling: SamplingConfig, tokenizer_module=None):
    """``fn(gen_params, labels [B], rng, tok_params=None) -> (ids int32 [B, L], uint8 [B, H, W, 3] or None)``.

    One ``jax.jit``: the sampling loop and (with ``tokenizer_module``, a ``TiTok``) its
    ``decode_tokens`` + uint8 conversion compile into one program per batch size.
    """
    cfg = generator_module.config

    def fn(gen_params, labels, rng, tok_params: Optional[dict] = None):
        def logits_fn(ids, lab, drop):
            return generator_module.apply({"params": gen_params}, ids, lab, drop, deterministic=True)

        ids = generate_tokens(
            logits_fn, labels, rng, seq_len=cfg.image_seq_len, codebook_size=cfg.codebook_size, sampling=sampling
        )
        if tokenizer_module is None:
            return ids, None
        if tok_params is None:
            raise ValueError("this sample fn decodes images: pass the tokenizer params (tok_params)")
        images = tokenizer_module.apply({"params": tok_params}, ids, method=tokenizer_module.decode_tokens)
        return ids, to_uint8(images)

    return jax.jit(fn)
