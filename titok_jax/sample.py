"""Class-conditional generation: MaskGIT sampling of token ids, then the tokenizer's decoder, in one jit.

  python -m titok_jax.sample --config=configs/titok_b64.py --checkpoint=WORKDIR --classes=1,2,3 --out=DIR
  python -m titok_jax.sample --config=configs/titok_b64.py --tokenizer-weights=tokenizer_titok_b64.bin \\
      --generator-weights=generator_titok_b64.bin --allow-pickle --classes=all --per-class=50 --out=DIR

``--checkpoint`` is a training workdir (``generator/final`` + its finished tokenizer stage) or a
folder with ``generator/`` and ``tokenizer/`` Orbax params; ``--generator-checkpoint`` /
``--tokenizer-checkpoint`` name the two Orbax directories separately (e.g. from ``port import``).
Writes ``DIR/tokens.npy`` (int32 [N, K]), ``DIR/labels.npy`` (int32 [N]), ``DIR/samples.npz``
(uint8 [N, H, W, 3] under ``arr_0``: the input format of the ADM evaluation suite,
openai/guided-diffusion ``evaluations/evaluator.py``) and ``DIR/grid.png`` (one row per class, up to
16 columns). Sampling settings default to the official inference config of the model
(``titok_jax.sampling.SamplingConfig.official``); flags override them.

Python API::

    from titok_jax.sample import Sampler
    s = Sampler.from_weights("configs/titok_b64.py", "tokenizer_titok_b64.safetensors",
                             "generator_titok_b64.safetensors")
    ids, images = s.sample([207, 360, 387], seed=0)     # int32 [3, 64], uint8 [3, 256, 256, 3]

Batches are split over all devices (one compiled program per batch size; the last batch is padded).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Dict, Sequence, Tuple

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
_CONFIG = None

_OVERRIDES = ("num_steps", "guidance_scale", "guidance_decay", "guidance_scale_pow", "randomize_temperature",
              "softmax_temperature_annealing")  # fmt: skip


def _log(msg: str) -> None:
    print(f"[sample] {msg}", flush=True)


def sampling_settings(config, **overrides):
    """The config's sampling settings (``config.generator.sampling``) with non-None overrides."""
    from titok_jax.sampling import SamplingConfig

    base = dict(config.generator.sampling.to_dict()) if "generator" in config else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SamplingConfig(**base)
    except TypeError as e:
        raise ValueError(f"bad sampling settings {base}: {e}") from None


