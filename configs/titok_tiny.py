"""titok_tiny. Usage: --config=configs/titok_tiny.py[:stage1,dtype=bfloat16,seed=N]."""

from titok_jax.config import presets


def get_config(arg=None):
    return presets.training_config("titok_tiny", arg)
