"""Typed sections of a run config: data, the training stages, and every step after the tokenizer.

Each section is a frozen dataclass whose defaults are the official recipe (official_titok.md
sections 5-8; the 1d-tokenizer training yamls). ``titok_jax.config.presets`` turns them into
``ml_collections.ConfigDict`` sections (so every key is settable with ``--config.<section>.<key>=``)
and ``titok_jax.config.parse`` turns the ConfigDict back into these classes, once, at the entry of a
program. Every value is checked here, before anything is compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from titok_jax.config.base import ConfigMixin, check
from titok_jax.config.models import MASK_SCHEDULES, GeneratorConfig, SamplingConfig, VQGANConfig

DATA_SOURCES = ("photos", "folder", "tfds")


@dataclasses.dataclass(frozen=True)
class DataConfig(ConfigMixin):
    """Where images come from and how they are augmented (keys: ``titok_jax.data`` docstring).

    ``None`` means "the default of the source" (e.g. the tfds split names)."""

    source: Optional[str] = None
    # common
    shuffle: bool = True
    num_epochs: Optional[int] = None
    min_scale: Optional[float] = None
    flip: bool = True
    max_skip: int = 64
    num_threads: Optional[int] = None
    prefetch: Optional[int] = None
    # photos + tfds
    split: Optional[str] = None
    eval_split: Optional[str] = None
    # photos
    photos: Optional[Tuple[str, ...]] = None
    eval_fraction: float = 0.25
    # folder
    path: Optional[str] = None
    eval_path: Optional[str] = None
    # tfds
    name: Optional[str] = None
    data_dir: Optional[str] = None
    image_key: str = "image"
    label_key: Optional[str] = None
    name_key: Optional[str] = None

    def __post_init__(self):
        errors = []
        if self.source is not None and self.source not in DATA_SOURCES:
            errors.append(f"data.source must be one of {DATA_SOURCES}, got {self.source!r}")
        if self.num_epochs is not None and self.num_epochs < 1:
            errors.append(f"data.num_epochs must be None (repeat forever) or >= 1, got {self.num_epochs}")
        if self.min_scale is not None and not 0.0 < self.min_scale <= 1.0:
            errors.append(f"data.min_scale must be None or in (0, 1], got {self.min_scale}")
        if self.max_skip < 0:
            errors.append(f"data.max_skip must be >= 0, got {self.max_skip}")
        if not 0.0 < self.eval_fraction <= 0.5:
            errors.append(f"data.eval_fraction must be in (0, 0.5], got {self.eval_fraction}")
        check(errors, "data config")


@dataclasses.dataclass(frozen=True)
class OptimConfig(ConfigMixin):
    """Schedule, optimiser, EMA and bookkeeping shared by every training stage."""

    name: str = ""
    num_steps: int = 1_000_000
    batch_size: int = 256
    lr: float = 1e-4
    end_lr: float = 1e-5
    warmup_steps: int = 10_000
    b1: float = 0.9
    b2: float = 0.99
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    grad_accum_steps: int = 1
    log_every: int = 50
    checkpoint_every: int = 5_000
    eval_every: int = 10_000
    keep_checkpoints: int = 3
    # opt-in profiler window: a jax.profiler trace of steps [profile_start, profile_start + profile_steps)
    # into <stage>/logs (TensorBoard's profile tab); profile_steps=0: off
    profile_start: int = 10
    profile_steps: int = 0

    def __post_init__(self):
        errors = []
        for k in ("num_steps", "batch_size", "grad_accum_steps", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, k) < 1:
                errors.append(f"{k} must be >= 1, got {getattr(self, k)}")
        for k in ("warmup_steps", "eval_every", "profile_start", "profile_steps"):
            if getattr(self, k) < 0:
                errors.append(f"{k} must be >= 0, got {getattr(self, k)}")
        if not self.lr > 0:
            errors.append(f"lr must be > 0, got {self.lr}")
        if self.end_lr < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            errors.append(f"end_lr, weight_decay and grad_clip must be >= 0, got {self.end_lr}, "
                          f"{self.weight_decay}, {self.grad_clip}")  # fmt: skip
        for k in ("b1", "b2"):
            if not 0.0 <= getattr(self, k) < 1.0:
                errors.append(f"{k} must be in [0, 1), got {getattr(self, k)}")
        if not 0.0 <= self.ema_decay < 1.0:
            errors.append(f"ema_decay must be in [0, 1) (0 = no EMA), got {self.ema_decay}")
        check(errors, f"{self.name or 'stage'} settings")


@dataclasses.dataclass(frozen=True)
class PixelLossConfig(ConfigMixin):
    """The VQGAN recipe of the pixel-space stages: MSE + ConvNeXt-S perceptual + hinge GAN + LeCam."""

    reconstruction_weight: float = 1.0
    perceptual_weight: float = 0.1
    perceptual_checkpoint: str = ""
    allow_pickle: bool = False  # read a torchvision .pth perceptual checkpoint (needs torch)
    disc_weight: float = 0.01
    disc_factor: float = 1.0
    disc_start: int = 20_000
    disc_lr: float = 1e-4
    lecam_weight: float = 0.001
    lecam_decay: float = 0.999

    def __post_init__(self):
        errors = []
        if self.disc_start < 0:
            errors.append(f"disc_start must be >= 0, got {self.disc_start}")
        if self.disc_lr <= 0 and self.disc_weight:
            errors.append(f"disc_lr must be > 0 when disc_weight > 0, got {self.disc_lr}")
        check(errors, "pixel loss settings")


def check_restart(sc) -> None:
    """``dead_code_restart_every = N > 0``: every N steps, each codebook row that no latent chose in those
    N steps is re-initialised to a latent of the current batch (+ ``dead_code_restart_noise`` x their
    RMS); 0 (the default, and the official recipes) = off."""
    errors = []
    if sc.dead_code_restart_every < 0:
        errors.append(f"dead_code_restart_every must be >= 0 (0 = off), got {sc.dead_code_restart_every}")
    if sc.dead_code_restart_noise < 0:
        errors.append(f"dead_code_restart_noise must be >= 0, got {sc.dead_code_restart_noise}")
    check(errors, f"{sc.name} settings")


@dataclasses.dataclass(frozen=True)
class Stage1Config(OptimConfig):
    """Stage 1: TiTok predicts the teacher's proxy codes (official ``configs/training/TiTok/stage1``)."""

    name: str = "stage1"
    quantizer_weight: float = 1.0
    # dead-code restart of the TiTok codebook (0 = off, the official recipe): see check_restart
    dead_code_restart_every: int = 0
    dead_code_restart_noise: float = 0.01

    def __post_init__(self):
        OptimConfig.__post_init__(self)
        check_restart(self)


