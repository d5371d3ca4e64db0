"""Inception features for FID / IS over uint8 image batches, on one device, a mesh, or several hosts.

``InceptionFeatures(params)`` holds the FID Inception-v3 parameters and one jitted function
uint8 NHWC -> (pool3 [B, 2048], logits_unbiased [B, 1008]); calling it returns float64 numpy arrays.

* Preprocessing ``"tf1"`` (default; the 1d-tokenizer evaluator, torch-fidelity and the ADM suite's TF
  graph) or ``"pytorch_fid"`` (pytorch-fid's ``InceptionV3`` wrapper); see ``titok_jax.models.inception``.
* Inputs: a numpy array (this process's images; split into ``batch_size`` chunks, the last one padded so
  nothing recompiles) or a global ``jax.Array`` already sharded over the mesh's data axis (run as is).
* With a ``mesh``: parameters are replicated, batches sharded over ``data_axis``. With several processes
  (``jax.process_count() > 1``) each process passes its own images; the features of all processes are
  gathered with ``multihost_utils.process_allgather`` and every process gets them all, in process order.

``stats_from_images`` accumulates FID statistics (and optionally the IS logits) over an iterator of
batches; ``ref_stats_from_npz`` reads an ADM reference batch (``arr_0`` uint8 [N, H, W, 3]; its
precomputed ``mu``/``sigma`` are used when present). ADM's ``mu``/``sigma`` were computed by the TF
Inception graph with TF1 resizing, i.e. the ``"tf1"`` preprocessing here; its spatial ``mu_s``/``sigma_s``
(sFID) are not computed by this module.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Tuple, Union

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from titok_jax import parallel
from titok_jax.evaluation.metrics import FeatureStats
from titok_jax.models.inception import FID_IMAGE_SIZE, HIGHEST, PREPROCESS, FIDInceptionV3
from titok_jax.models.inception_map import load_inception_params

AxisName = Union[str, Tuple[str, ...]]


class InceptionFeatures:
    """Jitted FID-Inception features of uint8 NHWC batches (see the module docstring).

    ``batch_size`` is the global batch of one jitted call (rounded up to a multiple of the data shards
    and of the process count); ``precision`` is that of the convolutions and the fc matmul
    (``Precision.HIGHEST`` = true float32 on GPUs/TPUs, which FID numbers should use)."""

    def __init__(
        self,
        params,
        preprocess: str = "tf1",
        batch_size: int = 64,
        mesh: Optional[jax.sharding.Mesh] = None,
        data_axis: AxisName = "data",
        image_size: int = FID_IMAGE_SIZE,
        precision=HIGHEST,
    ):
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {sorted(PREPROCESS)}, got {preprocess!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.preprocess = preprocess
        self.image_size = int(image_size)
        self.mesh = mesh
        self.data_axis = data_axis
        self._multihost = mesh is not None and jax.process_count() > 1
        model = FIDInceptionV3(precision=precision)
        pre = PREPROCESS[preprocess]

        def features(p, images):
            out = model.apply({"params": p}, pre(images, self.image_size))
            return out["pool3"], out["logits_unbiased"]

        if mesh is None:
            self.params = jax.device_put(params)
            self._batch_sharding = None
            self._fn = jax.jit(features)
            self.batch_size = int(batch_size)
        else:
            axes = (data_axis,) if isinstance(data_axis, str) else tuple(data_axis)
            unknown = [a for a in axes if a not in mesh.axis_names]
            if unknown:
                raise ValueError(f"data axis {unknown} not in the mesh axes {mesh.axis_names}")
            shards = math.prod(mesh.shape[a] for a in axes)
            # Every process feeds batch_size / process_count rows, a multiple of its data shards.
            unit = shards if not self._multihost else max(shards, jax.process_count())
            self.batch_size = int(math.ceil(batch_size / unit) * unit)
            self._batch_sharding = NamedSharding(mesh, P(data_axis))
            self.params = jax.device_put(params, NamedSharding(mesh, P()))
            self._fn = jax.jit(features, out_shardings=(self._batch_sharding, self._batch_sharding))

    @classmethod
    def from_file(cls, path: str, allow_pickle: bool = False, **kwargs) -> "InceptionFeatures":
        """From pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (``allow_pickle=True``, needs
        torch) or a ``.safetensors`` copy of it; ``kwargs`` go to the constructor."""
        return cls(load_inception_params(path, allow_pickle=allow_pickle), **kwargs)

    # ----------------------------------------------------------------------------------------------

    def __call__(self, images) -> Dict[str, np.ndarray]:
        """uint8 [N, H, W, 3] -> {"pool3": float64 [N, 2048], "logits_unbiased": float64 [N, 1008]}."""
        if isinstance(images, jax.Array):
            return self._run_global(images)
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 images [N, H, W, 3] (NHWC, RGB), got shape {images.shape}")
        if images.dtype != np.uint8:
            raise TypeError(
                f"expected uint8 images, got {images.dtype}; convert [0, 1] floats with "
                "titok_jax.evaluation.metrics.to_uint8 (the official truncation) first"
            )
        return self._run_local(images)

    def _run_global(self, images: jax.Array) -> Dict[str, np.ndarray]:
        pool3, logits = self._fn(self.params, images)
        return {"pool3": _to_host(pool3), "logits_unbiased": _to_host(logits)}

    def _run_local(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        n = images.shape[0]
        local_bs = self.batch_size // jax.process_count() if self._multihost else self.batch_size
        counts = np.asarray(multihost_utils.process_allgather(np.int64(n))).reshape(-1) if self._multihost else [n]
        steps = int(math.ceil(max(counts) / local_bs))
        pool3 = np.zeros((steps * local_bs, 2048), np.float32)
        logits = np.zeros((steps * local_bs, 1008), np.float32)

        def collect(s, p, lg):
            if self._multihost:
                p = multihost_utils.global_array_to_host_local_array(p, self.mesh, P(self.data_axis))
                lg = multihost_utils.global_array_to_host_local_array(lg, self.mesh, P(self.data_axis))
            pool3[s * local_bs : (s + 1) * local_bs] = np.asarray(p)
            logits[s * local_bs : (s + 1) * local_bs] = np.asarray(lg)

        pending = None  # one batch in flight while the next is dispatched (async dispatch, bounded memory)
        for s in range(steps):
            chunk = images[s * local_bs : (s + 1) * local_bs]
            if chunk.shape[0] < local_bs:  # pad (also empty chunks on processes with fewer images)
                pad = np.zeros((local_bs - chunk.shape[0],) + images.shape[1:], np.uint8)
                chunk = np.concatenate([chunk, pad])
            if self._multihost:
                x = multihost_utils.host_local_array_to_global_array(chunk, self.mesh, P(self.data_axis))
            elif self._batch_sharding is not None:
                x = jax.device_put(chunk, self._batch_sharding)
            else:
                x = chunk
            out = (s,) + tuple(self._fn(self.params, x))
            if pending is not None:
                collect(*pending)
            pending = out
        if pending is not None:
            collect(*pending)
        if not self._multihost:
            return {"pool3": pool3[:n].astype(np.float64), "logits_unbiased": logits[:n].astype(np.float64)}
        # [P, steps * local_bs, D] in process order; keep each process's real rows.
        all_pool3 = np.asarray(multihost_utils.process_allgather(pool3))
        all_logits = np.asarray(multihost_utils.process_allgather(logits))
        return {
            "pool3": np.concatenate([all_pool3[i, :c] for i, c in enumerate(counts)]).astype(np.float64),
            "logits_unbiased": np.concatenate([all_logits[i, :c] for i, c in enumerate(counts)]).astype(np.float64),
        }


def _to_host(x: jax.Array) -> np.ndarray:
    if x.is_fully_addressable:
        return np.asarray(x, np.float64)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True), np.float64)


def stats_from_images(
    batches: Iterable, features: InceptionFeatures, return_logits: bool = False
) -> Union[FeatureStats, Tuple[FeatureStats, np.ndarray]]:
    """Accumulate float64 pool3 statistics over an iterator of uint8 [B, H, W, 3] batches (host-local
    numpy or global ``jax.Array``; see ``InceptionFeatures``). With ``return_logits`` also return the
    concatenated ``logits_unbiased`` [N, 1008] for ``metrics.inception_score``. With several processes
    every process must yield the same number of batches (a batch may be empty)."""
    stats = FeatureStats()
    logits: list = []
    for batch in batches:
        out = features(batch)
        if out["pool3"].shape[0] == 0:
            continue
        stats.update(out["pool3"])
        if return_logits:
            logits.append(out["logits_unbiased"])
    if stats.n == 0:
        raise ValueError("no images: the batch iterator was empty")
    if return_logits:
        return stats, np.concatenate(logits)
    return stats


def ref_stats_from_npz(
    path: str, features: Optional[InceptionFeatures] = None, use_precomputed: bool = True
) -> Tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) float64 of an ADM-format reference batch (openai/guided-diffusion
    ``evaluations/evaluator.py``): its ``mu``/``sigma`` when present (and ``use_precomputed``), else
    computed from ``arr_0`` (uint8 [N, H, W, 3]) with ``features`` (each process takes a contiguous
    share of the images; the features are gathered, so every process returns the same statistics)."""
    with np.load(path) as f:
        keys = set(f.keys())
        if use_precomputed and {"mu", "sigma"} <= keys:
            return np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
        if "arr_0" not in keys:
            raise ValueError(
                f"{path} has neither 'mu'/'sigma' nor 'arr_0' images (keys: {sorted(keys)}); "
                "expected an ADM reference batch (np.savez(path, arr_0=uint8 [N, H, W, 3]))"
            )
        if features is None:
            raise ValueError(f"{path} holds images only: pass an InceptionFeatures to compute their statistics")
        images = f["arr_0"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: arr_0 must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    mine = images[parallel.process_share(images.shape[0])]
    bs = features.batch_size
    # Every process makes the same number of calls (the gathers inside are collective).
    steps = parallel.steps_for_share(images.shape[0], bs)
    batches = (mine[i * bs : (i + 1) * bs] for i in range(steps))
    return stats_from_images(batches, features).mean_cov()
