"""titok_b128_512: TiTok-B-128 at ImageNet 512x512 -- tokenizer (stage 1, stage 2), generator, sampling, evaluation.

Usage: --config=configs/titok_b128_512.py[:stage1,dtype=bfloat16,seed=N,mask_schedule=NAME]; every field can be
overridden with --config.<key>=<value>. The teacher is the MaskGIT-VQGAN at 512 px: convert MaskGIT's
tokenizer_imagenet512_checkpoint once with `titok-port import --config=configs/maskgit_vqgan_512.py
--weights=tokenizer_imagenet512_checkpoint --out=DIR` and pass --config.teacher.checkpoint=DIR.

What the paper states (TiTok, arXiv 2406.07550, ImageNet 512x512 results): TiTok-B-128 is the 512-px model with
a ViT-B encoder and decoder and 128 latent tokens (twice the 64 of B-64 at 256 px); rFID 1.52, gFID 2.13,
IS 261.2, "74x faster" than DiT-XL/2; a 177M MaskGIT generator; the MaskGIT-VQGAN (512 px) gives the proxy
codes. Other papers' comparison tables quote 202M tokenizer parameters and a patch size of 32 at 512 px.

What is inferred here (no official 512 config or weights exist; 1d-tokenizer issue #104):
* encoder patch 32: 16x16 = 256 patches, the same encoder sequence as at 256 px;
* decoder patch 16: a 32x32 grid of 1,024 mask tokens, the grid of the 512-px teacher's proxy codes
  (stage 1's targets and the pixel decoder's input, 32x32 -> 512x512). The tokenizer then has
  207,320,847 parameters (176,580,364 in stage 1), 2.6% above the quoted 202M; patch 16 on both sides
  gives 206.1M, and no patch size that keeps the 32x32 teacher grid reaches 202M, so the quoted figure
  is likely counted differently (the L-64 count of the same layout matches its quoted 644M exactly);
* codebook 4,096 x 12 with l2-normalised codes and the 1,024-way proxy head: as every legacy TiTok;
* the training recipe and the generator recipe: those of the 256-px models;
* sampling: S-128's official settings (the 256-px model with the same 128 tokens: 64 steps, power-cosine
  guidance 6.9, temperature 2.8, annealing; S-128 pairs them with a UViT, the 512 model with the 177M
  ViT) -- a starting point to tune, not the paper's (unpublished) 512 settings. 64 steps is consistent
  with the paper's throughput (B-128 about 5.5x slower than L-64);
* evaluation at 512: the ADM reference batch for 512 px is VIRTUAL_imagenet512.npz.
"""

from titok_jax.config import presets


def get_config(arg=None):
    return presets.training_config("titok_b128_512", arg)
