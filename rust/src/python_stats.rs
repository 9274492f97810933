//! PyO3 binding of `crate::stats`: `FeatureStats` and `frechet_distance`.
//!
//! Arrays are copied out of numpy while the GIL is held (so no other Python
//! thread can change them under us), then the work runs with the GIL
//! released. Every `StatsError` becomes a `ValueError` carrying its message.

use crate::stats::{self, StatsError};
use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

fn value_err(e: StatsError) -> PyErr {
    PyValueError::new_err(e.0)
}

/// A 2-d float array copied out of numpy, in its own dtype, row-major.
enum Rows {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

fn describe(obj: &Bound<'_, PyAny>) -> String {
    match obj.cast::<PyUntypedArray>() {
        Ok(a) => format!("a {}-d array of dtype {}", a.ndim(), a.dtype()),
        Err(_) => {
            format!("an object of type {}", obj.get_type().name().map(|n| n.to_string()).unwrap_or_default())
        }
    }
}

/// Copy a float32/float64 array of `ndim` dimensions; returns its shape.
fn copy_rows(name: &str, obj: &Bound<'_, PyAny>, ndim: usize) -> PyResult<(Vec<usize>, Rows)> {
    let wrong = || {
        PyTypeError::new_err(format!(
            "{name} must be a {ndim}-d numpy array of float32 or float64, got {}",
            describe(obj)
        ))
    };
    let arr = obj.cast::<PyUntypedArray>().map_err(|_| wrong())?;
    if arr.ndim() != ndim {
        return Err(PyValueError::new_err(format!("{name} must be {ndim}-d, got shape {:?}", arr.shape())));
    }
    let shape = arr.shape().to_vec();
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        return Ok((shape, Rows::F32(row_major(&a))));
    }
    if let Ok(a) = obj.extract::<PyReadonlyArrayDyn<'_, f64>>() {
        return Ok((shape, Rows::F64(row_major(&a))));
    }
    Err(wrong())
}

/// The array's values in row-major order (a memcpy when C-contiguous;
/// `as_slice` alone would also accept a Fortran-ordered array, in column order).
fn row_major<T: numpy::Element + Copy>(a: &PyReadonlyArrayDyn<'_, T>) -> Vec<T> {
    if a.is_c_contiguous() {
        if let Ok(s) = a.as_slice() {
            return s.to_vec();
        }
    }
    a.as_array().iter().copied().collect()
}

fn copy_f64(name: &str, obj: &Bound<'_, PyAny>, ndim: usize) -> PyResult<(Vec<usize>, Vec<f64>)> {
    let (shape, rows) = copy_rows(name, obj, ndim)?;
    let v = match rows {
        Rows::F64(v) => v,
        Rows::F32(v) => v.into_iter().map(f64::from).collect(),
    };
    Ok((shape, v))
}

/// FeatureStats(dim)
///
/// Streaming mean and unbiased covariance of `dim`-dimensional features,
/// accumulated in float64 batch by batch (Chan et al.'s pairwise update:
/// stable when the mean is large next to the spread). Batches are float32
/// or float64 arrays of shape (n, dim).
#[pyclass(name = "FeatureStats", module = "psgan_fast._core")]
struct PyFeatureStats {
    inner: stats::FeatureStats,
}

#[pymethods]
impl PyFeatureStats {
    #[new]
    fn new(dim: usize) -> PyResult<Self> {
        Ok(PyFeatureStats { inner: stats::FeatureStats::new(dim).map_err(value_err)? })
    }

    /// Add a batch: a float32 or float64 array of shape (n, dim).
    fn update(&mut self, py: Python<'_>, batch: &Bound<'_, PyAny>) -> PyResult<()> {
        let (shape, rows) = copy_rows("batch", batch, 2)?;
        let d = self.inner.dim();
        if shape[1] != d {
            return Err(PyValueError::new_err(format!(
                "batch has shape {shape:?}: expected (n, {d}) for FeatureStats({d})"
            )));
        }
        let inner = &mut self.inner;
        py.detach(|| match &rows {
            Rows::F32(v) => inner.update(v),
            Rows::F64(v) => inner.update(v),
        })
        .map_err(value_err)
    }

    /// Merge another FeatureStats of the same dim into this one, as if its
    /// samples had been given to update().
    fn merge(&mut self, py: Python<'_>, other: PyRef<'_, PyFeatureStats>) -> PyResult<()> {
        let other = other.inner.clone();
        let inner = &mut self.inner;
        py.detach(|| inner.merge(&other)).map_err(value_err)
    }

    /// Feature dimension.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Number of samples seen.
    #[getter]
    fn count(&self) -> u64 {
        self.inner.count()
    }

    /// Mean, float64 array of shape (dim,). Needs at least one sample.
    fn mean<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        Ok(PyArray1::from_vec(py, self.inner.mean().map_err(value_err)?))
    }

    /// Unbiased covariance (divided by n - 1, as numpy.cov), float64 array of
    /// shape (dim, dim). Needs at least two samples.
    fn cov<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let d = self.inner.dim();
        let inner = &self.inner;
        let v = py.detach(|| inner.covariance()).map_err(value_err)?;
        PyArray1::from_vec(py, v).reshape([d, d])
    }

    fn __repr__(&self) -> String {
        format!("FeatureStats(dim={}, count={})", self.inner.dim(), self.inner.count())
    }
}

