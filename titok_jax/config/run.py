"""``RunConfig``: everything one run does, typed, parsed once from the ``ml_collections`` config.

The config files (``configs/*.py``) and the command line (``--config.<key>=``) speak
``ml_collections.ConfigDict``; every program calls ``parse(config_dict)`` once, at its entry, and
passes the resulting ``RunConfig`` down. Nothing below the command lines reads a ConfigDict.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from titok_jax.config import presets
from titok_jax.config.base import ConfigMixin, check
from titok_jax.config.models import DiscriminatorConfig, GeneratorConfig, SamplingConfig, TiTokConfig, VQGANConfig
from titok_jax.config.sections import (
    DataConfig,
    EvalConfig,
    EvaluateConfig,
    GeneratorSection,
    GeneratorTrainConfig,
    LinearProbeConfig,
    PretokenizeConfig,
    SampleConfig,
    SingleStageConfig,
    Stage1Config,
    Stage2Config,
    TeacherConfig,
    TeacherTrainConfig,
)
from titok_jax.errors import ConfigError

DTYPES = ("float32", "bfloat16")
MODEL_KINDS = {"titok": TiTokConfig, "maskgit_vqgan": VQGANConfig}

# Training stages (one loop, ``titok_jax.train``) and their config sections.
STAGE_SECTIONS = {"teacher": "teacher_train", "stage1": "stage1", "stage2": "stage2", "single_stage": "single_stage",
                  "generator": "generator_train"}  # fmt: skip
# Steps that are not training loops (``titok_jax.steps``), each with its own section.
STEPS = ("pretokenize", "sample", "evaluate", "linear_probe")


@dataclasses.dataclass(frozen=True)
class RunConfig(ConfigMixin):
    """A model (``model_kind`` + ``model``) and, for training configs, the recipe of every stage/step.

    A model-only config (``configs/titok_b64.py`` used by ``port`` / ``reconstruct``) has the same
    sections with their defaults; ``stages`` is empty there only if the file says so.
    """

    model_name: str = ""
    model_kind: str = "titok"
    model: Union[TiTokConfig, VQGANConfig] = TiTokConfig()
    image_size: int = 256
    dtype: str = "float32"
    seed: int = 0
    stages: Tuple[str, ...] = ()
    mesh: Tuple[int, int] = (-1, 1)  # (data, fsdp); -1 = the remaining devices
    remat: bool = False
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    teacher: TeacherConfig = TeacherConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    teacher_train: TeacherTrainConfig = TeacherTrainConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    single_stage: SingleStageConfig = SingleStageConfig()
    generator: Optional[GeneratorSection] = None
    generator_train: GeneratorTrainConfig = GeneratorTrainConfig()
    pretokenize: PretokenizeConfig = PretokenizeConfig()
    sample: SampleConfig = SampleConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    linear_probe: LinearProbeConfig = LinearProbeConfig()

    def __post_init__(self):
        errors = []
        if self.model_kind not in MODEL_KINDS:
            errors.append(f"model_kind must be one of {sorted(MODEL_KINDS)}, got {self.model_kind!r}")
        elif not isinstance(self.model, MODEL_KINDS[self.model_kind]):
            errors.append(f"model must be a {MODEL_KINDS[self.model_kind].__name__} for model_kind={self.model_kind!r}")
        if self.dtype not in DTYPES:
            errors.append(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        known = tuple(STAGE_SECTIONS) + STEPS
        unknown = [s for s in self.stages if s not in known]
        if unknown:
            errors.append(f"unknown step(s) {unknown} in stages; known: {list(known)}")
        if len(set(self.stages)) != len(self.stages):
            errors.append(f"stages lists a step twice: {list(self.stages)}")
        if any(s < 1 and s != -1 for s in self.mesh) or list(self.mesh).count(-1) > 1:
            errors.append(f"mesh must be (data, fsdp) sizes >= 1, at most one of them -1; got {self.mesh}")
        if (
            isinstance(self.model, TiTokConfig)
            and self.model_kind == "titok"
            and self.image_size != self.model.image_size
        ):
            errors.append(f"image_size {self.image_size} != model.image_size {self.model.image_size}")
        if self.generator is not None and isinstance(self.model, TiTokConfig):
            g, t = self.generator.model, self.model
            if (g.codebook_size, g.image_seq_len) != (t.codebook_size, t.num_latent_tokens):
                errors.append(
                    f"the generator (codebook {g.codebook_size}, {g.image_seq_len} tokens) does not fit the "
                    f"tokenizer (codebook {t.codebook_size}, {t.num_latent_tokens} tokens): fix generator.model"
                )
        check(errors, "run config")

    # -- convenience ------------------------------------------------------------------------------
    @property
    def base_name(self) -> str:
        """The preset name without ``:stage1`` and the like (``titok_b64``)."""
        return self.model_name.split(":")[0].split(" ")[0]

    @property
    def tokenizer(self) -> TiTokConfig:
        """The TiTok of this run; ``ConfigError`` for a MaskGIT-VQGAN config."""
        if not isinstance(self.model, TiTokConfig):
            raise ConfigError(
                f"{self.model_name or 'this config'} describes a {self.model_kind}, not a TiTok tokenizer"
            )
        return self.model

    @property
    def generator_config(self) -> GeneratorConfig:
        if self.generator is None:
            raise ConfigError(
                f"{self.model_name or 'this config'} describes no generator: add a config.generator section "
                "(titok_jax.config.presets.generator_section), or use a preset with one (titok_s128/b64/l32, "
                "titok_tiny)"
            )
        return self.generator.model

    def section(self, name: str):
        """The settings of a stage (by stage name, e.g. 'teacher' -> teacher_train) or step."""
        return getattr(self, STAGE_SECTIONS.get(name, name))

    def sampling(self, **overrides) -> SamplingConfig:
        """The generator's sampling settings with ``sample.overrides`` and then non-None ``overrides``."""
        base = (self.generator.sampling if self.generator is not None else SamplingConfig()).to_dict()
        base.update(self.sample.overrides)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingConfig.from_dict(base, where="sampling settings")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "") -> "RunConfig":
        if hasattr(d, "to_dict"):
            d = d.to_dict()
        d = dict(d)
        kind = d.get("model_kind", "titok")
        if kind not in MODEL_KINDS:
            raise ConfigError(f"model_kind must be one of {sorted(MODEL_KINDS)}, got {kind!r}")
        if "model" in d and not isinstance(d["model"], ConfigMixin):
            d["model"] = MODEL_KINDS[kind].from_dict(d["model"], where="model")
        if d.get("generator") is None:
            d["generator"] = _preset_generator(d.get("model_name", ""), d.get("model"))
        return super().from_dict(d, where)


