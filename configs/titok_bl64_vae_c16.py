"""titok_bl64_vae_c16: model + official training recipe.

Usage: --config=configs/titok_bl64_vae_c16.py[:dtype=bfloat16,seed=N]; every field can be overridden with
--config.<key>=<value> (e.g. --config.data.data_dir=..., --config.teacher.checkpoint=...).
"""

from titok_jax.config import presets


def get_config(arg=None):
    return presets.training_config("titok_bl64_vae_c16", arg)
