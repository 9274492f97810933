"""Fréchet distance and feature statistics: the Rust core and its references.

``frechet_distance`` runs in Rust (``psgan_fast._core``): Cholesky Σ1 = L Lᵀ,
then tr √(Σ1 Σ2) = Σ √λᵢ over the eigenvalues of the symmetric Lᵀ Σ2 L
(docs/DESIGN.md §4), with the GIL released. When Σ1 is singular (fewer samples
than dimensions) it uses the Cholesky of Σ2, and when both are singular a
rank-revealing pivoted Cholesky; ``frechet_distance_details`` says which.

``frechet_distance_ref`` is the plain numpy/scipy oracle the tests compare
against: pytorch-fid's ``scipy.linalg.sqrtm(Σ1 Σ2)`` or torch-fidelity's
``numpy.linalg.eigvals(Σ1 Σ2)``.
"""

from __future__ import annotations

from typing import Union

import numpy as np

from psgan_fast import _core

FeatureStats = _core.FeatureStats

__all__ = [
    "FeatureStats",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_details",
    "frechet_distance_ref",
]

ArrayLike = Union[np.ndarray, "list[float]"]


def _as_f64(x, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise TypeError(f"{name} must be a real-valued array, got dtype {a.dtype}")
        a = a.astype(np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-d, got shape {a.shape}")
    return a


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, *,
                     eigensolver: str = "two-stage") -> float:
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2) (Rust core; float32/float64 inputs).

    eigensolver: "two-stage" (default; the Rust core's two-stage
    tridiagonalisation + implicit QL, LAPACK dsytrd_2stage's scheme) or
    "faer" (the faer crate's own ``self_adjoint_eigenvalues``; same result to
    ~1e-12 relative; at d = 2048 2.9-3.6 s against the default's 2.0 s on one
    AVX2 EPYC core, see bench/test_bench_frechet.py).

    Raises ValueError naming the argument at fault: mismatched shapes,
    non-finite values, an asymmetric or non-positive-semidefinite covariance,
    an unknown eigensolver.
    """
    return _core.frechet_distance(_as_f64(mu1, "mu1", 1), _as_f64(sigma1, "sigma1", 2),
                                  _as_f64(mu2, "mu2", 1), _as_f64(sigma2, "sigma2", 2), eigensolver)


def frechet_distance_details(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, *,
                             eigensolver: str = "two-stage") -> dict:
    """The same, as {"distance", "mean_term", "trace_sqrt", "method", "rank", "eigensolver"}."""
    return _core.frechet_distance_details(_as_f64(mu1, "mu1", 1), _as_f64(sigma1, "sigma1", 2),
                                          _as_f64(mu2, "mu2", 1), _as_f64(sigma2, "sigma2", 2), eigensolver)


def frechet_distance_ref(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike,
                         method: str = "sqrtm") -> float:
    """Reference Fréchet distance in numpy/scipy, float64.

    method="sqrtm": pytorch-fid's formula, tr of ``scipy.linalg.sqrtm(Σ1 Σ2)``
    (real part). method="eigvals": torch-fidelity's formula, Σ √ of
    ``numpy.linalg.eigvals(Σ1 Σ2)`` taken as complex numbers (real part).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    prod = s1 @ s2
    if method == "sqrtm":
        import scipy.linalg

        tr_sqrt = float(np.trace(scipy.linalg.sqrtm(prod)).real)
    elif method == "eigvals":
        tr_sqrt = float(np.sqrt(np.linalg.eigvals(prod).astype(np.complex128)).real.sum())
    else:
        raise ValueError(f"method must be 'sqrtm' or 'eigvals', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def feature_statistics(features: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(mean, unbiased covariance) of features [n, d], accumulated in float64 in Rust."""
    f = np.asarray(features)
    if f.ndim != 2:
        raise ValueError(f"features must be 2-d [n, d], got shape {f.shape}")
    stats = FeatureStats(f.shape[1])
    for s in range(0, len(f), batch_size):
        stats.update(f[s:s + batch_size])
    return stats.mean(), stats.cov()
