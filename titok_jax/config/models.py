"""Typed hyper-parameters of every network and of the sampler (frozen dataclasses, no JAX).

The Flax modules in ``titok_jax.models`` take these; the presets in ``titok_jax.config.presets``
name the official sizes. Validation happens here, when a config is built, so a bad value fails
before any tracing.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

from titok_jax.config.base import ConfigMixin, check

# Official width/depth/heads table (TiTokEncoder/TiTokDecoder in 1d-tokenizer modeling/modules/blocks.py).
VIT_SIZES = {
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}

# The legacy decoder head predicts over the MaskGIT-VQGAN codebook (hard-coded 1024 officially).
PROXY_CODEBOOK_SIZE = 1024

GENERATOR_TYPES = ("ViT", "UViT")  # ViT = ImageBert, UViT = UViTBert
GUIDANCE_DECAYS = ("constant", "linear", "power-cosine")
# Masking schedules (fraction of tokens masked at progress r; titok_jax.sampling.mask_ratio): TiTok's
# arccos (the official default) and the forms of MaskGIT's libml/mask_schedule.py.
MASK_SCHEDULES = ("arccos", "linear", "cosine", "square", "cubic", "sqrt", "log", "exp")


@dataclasses.dataclass(frozen=True)
class VQGANConfig(ConfigMixin):
    """Sizes of a MaskGIT-VQGAN; the defaults are the released ImageNet-256 model."""

    _what = "VQGAN config"

    hidden_channels: int = 128
    channel_mult: Tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    codebook_size: int = 1024
    num_groups: int = 32

    def __post_init__(self):
        errors = []
        if not self.channel_mult:
            errors.append("channel_mult must list at least one level")
        for k in ("hidden_channels", "num_res_blocks", "z_channels", "codebook_size", "num_groups"):
            if getattr(self, k) < 1:
                errors.append(f"{k} must be >= 1, got {getattr(self, k)}")
        check(errors, "VQGAN config")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


@dataclasses.dataclass(frozen=True)
class TiTokConfig(ConfigMixin):
    """Every hyper-parameter of a TiTok tokenizer.

    ``encoder_size`` / ``decoder_size`` name a row of the official table (small/base/large);
    ``encoder_width`` etc. override it (0 = take the table value), which the tiny test models use.
    """

    _what = "TiTok config"

    image_size: int = 256
    encoder_size: str = "base"
    decoder_size: str = "base"
    encoder_width: int = 0
    encoder_depth: int = 0
    encoder_heads: int = 0
    decoder_width: int = 0
    decoder_depth: int = 0
    decoder_heads: int = 0
    patch_size: int = 16
    decoder_patch_size: int = 16
    mlp_ratio: float = 4.0
    num_latent_tokens: int = 64
    token_size: int = 12
    codebook_size: int = 4096
    use_l2_norm: bool = True
    commitment_cost: float = 0.25
    quantize_mode: str = "vq"  # "vq" or "vae"
    is_legacy: bool = True
    finetune_decoder: bool = True
    proxy_codebook_size: int = PROXY_CODEBOOK_SIZE
    pixel_decoder: VQGANConfig = VQGANConfig()

    def __post_init__(self):
        errors = []
        for side in ("encoder", "decoder"):
            size = getattr(self, f"{side}_size")
            custom = all(getattr(self, f"{side}_{k}") for k in ("width", "depth", "heads"))
            if size not in VIT_SIZES and not custom:
                errors.append(
                    f"{side}_size={size!r} is not one of {sorted(VIT_SIZES)}; "
                    f"give {side}_width/{side}_depth/{side}_heads for a custom size"
                )
        if self.quantize_mode not in ("vq", "vae"):
            errors.append(f"quantize_mode must be 'vq' or 'vae', got {self.quantize_mode!r}")
        if self.quantize_mode == "vae" and self.finetune_decoder:
            errors.append("finetune_decoder=True needs quantize_mode='vq' (the official code raises too)")
        if self.finetune_decoder and not self.is_legacy:
            errors.append("finetune_decoder=True needs the legacy proxy-code head (is_legacy=True)")
        if self.image_size % self.patch_size or self.image_size % self.decoder_patch_size:
            errors.append(f"image_size {self.image_size} is not a multiple of the patch size")
        if (
            self.is_legacy
            and self.finetune_decoder
            and (self.image_size // self.decoder_patch_size)
            != (self.image_size // self.pixel_decoder.downsample_factor)
        ):
            errors.append("the decoder grid must equal the pixel decoder's latent grid")
        check(errors, "TiTok config")

    def _vit(self, side: str) -> Tuple[int, int, int]:
        base = VIT_SIZES.get(getattr(self, f"{side}_size"), (0, 0, 0))
        vals = [getattr(self, f"{side}_{k}") or b for k, b in zip(("width", "depth", "heads"), base)]
        return tuple(vals)

    @property
    def encoder_vit(self) -> Tuple[int, int, int]:
        return self._vit("encoder")

    @property
    def decoder_vit(self) -> Tuple[int, int, int]:
        return self._vit("decoder")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def encoder_out_channels(self) -> int:
        return 2 * self.token_size if self.quantize_mode == "vae" else self.token_size

    @property
    def is_standard_size(self) -> bool:
        """True when the official classes can build this model (sizes come only from the table)."""
        return not any(getattr(self, f"{s}_{k}") for s in ("encoder", "decoder") for k in ("width", "depth", "heads"))


@dataclasses.dataclass(frozen=True)
class GeneratorConfig(ConfigMixin):
    """Hyper-parameters of a MaskGIT generator (the official ``model.generator`` section, plus the
    tokenizer's ``codebook_size``).

    ``model_type``: "ViT" (``ImageBert``) or "UViT" (``UViTBert``). ``dropout`` / ``attn_drop`` are
    BERT's hidden / attention-probability dropout (ignored by the UViT, as officially).
    ``class_label_dropout`` is the training-time probability of replacing the class by the null class.
    """

    _what = "generator config"

    model_type: str = "ViT"
    hidden_size: int = 768
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 3072
    dropout: float = 0.1
    attn_drop: float = 0.1
    image_seq_len: int = 64
    codebook_size: int = 4096
    condition_num_classes: int = 1000
    class_label_dropout: float = 0.1

    def __post_init__(self):
        errors = []
        if self.model_type not in GENERATOR_TYPES:
            errors.append(f"model_type must be one of {GENERATOR_TYPES} (ViT = ImageBert, UViT = UViTBert), "
                          f"got {self.model_type!r}")  # fmt: skip
        for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_seq_len",
                  "codebook_size", "condition_num_classes"):  # fmt: skip
            if int(getattr(self, k)) < 1:
                errors.append(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.num_attention_heads >= 1 and self.hidden_size % self.num_attention_heads:
            errors.append(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.model_type == "UViT" and self.num_hidden_layers < 2:
            errors.append("a UViT needs num_hidden_layers >= 2 (num_hidden_layers // 2 in- and out-blocks)")
        for k in ("dropout", "attn_drop", "class_label_dropout"):
            if not 0.0 <= float(getattr(self, k)) <= 1.0:
                errors.append(f"{k} must be in [0, 1], got {getattr(self, k)}")
        check(errors, "generator config")

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size

    @property
    def null_class_id(self) -> int:
        """Token id of the dropped class (unconditional pass)."""
        return self.codebook_size + 1 + self.condition_num_classes

    @property
    def vocab_size(self) -> int:
        """K image tokens + mask + C classes + null class."""
        return self.codebook_size + self.condition_num_classes + 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig(ConfigMixin):
    """``NLayerDiscriminator`` kwargs (same names) plus the two constants of the original.

    Defaults are the official stage-2 discriminator (1,909,889 parameters).
    """

    _what = "discriminator config"

    num_channels: int = 3
    hidden_channels: int = 128
    num_stages: int = 3
    blur_resample: bool = True
    blur_kernel_size: int = 4
    num_groups: int = 32  # hard-coded GroupNorm(32, C) in the original
    pool_size: int = 16  # hard-coded AdaptiveMaxPool2d((16, 16)) in the original

    def __post_init__(self):
        errors = []
        if self.num_stages < 1:
            errors.append("the discriminator needs at least one stage")
        if self.blur_resample and self.blur_kernel_size not in (3, 4, 5):
            errors.append(f"blur_kernel_size must be one of [3, 4, 5], got {self.blur_kernel_size}")
        check(errors, "discriminator config")

    def stage_channels(self, j: int) -> Tuple[int, int]:
        """(in, out) channels of stage ``j``: multipliers (1, 1, 2, 4, ...)."""
        mult = (1,) + tuple(2**t for t in range(self.num_stages))
        return self.hidden_channels * mult[j], self.hidden_channels * mult[j + 1]


@dataclasses.dataclass(frozen=True)
class ConvNeXtConfig(ConfigMixin):
    """Defaults: ConvNeXt-S (torchvision ``convnext_small``, 50,223,688 parameters)."""

    _what = "ConvNeXt config"

    depths: Tuple[int, ...] = (3, 3, 27, 3)
    dims: Tuple[int, ...] = (96, 192, 384, 768)
    num_classes: int = 1000
    in_channels: int = 3
    patch_size: int = 4
    kernel_size: int = 7
    mlp_ratio: int = 4
    layer_scale_init: float = 1e-6

    def __post_init__(self):
        if len(self.depths) != len(self.dims) or not self.depths:
            check([f"depths {self.depths} and dims {self.dims} must be non-empty and of equal length"],
                  "ConvNeXt config")  # fmt: skip

    @property
    def num_features(self) -> int:
        """Number of ``features.{i}`` entries (stem + stages + downsamples)."""
        return 2 * len(self.depths)


CONVNEXT_SMALL = ConvNeXtConfig()


@dataclasses.dataclass(frozen=True)
class SamplingConfig(ConfigMixin):
    """Settings of the official ``generate`` (defaults: the training config's in-training previews)."""

    _what = "sampling"

    num_steps: int = 8
    guidance_scale: float = 4.5
    guidance_decay: str = "constant"
    guidance_scale_pow: float = 3.0
    randomize_temperature: float = 1.0
    softmax_temperature_annealing: bool = False
    # re-masking rule: tokens kept masked after step s = floor(L * mask_ratio((s + 1) / T)); arccos = official
    mask_schedule: str = "arccos"

    def __post_init__(self):
        errors = []
        if int(self.num_steps) < 1:
            errors.append(f"num_steps must be >= 1, got {self.num_steps}")
        if self.guidance_decay not in GUIDANCE_DECAYS:
            errors.append(f"guidance_decay must be one of {GUIDANCE_DECAYS}, got {self.guidance_decay!r}")
        if self.mask_schedule not in MASK_SCHEDULES:
            errors.append(f"mask_schedule must be one of {MASK_SCHEDULES}, got {self.mask_schedule!r}")
        if float(self.randomize_temperature) < 0:
            errors.append(f"randomize_temperature must be >= 0, got {self.randomize_temperature}")
        check(errors, "sampling settings")

    @classmethod
    def official(cls, name: str) -> "SamplingConfig":
        """The paper-number settings of a released model (official_titok.md section 7.6)."""
        if name not in OFFICIAL_SAMPLING:
            check([f"no official sampling settings for {name!r}; known: {sorted(OFFICIAL_SAMPLING)}"], "model name")
        return OFFICIAL_SAMPLING[name]


# 1d-tokenizer configs/infer/TiTok/*.yaml + sample_imagenet_titok.py (guidance_scale_pow is never passed: 3.0).
OFFICIAL_SAMPLING: Dict[str, SamplingConfig] = {
    "titok_l32": SamplingConfig(8, 4.5, "linear", 3.0, 9.5, True),
    "titok_b64": SamplingConfig(8, 3.0, "linear", 3.0, 11.0, True),
    "titok_s128": SamplingConfig(64, 6.9, "power-cosine", 3.0, 2.8, True),
}
