"""The ``evaluate`` step: a tokenizer's rFID / IS / PSNR / SSIM / codebook usage on the eval split, and
gFID / IS of generated samples (``titok_jax.evaluation.protocol``).

The Inception network is pytorch-fid's FID Inception-v3; its weights (``pt_inception-2015-12-05-6726825d.pth``,
a pytorch-fid release asset) must be downloaded by the user: without ``evaluate.inception_weights`` only
PSNR / SSIM / codebook usage are computed (and the result says so). The network runs in float32 here
(the official evaluator uses float64; expect FID differences in the second decimal). gFID compares a
``samples.npz`` (``arr_0`` uint8, e.g. from the ``sample`` step) with an ADM reference batch.

Multi-host: every process reconstructs a contiguous share of the eval split; process 0 writes
``WORKDIR/evaluate/results.json`` (atomically). Settings: ``config.evaluate`` (``EvaluateConfig``).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
from typing import Any, Dict, Iterator, Optional

import jax
import numpy as np

from titok_jax import data as data_lib
from titok_jax import parallel
from titok_jax import workdir as workdir_lib
from titok_jax.api import Tokenizer
from titok_jax.config.run import RunConfig
from titok_jax.config.sections import EvaluateConfig
from titok_jax.errors import InputError
from titok_jax.evaluation.features import InceptionFeatures
from titok_jax.evaluation.protocol import evaluate_samples, evaluate_tokenizer

log = logging.getLogger(__name__)


def eval_image_batches(source, image_size: int, batch_size: int, max_images: int = 0) -> Iterator[np.ndarray]:
    """This process's contiguous share of ``source`` as float32 [b, S, S, 3] batches (eval transform;
    nothing dropped: the last batch may be smaller; unreadable images are skipped and reported). Every
    process yields the same number of batches (trailing ones may be empty) so gathers stay in step."""
    n = len(source) if not max_images else min(len(source), int(max_images))
    share = parallel.process_share(n)
    read = data_lib.eval_reader(image_size)

    def load(i):
        img, _, skip = data_lib.read_example(source, i, read)
        if skip is not None:
            log.warning("[evaluate] skipping unreadable example %s: %s", *skip)
        return img

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for k in range(parallel.steps_for_share(n, batch_size)):
            lo = min(share.start + k * batch_size, share.stop)
            hi = min(share.start + (k + 1) * batch_size, share.stop)
            imgs = [x for x in pool.map(load, range(lo, hi)) if x is not None]
            yield np.stack(imgs) if imgs else np.zeros((0, image_size, image_size, 3), np.float32)


def inception_features(sec: EvaluateConfig, mesh=None) -> Optional[InceptionFeatures]:
    if not sec.inception_weights:
        return None
    path = os.path.expanduser(sec.inception_weights)
    if not os.path.exists(path):
        raise InputError(
            f"Inception weights {path} not found: download pytorch-fid's pt_inception-2015-12-05-6726825d.pth "
            "(a release asset of the pytorch-fid project) and pass its path (needs allow_pickle=True and torch), "
            "or a .safetensors copy of it"
        )
    return InceptionFeatures.from_file(path, allow_pickle=sec.allow_pickle, preprocess=sec.preprocess,
                                       batch_size=sec.batch_size, mesh=mesh)  # fmt: skip


def run(run_config: RunConfig, workdir: str) -> Dict[str, Any]:
    """Tokenizer metrics on the eval split, plus sample metrics when configured."""
    sec = run_config.evaluate
    workdir = os.path.abspath(os.path.expanduser(workdir))
    mesh = parallel.make_mesh((-1, 1)) if jax.process_count() > 1 else None
    features = inception_features(sec, mesh)
    if features is None:
        log.info("[evaluate] no evaluate.inception_weights: computing PSNR / SSIM / codebook usage only (no FID / IS)")
    tok = Tokenizer.load(run_config, workdir, sec, section="evaluate")
    source = data_lib.make_source(run_config.data, train=sec.split == "train")
    log.info("[evaluate] tokenizer %s from %s; %r", tok.handle.name, tok.meta["weights"], source)
    batches = eval_image_batches(source, tok.image_size, sec.batch_size, sec.max_images)
    n = len(source) if not sec.max_images else min(len(source), int(sec.max_images))
    results: Dict[str, Any] = {"tokenizer": str(tok.meta["weights"]), "split": sec.split}
    results.update(evaluate_tokenizer(tok, batches, features, tok.codebook_size, batch_size=sec.batch_size,
                                      total=len(range(n)[parallel.process_share(n)])))  # fmt: skip
    samples = sec.samples
    if samples == "auto":
        samples = os.path.join(workdir, "sample", "samples.npz")
        samples = samples if os.path.exists(samples) else ""
    if samples:
        if features is None:
            log.warning("[evaluate] skipping %s: gFID / IS need evaluate.inception_weights", samples)
        else:
            results["samples"] = evaluate_samples(os.path.expanduser(samples), features, sec.reference)
    log.info("[evaluate] %s", json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in results.items()}))
    if jax.process_index() == 0:
        workdir_lib.write_json_atomic(os.path.join(workdir, "evaluate", "results.json"), results)
    return results