def _preset_generator(model_name: str, model) -> Optional[GeneratorSection]:
    """The preset's generator when a config carries no ``generator`` section (and it fits the model)."""
    base = str(model_name).split(":")[0]
    if base not in presets.GENERATORS or not isinstance(model, TiTokConfig):
        return None
    gen = presets.GENERATORS[base]
    if (gen.codebook_size, gen.image_seq_len) != (model.codebook_size, model.num_latent_tokens):
        return None
    return GeneratorSection(model=gen, sampling=presets.SAMPLING.get(base, SamplingConfig()))


def parse(config: Any) -> RunConfig:
    """An ``ml_collections.ConfigDict`` (or dict, or ``RunConfig``) -> ``RunConfig``, checked."""
    if isinstance(config, RunConfig):
        return config
    if config is None:
        raise ConfigError("no config given: pass --config=configs/<model>.py")
    return RunConfig.from_dict(config)


def with_changes(run: RunConfig, **sections: Dict[str, Any]) -> RunConfig:
    """``run`` with some section fields replaced, e.g. ``with_changes(run, pretokenize={'out_dir': d})``."""
    new = {}
    for name, changes in sections.items():
        current = getattr(run, name)
        new[name] = current.replace(**changes) if isinstance(current, ConfigMixin) else changes
    return run.replace(**new)


# Fields that change how a run is watched or laid out, not what it computes: a resume may change them.
BOOKKEEPING = ("log_every", "checkpoint_every", "eval_every", "keep_checkpoints")
_FREE_TOP = ("model_name", "stages", "mesh", "remat", "eval") + STEPS
_FREE_DATA = ("num_threads", "prefetch", "max_skip")


def _flat(d: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(d, Mapping):
        out: Dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(d) if isinstance(d, tuple) else d}


def resume_changes(saved: Mapping[str, Any], current: RunConfig, started: Tuple[str, ...]) -> Dict[str, Tuple]:
    """Training-relevant fields that differ between the config a run was started with (``saved``, the
    JSON of ``RunConfig.to_dict()``) and ``current``, for a resume of the training stages ``started``:
    ``{'single_stage.lr': (saved, now)}``. Relevant: the model, data, seed, dtype, teacher,
    discriminator and generator, and every field of a started stage's section except the bookkeeping
    ones (``BOOKKEEPING``); free: the stage list, mesh, eval batch, the non-training steps' sections,
    loader threads, and the sections of stages that have not started."""
    if not started:
        return {}
    relevant = {STAGE_SECTIONS[s] for s in started if s in STAGE_SECTIONS}
    a, b = _flat(dict(saved)), _flat(current.to_dict())
    changes = {}
    for key in sorted(set(a) | set(b)):
        top, _, rest = key.partition(".")
        field = key.rsplit(".", 1)[-1]
        if top in _FREE_TOP or (top == "data" and rest in _FREE_DATA):
            continue
        if top in STAGE_SECTIONS.values() and (top not in relevant or field in BOOKKEEPING):
            continue
        old, new = a.get(key, "<absent>"), b.get(key, "<absent>")
        if old != new and not (isinstance(old, (int, float)) and isinstance(new, (int, float)) and old == new):
            changes[key] = (old, new)
    return changes