@dataclasses.dataclass(frozen=True)
class Stage2Config(OptimConfig, PixelLossConfig):
    """Stage 2: decoder fine-tuning in pixel space; ``init_from``: stage-1 params (default: the run's)."""

    name: str = "stage2"
    num_steps: int = 500_000
    warmup_steps: int = 5_000
    b2: float = 0.999
    init_from: str = ""

    def __post_init__(self):
        OptimConfig.__post_init__(self)
        PixelLossConfig.__post_init__(self)


@dataclasses.dataclass(frozen=True)
class SingleStageConfig(Stage2Config):
    """A pixel-head TiTok from scratch: the stage-2 losses plus the quantizer (or KL) loss."""

    name: str = "single_stage"
    quantizer_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class TeacherTrainConfig(Stage2Config):
    """A MaskGIT-VQGAN trained from scratch (VQ + pixel losses), for the demo and new domains."""

    name: str = "teacher"
    quantizer_weight: float = 1.0
    commitment_cost: float = 0.25
    # dead-code restart of the VQGAN codebook (0 = off, the official recipe): see check_restart
    dead_code_restart_every: int = 0
    dead_code_restart_noise: float = 0.01

    def __post_init__(self):
        Stage2Config.__post_init__(self)
        check_restart(self)


@dataclasses.dataclass(frozen=True)
class GeneratorTrainConfig(OptimConfig):
    """The generator stage (1d-tokenizer ``configs/training/generator/maskgit.yaml``)."""

    name: str = "generator"
    num_steps: int = 500_000
    batch_size: int = 2048
    lr: float = 2e-4
    b2: float = 0.96
    weight_decay: float = 0.03
    tokens_dir: str = ""  # default: the pretokenize step's output
    tokenizer_checkpoint: str = ""  # for the preview grids (default: the run's latest tokenizer)
    label_smoothing: float = 0.1
    loss_weight_unmasked_token: float = 0.1
    # training masks: t ~ U(0, 1), round(L * mask_ratio(t)) tokens masked (arccos = official; see MASK_SCHEDULES)
    mask_schedule: str = "arccos"
    preview_samples: bool = True
    preview_seed: int = 0
    # in-training previews use the training config's sampler (constant guidance 4.5, temperature 1.0)
    preview_sampling: SamplingConfig = SamplingConfig()

    def __post_init__(self):
        OptimConfig.__post_init__(self)
        errors = []
        if not 0.0 <= self.label_smoothing < 1.0:
            errors.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.loss_weight_unmasked_token < 0:
            errors.append(f"loss_weight_unmasked_token must be >= 0, got {self.loss_weight_unmasked_token}")
        if self.mask_schedule not in MASK_SCHEDULES:
            errors.append(f"mask_schedule must be one of {MASK_SCHEDULES}, got {self.mask_schedule!r}")
        check(errors, "generator_train settings")