class Sampler:
    """Generator + tokenizer params and one jitted ``labels -> (ids, uint8 images)`` function."""

    def __init__(self, config, generator_params, tokenizer_params, sampling=None):
        import jax

        from titok_jax.models import generator as gen_lib
        from titok_jax.models.registry import DTYPES
        from titok_jax.models.titok import TiTok, TiTokConfig
        from titok_jax.sampling import make_sample_fn
        from titok_jax.train.generator_stage import generator_config
        from titok_jax.train.sharding import make_mesh

        self.config = config
        self.gen_config = generator_config(config)
        self.tok_config = TiTokConfig.from_dict(config.model.to_dict())
        self.sampling = sampling or sampling_settings(config)
        dtype = DTYPES[config.get("dtype", "float32")]
        self.gen_params, self.tok_params = generator_params, tokenizer_params
        fn = make_sample_fn(gen_lib.build(self.gen_config, dtype), self.sampling, TiTok(self.tok_config, dtype))
        self.mesh = make_mesh((-1, 1))
        shard = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
        repl = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        # labels split over every device, outputs replicated (every process reads all samples)
        self._fn = jax.jit(fn, in_shardings=(None, shard, None, None), out_shardings=(repl, repl))
        self._jax = jax

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_checkpoints(cls, config, generator_dir: str, tokenizer_dir: str, sampling=None) -> "Sampler":
        import jax

        from titok_jax import checkpoint
        from titok_jax.inference import load_config
        from titok_jax.models import generator as gen_lib
        from titok_jax.train.generator_stage import DECODE_PARTS, generator_config
        from titok_jax.train.stages import load_tokenizer_params

        config = load_config(config)
        gc = generator_config(config)
        abstract = jax.eval_shape(lambda r: gen_lib.init_params(gc, r), jax.random.key(0))
        gen = checkpoint.load_params(generator_dir, abstract)
        tok = load_tokenizer_params(config, tokenizer_dir, DECODE_PARTS)
        return cls(config, gen, tok, sampling)

    @classmethod
    def from_workdir(cls, config, workdir: str, sampling=None) -> "Sampler":
        from titok_jax.train.stages import final_dir, tokenizer_checkpoint

        if os.path.isdir(os.path.join(workdir, "generator")) and os.path.isdir(os.path.join(workdir, "tokenizer")):
            if not os.path.isdir(final_dir(workdir, "generator")):
                return cls.from_checkpoints(
                    config, os.path.join(workdir, "generator"), os.path.join(workdir, "tokenizer"), sampling
                )
        gen_dir = final_dir(workdir, "generator")
        if not os.path.isdir(gen_dir):
            raise FileNotFoundError(
                f"no trained generator in {workdir} (expected {gen_dir}): run the 'generator' stage, or pass "
                "--generator-checkpoint/--generator-weights"
            )
        return cls.from_checkpoints(config, gen_dir, tokenizer_checkpoint(workdir), sampling)

    @classmethod
    def from_weights(cls, config, tokenizer_weights: str, generator_weights: str, sampling=None,
                     allow_pickle: bool = False) -> "Sampler":  # fmt: skip
        from titok_jax.inference import load_config
        from titok_jax.porting import api

        config = load_config(config)
        _, tok, _ = api.import_weights(config, tokenizer_weights, allow_pickle=allow_pickle)
        _, gen, _ = api.import_generator_weights(config, generator_weights, allow_pickle=allow_pickle)
        return cls(config, gen, tok, sampling)

    # -- sampling -------------------------------------------------------------------------------
    def check_labels(self, labels: Sequence[int]):
        import numpy as np

        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D list of integer class ids, got {labels!r}")
        c = self.gen_config.condition_num_classes
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(f"class ids must be in [0, {c}); got range [{labels.min()}, {labels.max()}]")
        return labels.astype(np.int32)

    def sample(self, labels: Sequence[int], seed: int = 0, batch_size: int = 32) -> Tuple[Any, Any]:
        """labels [N] -> (ids int32 [N, K], images uint8 [N, H, W, 3]); batch b uses rng fold_in(seed, b)."""
        import numpy as np

        jax = self._jax
        labels = self.check_labels(labels)
        n_dev = self.mesh.devices.size
        bs = max(n_dev, -(-int(batch_size) // n_dev) * n_dev)
        ids, images = [], []
        key = jax.random.key(seed)
        pending = None  # (outputs, n) of the previous batch: copied to the host after the next is dispatched

        def fetch(p):
            (t, x), n = p
            ids.append(np.asarray(t)[:n])
            images.append(np.asarray(x)[:n])

        for b, i in enumerate(range(0, len(labels), bs)):
            chunk = labels[i : i + bs]
            padded = np.concatenate([chunk, np.zeros(bs - len(chunk), np.int32)])
            out = self._fn(self.gen_params, padded, jax.random.fold_in(key, b), self.tok_params)
            if pending is not None:
                fetch(pending)
            pending = (out, len(chunk))
        if pending is not None:
            fetch(pending)
        return np.concatenate(ids).astype(np.int32), np.concatenate(images).astype(np.uint8)


def write_outputs(out_dir: str, ids, images, labels) -> Dict[str, str]:
    """tokens.npy, labels.npy, samples.npz (ADM format, ``arr_0``) and grid.png, written atomically."""
    import numpy as np

    from titok_jax import images as im

    os.makedirs(out_dir, exist_ok=True)
    names = {"tokens": "tokens.npy", "labels": "labels.npy", "samples": "samples.npz", "grid": "grid.png"}
    paths = {k: os.path.join(out_dir, f) for k, f in names.items()}

    def atomic(path, write):
        tmp = path + ".tmp" + os.path.splitext(path)[1]
        write(tmp)
        os.replace(tmp, path)

    atomic(paths["tokens"], lambda p: np.save(p, np.asarray(ids, np.int32)))
    atomic(paths["labels"], lambda p: np.save(p, np.asarray(labels, np.int32)))
    atomic(paths["samples"], lambda p: np.savez(p, arr_0=np.asarray(images, np.uint8)))
    # grid: one row per distinct class (first 8 classes), up to 16 samples each
    labels = np.asarray(labels)
    rows = []
    for c in list(dict.fromkeys(labels.tolist()))[:8]:
        rows.append(np.asarray(images)[labels == c][:16].astype(np.float32) / 255.0)
    if len({len(r) for r in rows}) > 1:  # uneven rows: one flat row block instead
        rows = [np.asarray(images)[:16].astype(np.float32) / 255.0]
    atomic(paths["grid"], lambda p: im.save_png(im.grid(rows), p))
    return paths


def parse_classes(spec, num_classes: int, per_class: int = 1):
    import numpy as np

    if isinstance(spec, str):
        spec = spec.strip()
        if spec == "all":
            classes = list(range(num_classes))
        else:
            try:
                classes = [int(c) for c in spec.split(",") if c.strip()]
            except ValueError:
                raise ValueError(f"--classes must be 'all' or comma-separated integers, got {spec!r}") from None
    else:
        classes = [int(c) for c in spec]
    if not classes:
        raise ValueError("no classes given")
    if per_class < 1:
        raise ValueError(f"per-class must be >= 1, got {per_class}")
    return np.repeat(np.asarray(classes, np.int32), per_class)


def run(config, workdir: str) -> Dict[str, Any]:
    """The ``sample`` step of ``python -m titok_jax.main``: reads ``config.sample``."""
    import jax

    sc = config.sample
    sampler = Sampler.from_workdir(config, workdir, sampling_settings(config, **dict(sc.get("overrides", {}))))
    labels = parse_classes(sc.classes, sampler.gen_config.condition_num_classes, sc.per_class)
    t0 = time.time()
    ids, images = sampler.sample(labels, seed=sc.seed, batch_size=sc.batch_size)
    seconds = time.time() - t0
    out = os.path.expanduser(sc.get("out_dir") or os.path.join(workdir, "sample"))
    if jax.process_index() == 0:
        write_outputs(out, ids, images, labels)
    _log(f"{len(labels)} samples ({dataclasses.asdict(sampler.sampling)}) in {seconds:.1f}s -> {out}")
    return {"num_samples": int(len(labels)), "seconds": seconds, "out_dir": out,
            "unique_codes": int(len(set(ids.ravel().tolist())))}  # fmt: skip


def default_section() -> Dict[str, Any]:
    return dict(classes="all", per_class=1, seed=0, batch_size=32, out_dir="", overrides={})


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required (e.g. --config=configs/titok_b64.py)")
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    f = {k: FLAGS[k].value for k in ("checkpoint", "generator-checkpoint", "tokenizer-checkpoint",
                                     "generator-weights", "tokenizer-weights")}  # fmt: skip
    from titok_jax.checkpoint import CheckpointError
    from titok_jax.porting.io import WeightFileError
    from titok_jax.porting.mapping import PortError
    from titok_jax.train.stages import StageError

    try:
        overrides = {k: FLAGS[k.replace("_", "-")].value for k in _OVERRIDES}
        settings = sampling_settings(config, **overrides)
        if f["checkpoint"]:
            sampler = Sampler.from_workdir(config, f["checkpoint"], settings)
        elif f["generator-checkpoint"] and f["tokenizer-checkpoint"]:
            sampler = Sampler.from_checkpoints(config, f["generator-checkpoint"], f["tokenizer-checkpoint"], settings)
        elif f["generator-weights"] and f["tokenizer-weights"]:
            sampler = Sampler.from_weights(config, f["tokenizer-weights"], f["generator-weights"], settings,
                                           FLAGS["allow-pickle"].value)  # fmt: skip
        else:
            raise app.UsageError(
                "give --checkpoint=WORKDIR, or --generator-checkpoint and --tokenizer-checkpoint, or "
                "--generator-weights and --tokenizer-weights"
            )
        labels = parse_classes(FLAGS.classes, sampler.gen_config.condition_num_classes, FLAGS["per-class"].value)
        _log(f"{len(labels)} samples, settings {dataclasses.asdict(settings)}")
        t0 = time.time()
        ids, images = sampler.sample(labels, seed=FLAGS.seed, batch_size=FLAGS["batch-size"].value)
        dt = time.time() - t0
        paths = write_outputs(FLAGS.out, ids, images, labels)
        _log(f"done in {dt:.1f}s ({len(labels) / dt:.2f} samples/s incl. compile): {', '.join(paths.values())}")
    except (WeightFileError, PortError, CheckpointError, StageError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _define_flags() -> None:
    """CLI flags, defined only when run as a program (``main`` imports this module as a library)."""
    global _CONFIG
    _CONFIG = config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. configs/titok_b64.py.", lock_config=True
    )
    flags.DEFINE_string(
        "checkpoint", None, "Training workdir, or a folder with generator/ and tokenizer/ Orbax params."
    )
    flags.DEFINE_string("generator-checkpoint", None, "Orbax params of the generator.")
    flags.DEFINE_string("tokenizer-checkpoint", None, "Orbax params of the tokenizer.")
    flags.DEFINE_string("generator-weights", None, "Official generator weight file (.safetensors / hub folder / .bin).")
    flags.DEFINE_string("tokenizer-weights", None, "Official tokenizer weight file (.safetensors / hub folder / .bin).")
    flags.DEFINE_bool("allow-pickle", False, "Allow reading PyTorch pickles via torch.load(weights_only=True).")
    flags.DEFINE_string("classes", "all", "Comma-separated class ids, or 'all' (0..num_classes-1).")
    flags.DEFINE_integer("per-class", 1, "Samples per listed class.")
    flags.DEFINE_integer("seed", 0, "Random seed (the same seed gives the same samples).")
    flags.DEFINE_integer("batch-size", 32, "Samples per compiled call (padded to a multiple of the device count).")
    flags.DEFINE_integer("num-steps", None, "Override: sampling steps.")
    flags.DEFINE_float("guidance-scale", None, "Override: classifier-free guidance scale.")
    flags.DEFINE_enum("guidance-decay", None, ["constant", "linear", "power-cosine"], "Override: guidance schedule.")
    flags.DEFINE_float("guidance-scale-pow", None, "Override: exponent of the power-cosine schedule.")
    flags.DEFINE_float("randomize-temperature", None, "Override: Gumbel temperature (0 = deterministic).")
    flags.DEFINE_bool("softmax-temperature-annealing", None, "Override: anneal the softmax temperature.")
    flags.DEFINE_string("out", None, "Output directory.")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
