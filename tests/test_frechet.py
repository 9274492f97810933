"""The Rust Fréchet distance against pytorch-fid's and torch-fidelity's formulas.

psgan_fast.metrics.frechet_distance takes tr √(Σ1 Σ2) from the eigenvalues of
the symmetric Lᵀ Σ2 L (Σ1 = L Lᵀ); the oracles are scipy.linalg.sqrtm(Σ1 Σ2)
(pytorch-fid) and numpy.linalg.eigvals(Σ1 Σ2) (torch-fidelity), in float64.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from psgan_fast import _core
from psgan_fast.metrics.fid import (
    feature_statistics,
    frechet_distance,
    frechet_distance_details,
    frechet_distance_ref,
)


def gaussian_pair(d: int, n1: int, n2: int, seed: int, shift: float = 0.3):
    """Statistics of two samples of correlated, differently mixed features."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    b = a + 0.5 * rng.standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((n1, d)) @ a + 1.0
    y = rng.standard_normal((n2, d)) @ b + 1.0 + shift * rng.standard_normal(d)
    return (*feature_statistics(x), *feature_statistics(y))


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("d", [2, 3, 16, 64, 256, 512])
def test_matches_sqrtm_and_eigvals_on_random_psd_pairs(d):
    mu1, s1, mu2, s2 = gaussian_pair(d, 4 * d + 10, 3 * d + 10, seed=d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance_details(mu1, s1, mu2, s2)["method"] == "cholesky-sigma1"
    assert rel(ours, frechet_distance_ref(mu1, s1, mu2, s2, "sqrtm")) <= 1e-6
    assert rel(ours, frechet_distance_ref(mu1, s1, mu2, s2, "eigvals")) <= 1e-6


def test_matches_torch_fidelity_at_inception_width():
    """d = 2048, Inception's pool3 width, against torch-fidelity's own function."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    d = 2048
    rng = np.random.default_rng(1)
    # Build full-rank covariances directly (sampling 2 x 8192 x 2048 would be slow).
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    b = a + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)
    s1 = a @ a.T + 0.05 * np.eye(d)
    s2 = b @ b.T + 0.05 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    theirs = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)[KEY_METRIC_FID]
    assert rel(ours, theirs) <= 1e-6


@pytest.mark.parametrize("d,n1,n2", [(64, 300, 250), (256, 1100, 900), (64, 20, 300), (200, 50, 150)])
def test_faer_eigensolver_agrees_with_the_default_and_the_oracles(d, n1, n2):
    """eigensolver="faer" (the faer crate's self_adjoint_eigenvalues) on
    every factorisation path gives the default's distance."""
    mu1, s1, mu2, s2 = gaussian_pair(d, n1, n2, seed=7 * d + n1)
    default = frechet_distance_details(mu1, s1, mu2, s2)
    faer = frechet_distance_details(mu1, s1, mu2, s2, eigensolver="faer")
    assert (default["eigensolver"], faer["eigensolver"]) == ("two-stage", "faer")
    assert faer["method"] == default["method"]
    assert rel(faer["trace_sqrt"], default["trace_sqrt"]) <= 1e-11
    assert frechet_distance(mu1, s1, mu2, s2, eigensolver="faer") == faer["distance"]
    tol = 1e-6 if default["method"] == "cholesky-sigma1" else 1e-4
    assert rel(faer["distance"], frechet_distance_ref(mu1, s1, mu2, s2, "eigvals")) <= tol


def test_unknown_eigensolver_is_a_clear_error():
    mu1, s1, mu2, s2 = gaussian_pair(4, 40, 40, seed=3)
    with pytest.raises(ValueError, match="eigensolver must be 'two-stage' or 'faer', got \"lapack\""):
        frechet_distance(mu1, s1, mu2, s2, eigensolver="lapack")


@pytest.mark.parametrize("d,n1,n2", [(32, 10, 20), (64, 20, 30), (200, 50, 150)])
def test_rank_deficient_covariances_fewer_samples_than_dimensions(d, n1, n2):
    mu1, s1, mu2, s2 = gaussian_pair(d, n1, n2, seed=d + n1)
    det = frechet_distance_details(mu1, s1, mu2, s2)
    assert det["method"] == "pivoted-cholesky"
    assert det["rank"] == min(n1, n2) - 1
    ref_sqrtm = frechet_distance_ref(mu1, s1, mu2, s2, "sqrtm")
    ref_eig = frechet_distance_ref(mu1, s1, mu2, s2, "eigvals")
    assert rel(det["distance"], ref_sqrtm) <= 1e-4
    assert rel(det["distance"], ref_eig) <= 1e-4


def test_one_singular_covariance_uses_the_other_cholesky():
    mu1, s1, mu2, s2 = gaussian_pair(48, 20, 400, seed=5)
    det = frechet_distance_details(mu1, s1, mu2, s2)
    assert det["method"] == "cholesky-sigma2"
    assert rel(det["distance"], frechet_distance_ref(mu1, s1, mu2, s2, "sqrtm")) <= 1e-4


@pytest.mark.parametrize("n", [10, 500])
def test_distance_of_a_distribution_to_itself_is_zero(n):
    mu, s, _, _ = gaussian_pair(64, n, 10, seed=n)
    tr = np.trace(s)
    assert 0.0 <= frechet_distance(mu, s, mu, s) <= 1e-9 * tr


def test_symmetric_in_its_two_gaussians_and_exact_on_commuting_covariances():
    mu1, s1, mu2, s2 = gaussian_pair(40, 200, 150, seed=9)
    assert rel(frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)) <= 1e-10
    # Σ and c²Σ commute: FID = (1 - c)² tr Σ exactly.
    for c in (0.5, 3.0):
        assert rel(frechet_distance(mu1, s1, mu1, c * c * s1), (1 - c) ** 2 * np.trace(s1)) <= 1e-10


def test_parts_add_up():
    mu1, s1, mu2, s2 = gaussian_pair(30, 100, 100, seed=3)
    det = frechet_distance_details(mu1, s1, mu2, s2)
    assert det["mean_term"] == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), rel=1e-12)
    total = det["mean_term"] + np.trace(s1) + np.trace(s2) - 2 * det["trace_sqrt"]
    assert det["distance"] == pytest.approx(total, rel=1e-12)


