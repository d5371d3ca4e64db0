"""titok_bl128_vq8k. Usage: --config=configs/titok_bl128_vq8k.py[:dtype=bfloat16,seed=N]."""

from titok_jax import presets


def get_config(arg=None):
    return presets.tokenizer_config("titok_bl128_vq8k", arg)
