"""maskgit_vqgan. Usage: --config=configs/maskgit_vqgan.py[:dtype=bfloat16,seed=N]."""

from titok_jax.config import presets


def get_config(arg=None):
    return presets.tokenizer_config("maskgit_vqgan", arg)
