//! FID statistics: a streaming mean / covariance accumulator and the
//! Fréchet distance between two Gaussians.
//!
//! One module per subject, their public items re-exported here, so the
//! API is `crate::stats::…` whatever file an item lives in:
//!
//! - `accumulator`: [`FeatureStats`], the streaming count, mean and
//!   covariance of feature rows (Chan et al.'s pairwise merge, one shard per
//!   thread, the AVX2 Gram kernel of `crate::gram` or faer's product).
//! - `frechet`: the Fréchet distance ([`frechet_distance`],
//!   [`frechet_distance_detailed`], [`frechet_distance_with`]): input
//!   checks, the Cholesky, pivoted Cholesky and congruence products, and
//!   tr √(Σ1 Σ2) from the eigenvalues of a symmetric matrix.
//! - `eigen`: those eigenvalues ([`Eigensolver`]): implicit QL on the
//!   tridiagonal, and faer's routines as the fallback and the alternative.
//! - `tridiag`: the two-stage Householder tridiagonalisation and its
//!   pipelined bulge chase, which `eigen` runs first.
//!
//! This file holds what they share: the error type [`StatsError`], the
//! thread pool choice and a fallible zeroed allocation (and, for the tests,
//! a small random generator and reference statistics). Each module's tests
//! sit beside its code.

mod accumulator;
mod eigen;
mod frechet;
mod tridiag;

pub use accumulator::FeatureStats;
pub use eigen::Eigensolver;
pub use frechet::{
    frechet_distance, frechet_distance_detailed, frechet_distance_with, Frechet, TraceSqrtMethod, PSD_RTOL,
    SYMMETRY_RTOL,
};

use faer::Par;
use std::fmt;

/// What is wrong with the input, in words a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsError(pub String);

impl fmt::Display for StatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StatsError {}

fn err<T>(msg: impl Into<String>) -> Result<T, StatsError> {
    Err(StatsError(msg.into()))
}

/// The worker threads to use: rayon's pool (all cores unless
/// `RAYON_NUM_THREADS` says otherwise).
fn par() -> Par {
    Par::rayon(0)
}

fn try_zeroed(len: usize, what: &str) -> Result<Vec<f64>, StatsError> {
    let fail = || err(format!("cannot allocate {len} float64 values for {what}"));
    if len == 0 {
        return Ok(Vec::new());
    }
    let Ok(layout) = std::alloc::Layout::array::<f64>(len) else {
        return fail();
    };
    // alloc_zeroed (calloc) rather than push zeros: large blocks come as
    // fresh pages the kernel has already zeroed, so a 32 MiB accumulator
    // is not written twice before its first use.
    // SAFETY: the layout has non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f64;
    if ptr.is_null() {
        return fail();
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of
    // `len` f64s, and all-zero bytes are the f64 value 0.0.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// What the tests of the stats modules share: a generator and reference statistics.
#[cfg(test)]
mod test_util {
    /// A small deterministic generator (tests only): xorshift → uniform → Box-Muller.
    pub(super) struct Rng(pub(super) u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        pub(super) fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
        pub(super) fn matrix(&mut self, n: usize, d: usize) -> Vec<f64> {
            (0..n * d).map(|_| self.normal()).collect()
        }
    }

    /// Two-pass reference mean and unbiased covariance of row-major data.
    pub(super) fn two_pass(x: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
        let n = x.len() / d;
        let mut mu = vec![0.0; d];
        for r in x.chunks(d) {
            for j in 0..d {
                mu[j] += r[j] / n as f64;
            }
        }
        let mut c = vec![0.0; d * d];
        for r in x.chunks(d) {
            for i in 0..d {
                for j in 0..d {
                    c[i * d + j] += (r[i] - mu[i]) * (r[j] - mu[j]) / (n - 1) as f64;
                }
            }
        }
        (mu, c)
    }

    pub(super) fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }
}
