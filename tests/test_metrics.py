"""Evaluation metrics (titok_jax.evaluation.metrics) against closed forms and independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from titok_jax.evaluation import metrics as M
from titok_jax.images import to_uint8


def _spd(rng, d, scale=1.0):
    a = rng.standard_normal((d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


# --------------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------------


def test_frechet_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(16), _spd(rng, 16)
    assert abs(M.frechet_distance(mu, s, mu, s)) < 1e-9


def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, 32), rng.uniform(0.1, 3.0, 32)
    mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
    want = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    np.testing.assert_allclose(M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), want, rtol=1e-10)


def test_frechet_random_spd_vs_direct_formula():
    rng = np.random.default_rng(2)
    d = 24
    mu1, mu2, s1, s2 = rng.standard_normal(d), rng.standard_normal(d), _spd(rng, d), _spd(rng, d, 2.0)
    # Independent route: tr sqrtm(s1 s2) = tr sqrtm(R s2 R) with R = sqrtm(s1) symmetric PSD, via eigh.
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(w)) @ v.T
    tr = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)))
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    got = M.frechet_distance(mu1, s1, mu2, s2)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert got > 1.0
    # Direct scipy evaluation of the trace term.
    np.testing.assert_allclose(np.trace(linalg.sqrtm(s1 @ s2)).real, tr, rtol=1e-10)


def test_frechet_singular_product_and_fallbacks(monkeypatch):
    # Rank-deficient covariances (fewer samples than dims) still give a finite, non-negative value.
    rng = np.random.default_rng(3)
    f1, f2 = rng.standard_normal((5, 12)), rng.standard_normal((5, 12)) + 1.0
    v = M.frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert np.isfinite(v) and v > 0
    # Non-finite sqrtm: "offset" retries with eps*I, "diagonal" (1d-tokenizer) uses sum sqrt(diag*diag).
    a, b = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    want = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    real_sqrtm, calls = M._sqrtm, []

    def flaky_sqrtm(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(M, "_sqrtm", flaky_sqrtm)
    got = M.frechet_distance(np.zeros(6), np.diag(a), np.zeros(6), np.diag(b), nonfinite_fallback="diagonal")
    np.testing.assert_allclose(got, want, rtol=1e-12)
    calls.clear()
    got = M.frechet_distance(np.zeros(6), np.diag(a), np.zeros(6), np.diag(b), nonfinite_fallback="offset")
    np.testing.assert_allclose(got, np.sum(a + b) - 2 * np.sum(np.sqrt((a + 1e-6) * (b + 1e-6))), rtol=1e-10)
    np.testing.assert_allclose(calls[1], np.diag((a + 1e-6) * (b + 1e-6)), rtol=1e-12)
    with pytest.raises(ValueError, match="inconsistent statistics"):
        M.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --------------------------------------------------------------------------------------------------
# FeatureStats
# --------------------------------------------------------------------------------------------------


def test_feature_stats_matches_np_cov_and_merges(tmp_path):
    rng = np.random.default_rng(4)
    feats = rng.standard_normal((103, 20)) * rng.uniform(0.5, 2, 20) + rng.standard_normal(20)
    whole = M.FeatureStats().update(feats)
    mu, sigma = whole.mean_cov()
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False, ddof=1), rtol=1e-10, atol=1e-12)
    a = M.FeatureStats(20).update(feats[:40])
    b = M.FeatureStats().update(feats[40:70]).update(feats[70:])
    merged_mu, merged_sigma = a.merge(b).mean_cov()
    np.testing.assert_allclose(merged_mu, mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged_sigma, sigma, rtol=1e-10, atol=1e-12)
    assert a.n == 103
    # Save (ADM keys) / load round trip, and load_mu_sigma on the same file.
    path = str(tmp_path / "stats.npz")
    whole.save(path)
    with np.load(path) as f:
        assert {"mu", "sigma", "n"} <= set(f.keys())
    back = M.FeatureStats.load(path)
    np.testing.assert_allclose(back.mean_cov()[1], sigma, rtol=1e-10, atol=1e-12)
    extra = rng.standard_normal((7, 20))
    np.testing.assert_allclose(
        back.update(extra).mean_cov()[1], np.cov(np.concatenate([feats, extra]), rowvar=False), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_array_equal(M.load_mu_sigma(path)[0], mu)
    np.savez(tmp_path / "adm.npz", mu=mu, sigma=sigma)
    with pytest.raises(ValueError, match="load_mu_sigma"):
        M.FeatureStats.load(str(tmp_path / "adm.npz"))
    with pytest.raises(ValueError, match="dimension"):
        whole.update(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="at least 2"):
        M.FeatureStats().update(feats[:1]).mean_cov()


def test_fid_of_two_samples_from_one_gaussian_is_small():
    rng = np.random.default_rng(5)
    s1 = M.FeatureStats().update(rng.standard_normal((4000, 8)))
    s2 = M.FeatureStats().update(rng.standard_normal((4000, 8)))
    s3 = M.FeatureStats().update(rng.standard_normal((4000, 8)) + 0.5)
    near, far = M.frechet_distance(*s1.mean_cov(), *s2.mean_cov()), M.frechet_distance(*s1.mean_cov(), *s3.mean_cov())
    assert 0 <= near < 0.05 and abs(far - 8 * 0.25) < 0.2


# --------------------------------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------------------------------


def test_inception_score_closed_forms():
    assert abs(M.inception_score(np.zeros((10, 1008))) - 1.0) < 1e-12  # uniform predictions
    n = 17
    one_hot = np.full((n, 1008), -1e4)
    one_hot[np.arange(n), np.arange(n) * 3] = 0.0  # confident, distinct classes
    np.testing.assert_allclose(M.inception_score(one_hot), n, rtol=1e-9)
    same = np.full((n, 1008), -1e4)
    same[:, 5] = 0.0  # confident, all the same class
    np.testing.assert_allclose(M.inception_score(same), 1.0, rtol=1e-9)
    mean, std = M.inception_score(np.concatenate([one_hot[:8], one_hot[8:16]]), splits=2, return_std=True)
    assert abs(mean - 8) < 1e-9 and std < 1e-9


def test_inception_score_matches_the_official_running_form():
    """The official evaluator accumulates sum_x p log(p+eps) and sum_x p, then subtracts; same value."""
    rng = np.random.default_rng(6)
    logits = 3 * rng.standard_normal((50, 1008))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    total_kl = np.sum(p * np.log(p + 1e-16), 0)
    prob_total = p.sum(0)
    avg_kl = np.sum(total_kl - prob_total * np.log(prob_total / 50 + 1e-16)) / 50
    np.testing.assert_allclose(M.inception_score(logits), np.exp(avg_kl), rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# PSNR / SSIM
# --------------------------------------------------------------------------------------------------


def test_psnr_closed_form():
    a = np.full((2, 8, 8, 3), 0.5)
    b = a.copy()
    b[0] += 0.1  # MSE 0.01 -> 20 dB
    b[1] += 0.01  # MSE 1e-4 -> 40 dB
    np.testing.assert_allclose(M.psnr(a, b), [20.0, 40.0], rtol=1e-10)
    np.testing.assert_allclose(M.psnr(a * 255, b * 255, max_val=255.0), [20.0, 40.0], rtol=1e-10)
    assert np.isinf(M.psnr(a, a)).all()
    with pytest.raises(ValueError, match="equal shape"):
        M.psnr(a, a[:, :4])


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(7)
    a = rng.uniform(size=(3, 32, 40, 3))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    b[2] = np.clip(0.5 * a[2] + 0.3, 0, 1)  # contrast/luminance change
    ours = M.ssim(a, b)
    ref = [
        structural_similarity(
            a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
        )
        for i in range(3)
    ]
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    assert 0 < ours.min() < 0.95
    np.testing.assert_allclose(M.ssim(a, a), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim(a[:, :8], b[:, :8])


def test_device_psnr_ssim_agree_with_the_float64_oracle():
    """evaluation.pixel (float32 jnp, inside jit) vs metrics (float64 NumPy) on uint8 images."""
    import jax

    from titok_jax.evaluation import pixel

    rng = np.random.default_rng(3)
    smooth = np.cumsum(rng.uniform(-8, 8, (4, 48, 56, 3)), axis=1) % 256  # structure, not only noise
    a = smooth.astype(np.uint8)
    b = np.clip(a + rng.normal(0, [[[[2.0]]], [[[10.0]]], [[[40.0]]], [[[0.0]]]], a.shape), 0, 255).astype(np.uint8)
    b[3] = a[3]  # identical images: PSNR +inf, SSIM 1
    p, s = jax.jit(lambda x, y: (pixel.psnr_u8(x, y), pixel.ssim_u8(x, y)))(a, b)
    ref_p, ref_s = M.psnr(a / 255.0, b / 255.0), M.ssim(a / 255.0, b / 255.0)
    np.testing.assert_allclose(np.asarray(p)[:3], ref_p[:3], atol=1e-4)
    assert np.isinf(np.asarray(p)[3]) and np.isinf(ref_p[3])
    np.testing.assert_allclose(np.asarray(s), ref_s, atol=2e-6)
    assert ref_s.min() < 0.97 and ref_p[:3].min() < 25  # the noisiest pair is far from identical


# --------------------------------------------------------------------------------------------------
# Codebook usage and uint8 truncation
# --------------------------------------------------------------------------------------------------


def test_codebook_usage():
    usage, entropy = M.codebook_usage(np.arange(16).reshape(2, 8), 64)
    assert usage == 16 / 64
    np.testing.assert_allclose(entropy, -np.log2(1 / 16 + 1e-8), rtol=1e-12)  # ~4 bits, official eps
    usage, entropy = M.codebook_usage(np.array([3, 3, 3, 3]), 8)
    assert usage == 1 / 8 and abs(entropy - (-np.log2(1 + 1e-8))) < 1e-12
    ids = np.random.default_rng(8).integers(0, 100, 5000)
    p = np.bincount(ids, minlength=128) / ids.size
    np.testing.assert_allclose(M.codebook_usage(ids, 128)[1], -np.sum(p * np.log2(p + 1e-8)), rtol=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        M.codebook_usage(np.array([0, 8]), 8)


def test_to_uint8_truncates():
    x = np.array([-0.5, 0.0, 0.5, 0.99999, 1.0, 2.0, 1 / 255, 0.00392], np.float32)
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 127, 254, 255, 255, 1, 0])
    assert to_uint8(x).dtype == np.uint8
    # float32 arithmetic as torch's (x * 255).to(uint8): k/255 in float32 maps back to k for every k.
    k = np.arange(256)
    np.testing.assert_array_equal(to_uint8(k.astype(np.float32) / np.float32(255)), k)
    with pytest.raises(TypeError, match="float"):
        to_uint8(np.zeros(3, np.uint8))
