"""titok_l64_512: TiTok-L-64 at ImageNet 512x512 -- tokenizer (stage 1, stage 2), generator, sampling, evaluation.

Usage: --config=configs/titok_l64_512.py[:stage1,dtype=bfloat16,seed=N,mask_schedule=NAME]; every field can be
overridden with --config.<key>=<value>. The teacher is the MaskGIT-VQGAN at 512 px: convert MaskGIT's
tokenizer_imagenet512_checkpoint once with `titok-port import --config=configs/maskgit_vqgan_512.py
--weights=tokenizer_imagenet512_checkpoint --out=DIR` and pass --config.teacher.checkpoint=DIR.

What the paper states (TiTok, arXiv 2406.07550, ImageNet 512x512 results): TiTok-L-64 is the 512-px model with
a ViT-L encoder and decoder and 64 latent tokens (twice the 32 of L-32 at 256 px); rFID 1.77, gFID 2.74,
IS 221.1, 41.0 samples/s; a 177M MaskGIT generator; the MaskGIT-VQGAN (512 px) gives the proxy codes.
Other papers' comparison tables quote 644M tokenizer parameters and a patch size of 32 at 512 px.

What is inferred here (no official 512 config or weights exist; 1d-tokenizer issue #104):
* encoder patch 32: 16x16 = 256 patches, the same encoder sequence as at 256 px;
* decoder patch 16: a 32x32 grid of 1,024 mask tokens, the grid of the 512-px teacher's proxy codes
  (MaskGIT-VQGAN, downsampling 16: 32x32 codes at 512 px) -- stage 1's targets and the pixel decoder's
  input (32x32 -> 512x512). With these two patch sizes the tokenizer has 644,298,767 parameters
  (613,558,284 in stage 1, without the pixel decoder and its codebook), which matches the quoted 644M;
  patch 16 on both sides would give 642.7M;
* codebook 4,096 x 12 with l2-normalised codes and the 1,024-way proxy head: as every legacy TiTok;
* the training recipe (steps, batch, optimiser, losses, EMA) and the generator recipe: those of the
  256-px models (the paper gives no 512-specific values);
* sampling: B-64's official settings (the 256-px model with the same 64 tokens: 8 steps, linear
  guidance 3.0, temperature 11.0, softmax-temperature annealing) -- a starting point to tune, not the
  paper's (unpublished) 512 settings;
* evaluation at 512: the ADM reference batch for 512 px is VIRTUAL_imagenet512.npz.
"""

from titok_jax.config import presets


def get_config(arg=None):
    return presets.training_config("titok_l64_512", arg)
