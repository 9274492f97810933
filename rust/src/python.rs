//! The thin PyO3 layer: converts at the edge, releases the GIL for work
//! that can take a while, and turns every Rust error into a Python
//! exception. No `unwrap()` on anything a caller controls.

use crate::idx::{self, IdxError};
use crate::stream::{batches_per_epoch, Dataset, EpochIter, StreamConfig};
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

create_exception!(
    _core,
    IdxFormatError,
    PyValueError,
    "The bytes are not a valid unsigned-byte IDX file; the message names the file and the problem."
);

fn idx_err(origin: &str, e: IdxError) -> PyErr {
    match e {
        IdxError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(format!("{origin}: no such file"))
        }
        IdxError::Io(io) => PyOSError::new_err(format!("{origin}: {io}")),
        IdxError::Format(msg) => IdxFormatError::new_err(format!("{origin}: {msg}")),
    }
}

fn to_numpy<'py>(py: Python<'py>, a: idx::IdxArray) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    PyArray1::from_vec(py, a.data).reshape(a.dims)
}

/// read_idx(path) -> numpy.ndarray (uint8, shape from the header)
///
/// Reads a raw or gzip-compressed IDX file. Raises FileNotFoundError for a
/// missing file and IdxFormatError (a ValueError) naming the file and the
/// problem for malformed content.
#[pyfunction]
fn read_idx<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let origin = path.display().to_string();
    let parsed = py.detach(|| idx::read_file(&path)).map_err(|e| idx_err(&origin, e))?;
    to_numpy(py, parsed)
}

/// parse_idx(data: bytes, origin="<bytes>") -> numpy.ndarray
#[pyfunction]
#[pyo3(signature = (data, origin = "<bytes>"))]
fn parse_idx<'py>(py: Python<'py>, data: Vec<u8>, origin: &str) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let parsed = py.detach(|| idx::parse_bytes(&data)).map_err(|e| idx_err(origin, e))?;
    to_numpy(py, parsed)
}

/// The Rust half of psgan_fast.data.BatchStream: holds a copy of the
/// images (n items of `item_shape`) and labels, and starts epoch iterators.
#[pyclass(module = "psgan_fast._core", frozen)]
struct BatchStreamCore {
    ds: Arc<Dataset>,
    cfg: StreamConfig,
    item_shape: Vec<usize>,
}

#[pymethods]
impl BatchStreamCore {
    #[new]
    #[pyo3(signature = (images, item_shape, labels=None, *, batch_size, shuffle=true, seed=0,
                        drop_last=true, rank=0, world_size=1, prefetch=2))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        images: PyReadonlyArrayDyn<'_, u8>,
        item_shape: Vec<usize>,
        labels: Option<PyReadonlyArrayDyn<'_, i64>>,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        drop_last: bool,
        rank: usize,
        world_size: usize,
        prefetch: usize,
    ) -> PyResult<Self> {
        let cfg = StreamConfig { batch_size, shuffle, seed, drop_last, rank, world_size, prefetch };
        cfg.validate().map_err(|e| PyValueError::new_err(e.0))?;
        let bytes = images
            .as_slice()
            .map_err(|_| PyValueError::new_err("images must be a C-contiguous uint8 array"))?;
        let item_size = item_shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| PyValueError::new_err(format!("item shape {item_shape:?} overflows")))?;
        let n = images.shape().first().copied().unwrap_or(0);
        if item_size.checked_mul(n) != Some(bytes.len()) {
            return Err(PyValueError::new_err(format!(
                "images hold {} bytes, not {n} items of shape {:?}",
                bytes.len(),
                item_shape
            )));
        }
        let labels = match labels {
            Some(l) => Some(
                l.as_slice()
                    .map_err(|_| PyValueError::new_err("labels must be a C-contiguous int64 array"))?
                    .to_vec(),
            ),
            None => None,
        };
        let ds = Dataset::new(bytes.to_vec(), n, labels).map_err(|e| IdxFormatError::new_err(e.0))?;
        Ok(BatchStreamCore { ds: Arc::new(ds), cfg, item_shape })
    }

    /// Batches per epoch for this rank.
    fn __len__(&self) -> usize {
        batches_per_epoch(self.ds.len(), &self.cfg)
    }

    /// Number of items in the whole data set (all ranks).
    #[getter]
    fn num_items(&self) -> usize {
        self.ds.len()
    }

    /// Start iterating `epoch`, skipping its first `start_batch` batches.
    #[pyo3(signature = (epoch, start_batch=0))]
    fn epoch(&self, epoch: u64, start_batch: usize) -> EpochIterCore {
        EpochIterCore {
            inner: Mutex::new(EpochIter::start(self.ds.clone(), &self.cfg, epoch, start_batch)),
            item_shape: self.item_shape.clone(),
        }
    }
}

/// One epoch's batches; yields (uint8 ndarray [B, *item_shape], int64 ndarray [B]).
#[pyclass(module = "psgan_fast._core")]
struct EpochIterCore {
    inner: Mutex<EpochIter>,
    item_shape: Vec<usize>,
}

type BatchArrays<'py> = (Bound<'py, PyArrayDyn<u8>>, Bound<'py, PyArray1<i64>>);

#[pymethods]
impl EpochIterCore {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<BatchArrays<'py>>> {
        let got = py.detach(|| match self.inner.lock() {
            Ok(mut it) => Ok(it.next_batch()),
            Err(_) => Err(()),
        });
        let batch = match got {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(()) => return Err(PyRuntimeError::new_err("batch stream state is poisoned")),
        };
        let mut shape = Vec::with_capacity(1 + self.item_shape.len());
        shape.push(batch.len);
        shape.extend_from_slice(&self.item_shape);
        let images = PyArray1::from_vec(py, batch.images).reshape(shape)?;
        let labels = PyArray1::from_vec(py, batch.labels);
        Ok(Some((images, labels)))
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("IdxFormatError", m.py().get_type::<IdxFormatError>())?;
    m.add_function(wrap_pyfunction!(read_idx, m)?)?;
    m.add_function(wrap_pyfunction!(parse_idx, m)?)?;
    m.add_class::<BatchStreamCore>()?;
    m.add_class::<EpochIterCore>()?;
    crate::python_stats::register(m)?;
    Ok(())
}