def test_float32_inputs_are_accepted():
    mu1, s1, mu2, s2 = gaussian_pair(20, 100, 100, seed=4)
    f32 = [x.astype(np.float32) for x in (mu1, s1, mu2, s2)]
    want = frechet_distance_ref(*[x.astype(np.float64) for x in f32], "sqrtm")
    assert rel(_core.frechet_distance(*f32), want) <= 1e-6


def test_non_contiguous_inputs_are_read_correctly():
    mu1, s1, mu2, s2 = gaussian_pair(12, 60, 60, seed=6)
    big = np.zeros((24, 24))
    big[::2, ::2] = s1
    view = big[::2, ::2]
    assert not view.flags.c_contiguous
    assert frechet_distance(mu1, view, mu2, s2) == frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, np.asfortranarray(s1), mu2, s2) == frechet_distance(mu1, s1, mu2, s2)


class TestValidation:
    mu = np.zeros(3)
    eye = np.eye(3)

    def err(self, *args) -> str:
        with pytest.raises(ValueError) as e:
            frechet_distance(*args)
        return str(e.value)

    def test_shapes(self):
        assert "mu2 has shape [2]" in self.err(self.mu, self.eye, np.zeros(2), self.eye)
        assert "sigma1 has shape [3, 2]" in self.err(self.mu, np.ones((3, 2)), self.mu, self.eye)
        assert "sigma2 has shape [4, 4], expected (3, 3)" in self.err(self.mu, self.eye, self.mu, np.eye(4))
        assert "sigma1 must be 2-d" in self.err(self.mu, np.ones(9), self.mu, self.eye)
        assert "mu1 must be 1-d" in self.err(np.zeros((3, 1)), self.eye, self.mu, self.eye)

    def test_non_finite(self):
        bad = self.eye.copy()
        bad[1, 2] = np.nan
        assert "sigma2 has a non-finite value NaN at [1, 2]" in self.err(self.mu, self.eye, self.mu, bad)
        assert "mu1 has a non-finite value inf at index 0" in self.err(
            np.array([np.inf, 0, 0]), self.eye, self.mu, self.eye)

    def test_asymmetric(self):
        bad = self.eye.copy()
        bad[0, 1] = 0.5
        msg = self.err(self.mu, bad, self.mu, self.eye)
        assert "sigma1 is not symmetric" in msg and "sigma1[1, 0] - sigma1[0, 1]" in msg
        # Asymmetry at float32 rounding level is tolerated.
        ok = self.eye.copy()
        ok[0, 1] = 1e-8
        frechet_distance(self.mu, ok, self.mu, self.eye)

    def test_not_a_covariance(self):
        neg = np.diag([1.0, -1.0, 1.0])
        assert "negative variance sigma2[1, 1]" in self.err(self.mu, self.eye, self.mu, neg)
        indefinite = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        assert "sigma2 is not positive semidefinite" in self.err(self.mu, self.eye, self.mu, indefinite)
        assert "not positive semidefinite" in self.err(self.mu, indefinite, self.mu, indefinite)

    def test_wrong_types(self):
        with pytest.raises(TypeError, match="mu1 must be a 1-d numpy array of float32 or float64"):
            _core.frechet_distance(np.zeros(3, dtype=np.int64), self.eye, self.mu, self.eye)
        with pytest.raises(TypeError, match="real-valued"):
            frechet_distance(np.array(["a", "b", "c"]), self.eye, self.mu, self.eye)


def test_releases_the_gil():
    """The main thread keeps running Python while another thread is inside
    frechet_distance: no pause as long as the call (which holding the GIL
    for the whole computation would cause)."""
    d = 1024
    rng = np.random.default_rng(0)
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    s = a @ a.T + np.eye(d)
    mu = np.zeros(d)
    span = {}

    def work():
        t0 = time.perf_counter()
        frechet_distance(mu, s, mu, 2 * s)
        span["t"] = (t0, time.perf_counter())

    worker = threading.Thread(target=work)
    last = time.perf_counter()
    ticks = []
    worker.start()
    while worker.is_alive():
        now = time.perf_counter()
        ticks.append((last, now))
        last = now
    worker.join()
    t0, t1 = span["t"]
    inside = [b - a for a, b in ticks if a >= t0 and b <= t1]
    assert t1 - t0 > 0.02
    assert inside, "the main thread never ran during the call"
    assert max(inside) < 0.5 * (t1 - t0), (max(inside), t1 - t0)
