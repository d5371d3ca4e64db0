"""Evaluation metrics in float64 numpy/scipy: FID statistics and distance, Inception Score, PSNR, SSIM,
codebook usage.

Conventions follow the 1d-tokenizer evaluator (``evaluator/evaluator.py``; official_titok.md section 9):

* FID: running float64 sums of features and of their outer products; mu = sum / n,
  sigma = (outer - sum sum^T / n) / (n - 1); FID = |mu1 - mu2|^2 + tr s1 + tr s2 - 2 tr sqrtm(s1 s2).
* IS: softmax of the 1008 ``logits_unbiased``; exp(mean_x KL(p(y|x) || p(y))) with logs of (p + 1e-16).
* Codebook: usage = #distinct ids / K; entropy = -sum p log2(p + 1e-8) over the id frequencies (bits).
* Images enter the Inception network as uint8 made by truncation: floor(clip(x, 0, 1) * 255)
  (``titok_jax.images.to_uint8``; the official ``(x * 255).to(torch.uint8)`` on clamped images).

Statistics files use the ADM evaluation suite's keys (openai/guided-diffusion ``evaluations/evaluator.py``
reference batches): ``mu`` [D] and ``sigma`` [D, D]; ``FeatureStats.save`` adds ``n`` so the sums can be
rebuilt and merged later.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
from scipy import linalg

IS_EPS = 1e-16
FID_EPS = 1e-6
ENTROPY_EPS = 1e-8


# --------------------------------------------------------------------------------------------------
# Fréchet Inception Distance
# --------------------------------------------------------------------------------------------------


class FeatureStats:
    """Running float64 sum of features [D] and of outer products [D, D] (the official accumulation).

    ``update(feats)`` adds a batch [N, D]; ``merge(other)`` adds another accumulator (e.g. another
    host's or another shard's) in place and returns ``self``; ``mean_cov()`` gives (mu, sigma) with
    the (n - 1) normalisation."""

    def __init__(self, dim: Optional[int] = None):
        self.dim = dim
        self.n = 0
        self.feature_sum: Optional[np.ndarray] = None if dim is None else np.zeros(dim, np.float64)
        self.outer_sum: Optional[np.ndarray] = None if dim is None else np.zeros((dim, dim), np.float64)

    def _init(self, dim: int) -> None:
        if self.dim is None:
            self.dim = dim
            self.feature_sum = np.zeros(dim, np.float64)
            self.outer_sum = np.zeros((dim, dim), np.float64)
        elif dim != self.dim:
            raise ValueError(f"feature dimension {dim} does not match the accumulator's {self.dim}")

    def update(self, feats) -> "FeatureStats":
        f = np.asarray(feats, np.float64)
        if f.ndim != 2:
            raise ValueError(f"expected features [N, D], got shape {f.shape}")
        if not np.all(np.isfinite(f)):
            raise ValueError("features contain NaN or Inf; check the images and the Inception weights")
        self._init(f.shape[1])
        self.n += f.shape[0]
        self.feature_sum += f.sum(axis=0)
        self.outer_sum += f.T @ f
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        if other.n == 0:
            return self
        self._init(other.dim)
        self.n += other.n
        self.feature_sum += other.feature_sum
        self.outer_sum += other.outer_sum
        return self

    def mean_cov(self) -> Tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, have {self.n}")
        mu = self.feature_sum / self.n
        sigma = (self.outer_sum - np.outer(self.feature_sum, self.feature_sum) / self.n) / (self.n - 1)
        return mu, sigma

    def save(self, path: str) -> None:
        """Write ``mu``, ``sigma`` (ADM keys) and ``n`` to ``path`` (.npz), atomically."""
        mu, sigma = self.mean_cov()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}.npz"
        np.savez(tmp, mu=mu, sigma=sigma, n=np.int64(self.n))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "FeatureStats":
        """Rebuild an accumulator from a file written by ``save`` (needs ``n``; for ADM reference
        batches, which lack it, use ``load_mu_sigma``)."""
        with np.load(path) as f:
            if "n" not in f or "mu" not in f or "sigma" not in f:
                raise ValueError(
                    f"{path} has keys {sorted(f.keys())}; FeatureStats.load needs mu, sigma and n "
                    "(written by FeatureStats.save); use load_mu_sigma for statistics-only files"
                )
            mu, sigma, n = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64), int(f["n"])
        stats = cls(mu.shape[0])
        stats.n = n
        stats.feature_sum = mu * n
        stats.outer_sum = sigma * (n - 1) + np.outer(stats.feature_sum, stats.feature_sum) / n
        return stats


def load_mu_sigma(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) float64 from an .npz with ADM's ``mu``/``sigma`` keys."""
    with np.load(path) as f:
        if "mu" not in f or "sigma" not in f:
            raise ValueError(f"{path} has no 'mu'/'sigma' statistics (keys: {sorted(f.keys())})")
        return np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    # The official call is sqrtm(..., disp=False); ``disp`` only chose whether an error estimate is
    # returned and is deprecated since SciPy 1.16, so the plain call gives the same matrix.
    out = linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = FID_EPS, nonfinite_fallback: str = "offset") -> float:
    """FID between N(mu1, sigma1) and N(mu2, sigma2), float64.

    sqrtm(sigma1 @ sigma2) may come back complex from round-off: its real part is used when every
    imaginary diagonal entry is below 1e-3, otherwise ``ValueError``. If it is not finite (a singular
    product), ``nonfinite_fallback="offset"`` (pytorch-fid) retries with eps*I added to both
    covariances; ``"diagonal"`` reproduces the 1d-tokenizer evaluator, which replaces the trace term
    by sum(sqrt(diag(sigma1) * diag(sigma2)))."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != mu2.shape or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"inconsistent statistics: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {s1.shape}, sigma2 {s2.shape}; "
            "both sides must come from the same feature (e.g. 2048-d pool3)"
        )
    if nonfinite_fallback not in ("offset", "diagonal"):
        raise ValueError(f"nonfinite_fallback must be 'offset' or 'diagonal', got {nonfinite_fallback!r}")

    def real_part(m):
        if np.iscomplexobj(m):
            if not np.allclose(np.diagonal(m).imag, 0, atol=1e-3):
                raise ValueError(f"sqrtm(sigma1 sigma2) has an imaginary component {np.max(np.abs(m.imag)):.3g}")
            m = m.real
        return m

    covmean = real_part(_sqrtm(s1 @ s2))
    if np.all(np.isfinite(covmean)):
        tr_covmean = float(np.trace(covmean))
    elif nonfinite_fallback == "offset":
        offset = np.eye(d) * eps
        tr_covmean = float(np.trace(real_part(_sqrtm((s1 + offset) @ (s2 + offset)))))
    else:
        tr_covmean = float(np.sum(np.sqrt(np.diag(s1) * np.diag(s2))))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


# --------------------------------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------------------------------


def inception_score(logits, splits: int = 1, return_std: bool = False):
    """IS = exp(mean_x KL(p(y|x) || p(y))), p = softmax(logits) (the 1008 ``logits_unbiased``), float64,
    logs taken of (p + 1e-16) as the official evaluator. ``splits > 1`` scores contiguous chunks and
    returns their mean (and standard deviation with ``return_std``); the official uses one split."""
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or z.shape[0] < 1:
        raise ValueError(f"expected logits [N, C] with N >= 1, got shape {z.shape}")
    if not 1 <= splits <= z.shape[0]:
        raise ValueError(f"splits must be in [1, N={z.shape[0]}], got {splits}")
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    scores = []
    for chunk in np.array_split(p, splits):
        p_y = chunk.mean(axis=0)
        kl = np.sum(chunk * (np.log(chunk + IS_EPS) - np.log(p_y + IS_EPS)), axis=1)
        scores.append(np.exp(kl.mean()))
    mean = float(np.mean(scores))
    return (mean, float(np.std(scores))) if return_std else mean


# --------------------------------------------------------------------------------------------------
# Pixel metrics
# --------------------------------------------------------------------------------------------------


def _pair(a, b) -> Tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two image batches [N, H, W, C] of equal shape, got {a.shape} and {b.shape}")
    return a, b


def psnr(a, b, max_val: float = 1.0) -> np.ndarray:
    """Per-image PSNR in dB of [N, H, W, C] batches: 10 log10(max_val^2 / MSE); +inf for identical images."""
    a, b = _pair(a, b)
    mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(max_val**2 / mse)


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-(r**2) / (2 * sigma**2))
    return w / w.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation over axes 1 and 2 of [N, H, W, C]."""
    k = w.shape[0]
    h, wd = x.shape[1] - k + 1, x.shape[2] - k + 1
    y = sum(w[i] * x[:, i : i + h] for i in range(k))
    return sum(w[j] * y[:, :, j : j + wd] for j in range(k))


