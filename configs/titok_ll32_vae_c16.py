"""titok_ll32_vae_c16. Usage: --config=configs/titok_ll32_vae_c16.py[:dtype=bfloat16,seed=N]."""

from titok_jax import presets


def get_config(arg=None):
    return presets.tokenizer_config("titok_ll32_vae_c16", arg)
