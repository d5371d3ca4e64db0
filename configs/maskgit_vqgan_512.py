"""maskgit_vqgan_512: the MaskGIT-VQGAN at 512x512 (MaskGIT's tokenizer_imagenet512_checkpoint, rFID 1.97).

The same network as the 256-px model (google-research/maskgit configs/vqgan_config.py: 128 filters,
channel multipliers (1, 1, 2, 2, 4), 2 res blocks, 1,024 x 256 codebook; only ``image_size`` differs), so
the same importer reads either checkpoint; at 512 px it makes 32x32 codes, the proxy codes of
titok_l64_512 / titok_b128_512.

Usage: titok-port import --config=configs/maskgit_vqgan_512.py --weights=tokenizer_imagenet512_checkpoint --out=DIR
"""

from titok_jax.config import presets


def get_config(arg=None):
    return presets.tokenizer_config("maskgit_vqgan_512", arg)
