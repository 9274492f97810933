"""FeatureStats: the streaming float64 mean / covariance accumulator in Rust."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psgan_fast.metrics.fid import FeatureStats, feature_statistics


def reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float64)
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_numpy_mean_and_unbiased_cov(dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 37)) @ rng.standard_normal((37, 37))).astype(dtype)
    fs = FeatureStats(37)
    for part in np.array_split(x, 7):
        fs.update(part)
    mu, cov = reference(x)
    assert fs.count == 3000 and fs.dim == 37
    np.testing.assert_allclose(fs.mean(), mu, rtol=0, atol=1e-12 * np.abs(mu).max())
    np.testing.assert_allclose(fs.cov(), cov, rtol=0, atol=1e-12 * np.abs(cov).max())
    assert fs.mean().dtype == np.float64 and fs.cov().shape == (37, 37)
    assert np.array_equal(fs.cov(), fs.cov().T)


def test_large_offset_does_not_cancel():
    """Features with mean 1e6 and spread 1e-2: raw second moments (Σxxᵀ/n −
    μμᵀ) would lose every digit; the pairwise update keeps them."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal((20000, 4)) * 1e-2
    x = z + 1e6
    fs = FeatureStats(4)
    for part in np.array_split(x, 13):
        fs.update(part)
    want = np.cov(z, rowvar=False)  # the same spread, computed without the offset
    np.testing.assert_allclose(fs.cov(), want, rtol=1e-6, atol=1e-12)


def test_merge_equals_one_stream_and_gives_the_union():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((500, 8)) + 3
    b = rng.standard_normal((300, 8)) * 2 - 1
    fa, fb, fall = FeatureStats(8), FeatureStats(8), FeatureStats(8)
    fa.update(a)
    fb.update(b)
    fall.update(np.concatenate([a, b]))
    fa.merge(fb)
    assert fa.count == 800
    np.testing.assert_allclose(fa.mean(), fall.mean(), atol=1e-13)
    np.testing.assert_allclose(fa.cov(), fall.cov(), atol=1e-12)
    with pytest.raises(ValueError, match="dim 9 into statistics of dim 8"):
        fa.merge(FeatureStats(9))


def test_non_contiguous_and_fortran_batches():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 10))
    fs1, fs2 = FeatureStats(5), FeatureStats(5)
    fs1.update(x[:, ::2])
    fs2.update(np.ascontiguousarray(x[:, ::2]))
    assert np.array_equal(fs1.cov(), fs2.cov())
    fs3 = FeatureStats(5)
    fs3.update(np.asfortranarray(x[:, ::2]))
    assert np.array_equal(fs3.cov(), fs2.cov())


def test_errors_say_what_is_wrong():
    fs = FeatureStats(3)
    with pytest.raises(ValueError, match=r"batch has shape \[4, 2\]: expected \(n, 3\)"):
        fs.update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="batch must be 2-d"):
        fs.update(np.zeros(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        fs.update(np.zeros((2, 3), dtype=np.int32))
    with pytest.raises(TypeError, match="float32 or float64"):
        fs.update([[1.0, 2.0, 3.0]])
    bad = np.zeros((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite value NaN at row 2, column 1"):
        fs.update(bad)
    assert fs.count == 0, "a rejected batch changes nothing"
    with pytest.raises(ValueError, match="at least 1"):
        fs.mean()
    fs.update(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        fs.cov()
    fs.update(np.zeros((0, 3)))
    assert fs.count == 1
    with pytest.raises(ValueError, match="dim must be at least 1"):
        FeatureStats(0)
    assert repr(fs) == "FeatureStats(dim=3, count=1)"


def test_feature_statistics_helper():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1000, 6)).astype(np.float32)
    mu, cov = feature_statistics(x, batch_size=64)
    want_mu, want_cov = reference(x)
    np.testing.assert_allclose(mu, want_mu, atol=1e-12)
    np.testing.assert_allclose(cov, want_cov, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), d=st.integers(1, 6), cuts=st.lists(st.integers(0, 60), max_size=5),
       seed=st.integers(0, 2**32 - 1))
def test_any_batching_gives_the_same_statistics(n, d, cuts, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)) * 10 + 5
    bounds = sorted({0, n, *[c % (n + 1) for c in cuts]})
    fs = FeatureStats(d)
    for lo, hi in zip(bounds, bounds[1:]):
        fs.update(x[lo:hi])
    mu, cov = reference(x)
    np.testing.assert_allclose(fs.mean(), mu, atol=1e-11)
    np.testing.assert_allclose(fs.cov(), np.atleast_2d(cov), atol=1e-10)


def test_releases_the_gil_without_losing_updates():
    """Two threads updating two accumulators concurrently get the right answer."""
    import threading

    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((4000, 64)) for _ in range(2)]
    out = [FeatureStats(64), FeatureStats(64)]

    def run(k):
        for part in np.array_split(xs[k], 8):
            out[k].update(part)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        np.testing.assert_allclose(out[k].cov(), np.cov(xs[k], rowvar=False), atol=1e-12)