@dataclasses.dataclass(frozen=True)
class TeacherConfig(ConfigMixin):
    """The frozen MaskGIT-VQGAN of stage 1/2: an Orbax checkpoint (``port import``) or the teacher stage."""

    checkpoint: str = ""
    model: VQGANConfig = VQGANConfig()


@dataclasses.dataclass(frozen=True)
class EvalConfig(ConfigMixin):
    """The held-out batch every training stage evaluates before, during and after training."""

    batch_size: int = 8

    def __post_init__(self):
        check([] if self.batch_size >= 1 else [f"eval.batch_size must be >= 1, got {self.batch_size}"], "eval")


@dataclasses.dataclass(frozen=True)
class GeneratorSection(ConfigMixin):
    """``config.generator``: the MaskGIT generator and its inference sampling settings."""

    model: GeneratorConfig = GeneratorConfig()
    sampling: SamplingConfig = SamplingConfig()


# ---------------------------------------------------------------------------------------------- steps
@dataclasses.dataclass(frozen=True)
class TokenizerSource(ConfigMixin):
    """Which tokenizer a step uses: an official weight file (``tokenizer_weights``), an Orbax params
    directory (``tokenizer_checkpoint``), or else the run's latest finished tokenizer stage."""

    tokenizer_checkpoint: str = ""
    tokenizer_weights: str = ""
    allow_pickle: bool = False  # read PyTorch .bin weights (needs torch)


@dataclasses.dataclass(frozen=True)
class PretokenizeConfig(TokenizerSource):
    """Pre-tokenization (the generator's data): every image (and its mirror image) -> ids, in shards."""

    out_dir: str = ""  # default: WORKDIR/pretokenize
    split: str = "train"  # 'train' | 'eval' (the data config's eval split)
    flip: bool = True
    shard_size: int = 1024
    batch_size: int = 64  # per process
    num_threads: int = 0  # 0: min(8, CPU count)

    def __post_init__(self):
        errors = []
        if self.split not in ("train", "eval"):
            errors.append(f"pretokenize.split must be 'train' or 'eval', got {self.split!r}")
        for k in ("shard_size", "batch_size"):
            if getattr(self, k) < 1:
                errors.append(f"pretokenize.{k} must be >= 1, got {getattr(self, k)}")
        check(errors, "pretokenize settings")


