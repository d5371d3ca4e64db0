"""The train-state pytree shared by every stage."""

from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax


@flax.struct.dataclass
class TrainState:
    """Everything a stage needs to resume exactly: params, optimizer, EMA, RNG, GAN parts.

    ``disc_params`` / ``disc_opt_state`` / ``lecam`` are None for stages without a discriminator.
    ``lecam`` holds the two LeCam EMA buffers ``{'ema_real': f32[], 'ema_fake': f32[]}``.
    ``code_counts`` (int32 [K]) counts codebook assignments since the last dead-code restart (stages
    with ``dead_code_restart_every > 0``); None otherwise.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array
    disc_params: Optional[Any] = None
    disc_opt_state: Optional[Any] = None
    lecam: Optional[Any] = None
    code_counts: Optional[Any] = None
