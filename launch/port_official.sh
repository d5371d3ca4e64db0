#!/usr/bin/env bash
# Convert the released official checkpoints into titok_jax Orbax checkpoints, one per model.
#
# Variables (environment):
#   WEIGHTS_DIR  folder holding the downloaded official files (required), e.g. the files of the
#                Hugging Face repo fun-research/TiTok: tokenizer_titok_{l32,b64,s128}.bin,
#                tokenizer_titok_{bl64,bl128,sl256}_vq8k.bin, titok_{ll32,bl64,bl128}_vae_c16.bin,
#                maskgit-vqgan-imagenet-f16-256.bin; and/or the original MaskGIT Flax checkpoint
#                tokenizer_imagenet256_checkpoint. A .safetensors file of the same stem is used when present.
#   OUT_DIR      where the Orbax checkpoints go (default: ./checkpoints); one sub-folder per model.
#   PYTHON       interpreter with titok_jax's requirements (default: .venv/bin/python if present, else python3).
#
# .bin files are PyTorch pickles: reading them needs torch (pip install torch) and is done with
# torch.load(weights_only=True) through --allow_pickle. Files that are absent are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${WEIGHTS_DIR:?set WEIGHTS_DIR to the folder with the downloaded official weights}"
OUT_DIR="${OUT_DIR:-checkpoints}"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

convert() {  # convert CONFIG FILE_STEM NAME
  local config="$1" stem="$2" name="$3" src=""
  if [[ -f "$WEIGHTS_DIR/$stem.safetensors" ]]; then src="$WEIGHTS_DIR/$stem.safetensors"
  elif [[ -f "$WEIGHTS_DIR/$stem.bin" ]]; then src="$WEIGHTS_DIR/$stem.bin"
  elif [[ -f "$WEIGHTS_DIR/$stem" ]]; then src="$WEIGHTS_DIR/$stem"
  else echo "skip $name: no $stem{.safetensors,.bin} in $WEIGHTS_DIR"; return 0; fi
  if [[ -d "$OUT_DIR/$name" ]]; then echo "skip $name: $OUT_DIR/$name exists"; return 0; fi
  echo "== $name <- $src"
  "$PYTHON" -m titok_jax.cli.port import --config="configs/$config.py" --weights="$src" \
    --out="$OUT_DIR/$name" --allow_pickle
}

convert titok_l32 tokenizer_titok_l32 titok_l32
convert titok_b64 tokenizer_titok_b64 titok_b64
convert titok_s128 tokenizer_titok_s128 titok_s128
convert titok_bl64_vq8k tokenizer_titok_bl64_vq8k titok_bl64_vq8k
convert titok_bl128_vq8k tokenizer_titok_bl128_vq8k titok_bl128_vq8k
convert titok_sl256_vq8k tokenizer_titok_sl256_vq8k titok_sl256_vq8k
convert titok_ll32_vae_c16 titok_ll32_vae_c16 titok_ll32_vae_c16
convert titok_bl64_vae_c16 titok_bl64_vae_c16 titok_bl64_vae_c16
convert titok_bl128_vae_c16 titok_bl128_vae_c16 titok_bl128_vae_c16
convert maskgit_vqgan maskgit-vqgan-imagenet-f16-256 maskgit_vqgan
convert maskgit_vqgan tokenizer_imagenet256_checkpoint maskgit_vqgan_from_jax
echo "done: $OUT_DIR"