type Gaussians = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

fn copy_gaussians(
    mu1: &Bound<'_, PyAny>,
    sigma1: &Bound<'_, PyAny>,
    mu2: &Bound<'_, PyAny>,
    sigma2: &Bound<'_, PyAny>,
) -> PyResult<Gaussians> {
    let (m1s, m1) = copy_f64("mu1", mu1, 1)?;
    let (m2s, m2) = copy_f64("mu2", mu2, 1)?;
    let (s1s, s1) = copy_f64("sigma1", sigma1, 2)?;
    let (s2s, s2) = copy_f64("sigma2", sigma2, 2)?;
    let d = m1s[0];
    if m2s[0] != d {
        return Err(PyValueError::new_err(format!(
            "mu1 has shape {m1s:?} but mu2 has shape {m2s:?}: the means must have the same length"
        )));
    }
    for (name, s) in [("sigma1", &s1s), ("sigma2", &s2s)] {
        if s[0] != d || s[1] != d {
            return Err(PyValueError::new_err(format!(
                "{name} has shape {s:?}, expected ({d}, {d}) to match the means"
            )));
        }
    }
    Ok((m1, s1, m2, s2))
}

/// frechet_distance(mu1, sigma1, mu2, sigma2, eigensolver="two-stage") -> float
///
/// ‖mu1 − mu2‖² + tr sigma1 + tr sigma2 − 2 tr √(sigma1 sigma2), with the
/// trace of the square root taken from the eigenvalues of the symmetric
/// Lᵀ sigma2 L, sigma1 = L Lᵀ (falling back to the Cholesky of sigma2, then
/// to a rank-revealing pivoted Cholesky, when sigma1 is singular).
/// eigensolver: "two-stage" (this crate's two-stage tridiagonalisation, the
/// default) or "faer" (faer's self_adjoint_eigenvalues).
/// Raises ValueError naming the input at fault for mismatched shapes,
/// non-finite values, asymmetric or non-positive-semidefinite covariances,
/// or an unknown eigensolver.
#[pyfunction]
#[pyo3(signature = (mu1, sigma1, mu2, sigma2, eigensolver = "two-stage"))]
fn frechet_distance(
    py: Python<'_>,
    mu1: &Bound<'_, PyAny>,
    sigma1: &Bound<'_, PyAny>,
    mu2: &Bound<'_, PyAny>,
    sigma2: &Bound<'_, PyAny>,
    eigensolver: &str,
) -> PyResult<f64> {
    compute_frechet(py, mu1, sigma1, mu2, sigma2, eigensolver).map(|f| f.distance)
}

/// Validate and copy the inputs, then compute without the GIL.
fn compute_frechet(
    py: Python<'_>,
    mu1: &Bound<'_, PyAny>,
    sigma1: &Bound<'_, PyAny>,
    mu2: &Bound<'_, PyAny>,
    sigma2: &Bound<'_, PyAny>,
    eigensolver: &str,
) -> PyResult<stats::Frechet> {
    let solver = stats::Eigensolver::parse(eigensolver).map_err(value_err)?;
    let (m1, s1, m2, s2) = copy_gaussians(mu1, sigma1, mu2, sigma2)?;
    py.detach(|| stats::frechet_distance_with(&m1, s1, &m2, s2, solver)).map_err(value_err)
}

/// frechet_distance_details(mu1, sigma1, mu2, sigma2, eigensolver="two-stage") -> dict
///
/// The same computation, returning {"distance", "mean_term", "trace_sqrt",
/// "method", "rank", "eigensolver"} (method: "cholesky-sigma1",
/// "cholesky-sigma2" or "pivoted-cholesky"; rank: the factor's rank for the
/// latter, else None).
#[pyfunction]
#[pyo3(signature = (mu1, sigma1, mu2, sigma2, eigensolver = "two-stage"))]
fn frechet_distance_details<'py>(
    py: Python<'py>,
    mu1: &Bound<'py, PyAny>,
    sigma1: &Bound<'py, PyAny>,
    mu2: &Bound<'py, PyAny>,
    sigma2: &Bound<'py, PyAny>,
    eigensolver: &str,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let f = compute_frechet(py, mu1, sigma1, mu2, sigma2, eigensolver)?;
    let out = pyo3::types::PyDict::new(py);
    out.set_item("distance", f.distance)?;
    out.set_item("mean_term", f.mean_term)?;
    out.set_item("trace_sqrt", f.trace_sqrt)?;
    out.set_item("method", f.method.name())?;
    let rank = match f.method {
        stats::TraceSqrtMethod::PivotedCholesky { rank } => Some(rank),
        _ => None,
    };
    out.set_item("rank", rank)?;
    out.set_item("eigensolver", f.eigensolver.name())?;
    Ok(out)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFeatureStats>()?;
    m.add_function(wrap_pyfunction!(frechet_distance, m)?)?;
    m.add_function(wrap_pyfunction!(frechet_distance_details, m)?)?;
    Ok(())
}