@dataclasses.dataclass(frozen=True)
class SampleConfig(ConfigMixin):
    """Class-conditional sampling after training (``config.generator.sampling``, with ``overrides``)."""

    classes: str = "all"  # 'all' or comma-separated class ids
    per_class: int = 1
    seed: int = 0
    batch_size: int = 32
    out_dir: str = ""  # default: WORKDIR/sample
    overrides: Dict[str, Any] = dataclasses.field(default_factory=dict)  # SamplingConfig fields

    def __post_init__(self):
        errors = []
        if self.per_class < 1 or self.batch_size < 1:
            errors.append(f"sample.per_class and sample.batch_size must be >= 1, got {self.per_class}, "
                          f"{self.batch_size}")  # fmt: skip
        unknown = sorted(set(self.overrides) - {f.name for f in dataclasses.fields(SamplingConfig)})
        if unknown:
            errors.append(f"sample.overrides has unknown key(s) {unknown}; use SamplingConfig fields")
        check(errors, "sample settings")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig(TokenizerSource):
    """Tokenizer metrics (rFID, IS, PSNR, SSIM, codebook usage) and sample metrics (gFID, IS)."""

    split: str = "eval"  # 'eval' (the data config's eval split) or 'train'
    max_images: int = 0  # 0 = the whole split
    batch_size: int = 32  # images per reconstruction / Inception call (per process)
    inception_weights: str = ""  # pt_inception-2015-12-05-6726825d.pth (or a .safetensors copy)
    preprocess: str = "tf1"  # 'tf1' (official evaluator / ADM) or 'pytorch_fid'
    samples: str = ""  # samples.npz for gFID/IS ('auto': WORKDIR/sample/samples.npz)
    reference: str = ""  # ADM reference batch for gFID

    def __post_init__(self):
        errors = []
        if self.split not in ("train", "eval"):
            errors.append(f"evaluate.split must be 'train' or 'eval', got {self.split!r}")
        if self.preprocess not in ("tf1", "pytorch_fid"):
            errors.append(f"evaluate.preprocess must be 'tf1' or 'pytorch_fid', got {self.preprocess!r}")
        if self.batch_size < 1 or self.max_images < 0:
            errors.append(f"evaluate.batch_size must be >= 1 and max_images >= 0, got {self.batch_size}, "
                          f"{self.max_images}")  # fmt: skip
        check(errors, "evaluate settings")


LINEAR_PROBE_FEATURES = ("encoder", "latent")
LINEAR_PROBE_OPTIMIZERS = ("adamw", "sgd")


@dataclasses.dataclass(frozen=True)
class LinearProbeConfig(TokenizerSource):
    """A linear classifier on frozen tokenizer features (``titok_jax.steps.linear_probe``)."""

    feature: str = "encoder"  # 'encoder' | 'latent'
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # 'adamw' | 'sgd' (with momentum)
    momentum: float = 0.9
    feature_batch_size: int = 64  # images per process per feature step
    seed: int = 0

    def __post_init__(self):
        errors = []
        if self.feature not in LINEAR_PROBE_FEATURES:
            errors.append(f"linear_probe.feature must be one of {LINEAR_PROBE_FEATURES}, got {self.feature!r}")
        if self.optimizer not in LINEAR_PROBE_OPTIMIZERS:
            errors.append(f"linear_probe.optimizer must be one of {LINEAR_PROBE_OPTIMIZERS}, got {self.optimizer!r}")
        for k in ("epochs", "batch_size", "feature_batch_size"):
            if getattr(self, k) < 1:
                errors.append(f"linear_probe.{k} must be >= 1, got {getattr(self, k)}")
        if self.lr <= 0 or self.weight_decay < 0:
            errors.append(f"linear_probe needs lr > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        check(errors, "linear_probe settings")
