"""Class-conditional generation after training: the ``sample`` step, and its output files.

Writes ``DIR/tokens.npy`` (int32 [N, K]), ``DIR/labels.npy`` (int32 [N]), ``DIR/samples.npz``
(uint8 [N, H, W, 3] under ``arr_0``: the input format of the ADM evaluation suite,
openai/guided-diffusion ``evaluations/evaluator.py``) and ``DIR/grid.png`` (one row per class, up to
16 columns), each atomically. Settings: ``config.sample`` (``SampleConfig``; ``overrides`` change the
sampling settings of ``config.generator.sampling``). The sampler itself is ``titok_jax.api.Sampler``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Dict, Sequence, Union

import jax
import numpy as np

from titok_jax import data as data_lib
from titok_jax import images as im
from titok_jax.api import Sampler
from titok_jax.config.run import RunConfig
from titok_jax.errors import InputError
from titok_jax.evaluation import metrics
from titok_jax.steps import report

log = logging.getLogger(__name__)


def parse_classes(spec: Union[str, Sequence[int]], num_classes: int, per_class: int = 1) -> np.ndarray:
    """'all' / '1,2,3' / a list of ints -> the labels, each repeated ``per_class`` times."""
    if isinstance(spec, str):
        spec = spec.strip()
        if spec == "all":
            classes = list(range(num_classes))
        else:
            try:
                classes = [int(c) for c in spec.split(",") if c.strip()]
            except ValueError:
                raise InputError(f"classes must be 'all' or comma-separated integers, got {spec!r}") from None
    else:
        classes = [int(c) for c in spec]
    if not classes:
        raise InputError("no classes given")
    if per_class < 1:
        raise InputError(f"per_class must be >= 1, got {per_class}")
    return np.repeat(np.asarray(classes, np.int32), per_class)


def write_outputs(out_dir: str, ids, images, labels, references=None) -> Dict[str, str]:
    """tokens.npy, labels.npy, samples.npz (ADM format, ``arr_0``) and grid.png, written atomically;
    ``references`` (float [C, H, W, 3] in [0, 1], one image per class): each grid row starts with its class's."""
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
        row = np.asarray(images)[labels == c][:16].astype(np.float32) / 255.0
        rows.append(row if references is None else np.concatenate([np.asarray(references)[c][None], row]))
    if len({len(r) for r in rows}) > 1:  # uneven rows: one flat row block instead
        rows = [np.asarray(images)[:16].astype(np.float32) / 255.0]
    atomic(paths["grid"], lambda p: im.save_png(im.grid(rows), p))
    return paths


def run(run_config: RunConfig, workdir: str) -> Dict[str, Any]:
    """The ``sample`` step of ``titok-train``: the run's generator and tokenizer, ``config.sample``."""
    sc = run_config.sample
    sampler = Sampler.from_workdir(run_config, workdir, run_config.sampling())
    labels = parse_classes(sc.classes, sampler.gen_config.condition_num_classes, sc.per_class)
    t0 = time.time()
    ids, images = sampler.sample(labels, seed=sc.seed, batch_size=sc.batch_size)
    seconds = time.time() - t0
    out = os.path.expanduser(sc.out_dir or os.path.join(workdir, "sample"))
    refs, names = class_images(run_config, np.asarray(images).shape[1])
    if jax.process_index() == 0:
        write_outputs(out, ids, images, labels, refs)
    log.info("[sample] %d samples (%s) in %.1fs -> %s", len(labels), dataclasses.asdict(sampler.sampling), seconds, out)
    summary = {"num_samples": int(len(labels)), "seconds": seconds, "out_dir": out,
               "unique_codes": int(len(set(ids.ravel().tolist())))}  # fmt: skip
    if refs is not None and int(np.max(labels)) < len(refs):
        summary["class_match"] = match = metrics.class_match(np.asarray(images, np.float32) / 255.0, labels, refs)
        summary["class_names"] = names
        log.info("[sample] %s", "\n".join(report.class_match_table(match, names)))
    return summary


def class_images(run_config: RunConfig, size: int):
    """(float [C, size, size, 3], names) of the ``photos`` source -- one photo per class, as the
    pretokenize step reads it -- or (None, None) for other sources (no single image per class)."""
    if run_config.data.source != "photos":
        return None, None
    source = data_lib.make_source(run_config.data, train=True)
    read = data_lib.eval_reader(size)
    refs = [data_lib.read_example(source, i, read)[0] for i in range(len(source))]
    return np.stack(refs).astype(np.float32), list(source.photos)
