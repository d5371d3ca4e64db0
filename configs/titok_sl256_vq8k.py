"""titok_sl256_vq8k: model + official training recipe.

Usage: --config=configs/titok_sl256_vq8k.py[:dtype=bfloat16,seed=N]; every field can be overridden with
--config.<key>=<value> (e.g. --config.data.data_dir=..., --config.teacher.checkpoint=...).
"""

from titok_jax.config import presets


def get_config(arg=None):
    return presets.training_config("titok_sl256_vq8k", arg)