def ssim(a, b, max_val: float = 1.0) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004) of [N, H, W, C] batches, float64.

    Convention: 11x11 Gaussian window (sigma 1.5, normalised), K1 = 0.01, K2 = 0.03, L = ``max_val``;
    local means/variances/covariance are Gaussian-weighted population moments, evaluated only where
    the window fits inside the image ("valid"); the SSIM map is averaged over those positions, then
    over channels (RGB SSIM = mean of the per-channel SSIMs). This equals
    ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=max_val, channel_axis=-1)``. Images need H, W >= 11."""
    a, b = _pair(a, b)
    if min(a.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {a.shape[1:3]}")
    w = gaussian_window()
    c1, c2 = (SSIM_K1 * max_val) ** 2, (SSIM_K2 * max_val) ** 2
    out = []
    for i in range(0, a.shape[0], 8):  # chunks keep the float64 temporaries small
        x, y = a[i : i + 8], b[i : i + 8]
        mu_x, mu_y = _filter_valid(x, w), _filter_valid(y, w)
        var_x = _filter_valid(x * x, w) - mu_x**2
        var_y = _filter_valid(y * y, w) - mu_y**2
        cov = _filter_valid(x * y, w) - mu_x * mu_y
        s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        out.append(s.mean(axis=(1, 2)).mean(axis=-1))
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------------
# Codebook and image conversion
# --------------------------------------------------------------------------------------------------


def codebook_usage(ids, codebook_size: int) -> Tuple[float, float]:
    """(usage, entropy_bits) of token ids: #distinct ids / K, and -sum p log2(p + 1e-8) over the
    frequencies of all K entries (unused ones contribute 0)."""
    ids = np.asarray(ids).reshape(-1)
    if ids.size == 0:
        raise ValueError("no token ids given")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"token ids must be integers, got {ids.dtype}")
    if ids.min() < 0 or ids.max() >= codebook_size:
        raise ValueError(f"token ids must lie in [0, {codebook_size}), got [{ids.min()}, {ids.max()}]")
    counts = np.bincount(ids, minlength=codebook_size).astype(np.float64)
    p = counts / counts.sum()
    return float(np.count_nonzero(counts) / codebook_size), float(-np.sum(p * np.log2(p + ENTROPY_EPS)))


def class_match(samples, labels, references) -> Dict[str, Any]:
    """Do class-conditional samples look like their class's image? ``samples`` [N, H, W, 3] and
    ``references`` [C, H, W, 3] (one image per class, same scale), ``labels`` int [N] in [0, C).

    Each sample's nearest reference is the one with the lowest pixel MSE (a reference's mirror image
    counts as the reference). Returns ``{'classes': [{'class', 'samples', 'own_nearest', 'nearest'}...],
    'matched': #classes whose samples are, by majority, nearest to their own reference}``;
    ``nearest`` is the reference most of the class's samples are nearest to."""
    x = np.asarray(samples, np.float64)
    refs = np.asarray(references, np.float64)
    labels = np.asarray(labels).reshape(-1)
    if x.ndim != 4 or refs.ndim != 4 or x.shape[1:] != refs.shape[1:] or len(labels) != len(x):
        raise ValueError(f"samples {x.shape}, labels {labels.shape} and references {refs.shape} do not match")
    if labels.size and (labels.min() < 0 or labels.max() >= len(refs)):
        raise ValueError(f"labels must lie in [0, {len(refs)})")
    both = np.stack([refs, refs[:, :, ::-1]], axis=1)  # [C, 2, H, W, 3]
    mse = np.mean(np.square(x[:, None, None] - both[None]), axis=(3, 4, 5)).min(axis=2)  # [N, C]
    nearest = np.argmin(mse, axis=1)
    rows = []
    for c in sorted(set(labels.tolist())):
        near = nearest[labels == c]
        rows.append({"class": int(c), "samples": int(len(near)), "own_nearest": int(np.sum(near == c)),
                     "nearest": int(np.bincount(near).argmax())})  # fmt: skip
    return {"classes": rows, "matched": int(sum(2 * r["own_nearest"] > r["samples"] for r in rows))}
