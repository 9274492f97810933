//! FID statistics: a streaming mean / covariance accumulator and the
//! Fréchet distance between two Gaussians.
//!
//! # Fréchet distance
//!
//! FID = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2).
//!
//! pytorch-fid takes `scipy.linalg.sqrtm(Σ1 Σ2)` (a Schur decomposition of
//! a non-symmetric matrix), torch-fidelity sums `√` of
//! `numpy.linalg.eigvals(Σ1 Σ2)` (a non-symmetric eigenproblem). Both are
//! slow at d = 2048 and produce complex noise. Here the trace is taken
//! through a *symmetric* eigenproblem (DESIGN.md §4): with Σ1 = L Lᵀ
//! (Cholesky), Σ1 Σ2 = L (Lᵀ Σ2 L) L⁻¹ is similar to M = Lᵀ Σ2 L, which is
//! symmetric positive semidefinite, so its eigenvalues λᵢ are real and
//! tr √(Σ1 Σ2) = Σ √λᵢ. Cost: one Cholesky, two triangular products and the
//! eigenvalues (no eigenvectors) of a symmetric matrix.
//!
//! **Fallback when Σ1 is not positive definite** (for example fewer samples
//! than dimensions, where Σ1 has rank n − 1 < d): the formula is symmetric
//! in Σ1, Σ2, so the Cholesky of Σ2 is tried next. When neither is
//! (numerically) positive definite, a rank-revealing pivoted Cholesky
//! P Σ Pᵀ = L_r L_rᵀ of each is computed (stopping at pivots below
//! d·ε·max diag, LAPACK's `dpstrf` rule), the one of lower rank r is kept
//! as S = Pᵀ L_r (d × r, Σ = S Sᵀ), and the nonzero eigenvalues of Σ1 Σ2 are
//! those of the r × r matrix Sᵀ Σ_other S. A Cholesky that "succeeds" with
//! a pivot below the same threshold counts as a failure, so a singular
//! covariance never goes through a factor full of rounding noise.
//!
//! Eigenvalues of M within rounding of zero (|λ| ≤ r·ε·λ_max, r × r the size
//! of M) count as 0: a singular covariance would otherwise add √noise for
//! each of its null directions. A clearly negative one (below
//! −1e-4 · λ_max) means an input is not a covariance matrix, and is an
//! error. The result is clamped at 0: the
//! Fréchet distance is a squared Wasserstein distance, never negative, and
//! a tiny negative value is rounding.
//!
//! # Accumulation
//!
//! [`FeatureStats`] keeps the count, the mean and M2 = Σ (x − μ)(x − μ)ᵀ in
//! f64. Each chunk of rows is centred on its own mean and merged by Chan et
//! al.'s pairwise rule, M2 = M2_a + M2_b + δ δᵀ n_a n_b / n, so no raw
//! second moments are formed (no cancellation when the mean is large next
//! to the spread) and two accumulators merge exactly ([`FeatureStats::merge`]).

use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par};
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

/// Rows converted and centred at a time in [`FeatureStats::update`]:
/// bounds the f64 scratch (rows × dim) while keeping the rank-k update
/// large enough to run at matrix-multiply speed.
const CHUNK_ROWS: usize = 1024;

/// Relative tolerance of the symmetry check: |Σij − Σji| ≤ tol · max |Σ|.
/// Loose enough for covariances computed in float32, tight enough to catch
/// a matrix that is not a covariance at all.
pub const SYMMETRY_RTOL: f64 = 1e-5;

/// Eigenvalues of Lᵀ Σ2 L below −PSD_RTOL · λ_max mean an input is not
/// positive semidefinite (rounding gives ~1e-13; float32 inputs ~1e-7).
pub const PSD_RTOL: f64 = 1e-4;

/// The worker threads to use: rayon's pool (all cores unless
/// `RAYON_NUM_THREADS` says otherwise).
fn par() -> Par {
    Par::rayon(0)
}

fn try_zeroed(len: usize, what: &str) -> Result<Vec<f64>, StatsError> {
    let mut v = Vec::new();
    if v.try_reserve_exact(len).is_err() {
        return err(format!("cannot allocate {len} float64 values for {what}"));
    }
    v.resize(len, 0.0);
    Ok(v)
}

// ---------------------------------------------------------------------------
// FeatureStats
// ---------------------------------------------------------------------------

/// Streaming mean and covariance of d-dimensional features, in f64.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    dim: usize,
    count: u64,
    mean: Vec<f64>,
    /// Σ (x − mean)(x − mean)ᵀ, column-major d × d; only the lower
    /// triangle is maintained.
    m2: Vec<f64>,
}

impl FeatureStats {
    /// An empty accumulator for `dim`-dimensional features.
    pub fn new(dim: usize) -> Result<Self, StatsError> {
        if dim == 0 {
            return err("dim must be at least 1");
        }
        let Some(len) = dim.checked_mul(dim) else {
            return err(format!("dim {dim} is too large: dim * dim overflows"));
        };
        Ok(FeatureStats {
            dim,
            count: 0,
            mean: vec![0.0; dim],
            m2: try_zeroed(len, &format!("a {dim} x {dim} covariance accumulator"))?,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of samples seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Add a batch of samples: `data` holds `data.len() / dim` rows of `dim`
    /// values each, row-major. Non-finite values are rejected before the
    /// state changes; an empty batch is a no-op.
    pub fn update<T: Copy + Into<f64>>(&mut self, data: &[T]) -> Result<(), StatsError> {
        let d = self.dim;
        if data.len() % d != 0 {
            return err(format!(
                "batch holds {} values, which is not a whole number of rows of dim {d}",
                data.len()
            ));
        }
        if let Some(pos) = data.iter().position(|v| !(*v).into().is_finite()) {
            let v: f64 = data[pos].into();
            return err(format!(
                "batch has a non-finite value {v} at row {}, column {}",
                pos / d,
                pos % d
            ));
        }
        let rows = data.len() / d;
        if rows == 0 {
            return Ok(());
        }
        let chunk = CHUNK_ROWS.min(rows);
        let mut buf = try_zeroed(chunk * d, "the batch scratch")?;
        let mut bmean = vec![0.0f64; d];
        for block in data.chunks(chunk * d) {
            let nb = block.len() / d;
            let buf = &mut buf[..block.len()];
            for (dst, src) in buf.iter_mut().zip(block) {
                *dst = (*src).into();
            }
            bmean.iter_mut().for_each(|m| *m = 0.0);
            for row in buf.chunks_exact(d) {
                for (m, x) in bmean.iter_mut().zip(row) {
                    *m += x;
                }
            }
            let inv = 1.0 / nb as f64;
            bmean.iter_mut().for_each(|m| *m *= inv);
            for row in buf.chunks_exact_mut(d) {
                for (x, m) in row.iter_mut().zip(&bmean) {
                    *x -= m;
                }
            }
            // Column j of Y is sample j, centred: Y Yᵀ is the chunk's M2.
            let y = MatRef::from_column_major_slice(&buf[..], d, nb);
            let m2 = MatMut::from_column_major_slice_mut(&mut self.m2, d, d);
            tri_matmul(
                m2,
                BlockStructure::TriangularLower,
                Accum::Add,
                y,
                BlockStructure::Rectangular,
                y.transpose(),
                BlockStructure::Rectangular,
                1.0,
                par(),
            );
            self.merge_moments(nb as u64, &bmean, None);
        }
        Ok(())
    }

    /// Fold the count and mean of a group of `nb` samples (whose own M2 is
    /// `other_m2`, or already added to `self.m2` when None) into the state.
    fn merge_moments(&mut self, nb: u64, bmean: &[f64], other_m2: Option<&[f64]>) {
        let d = self.dim;
        let na = self.count;
        let n = na + nb;
        let w = (na as f64) * (nb as f64) / (n as f64);
        let frac = nb as f64 / n as f64;
        let delta: Vec<f64> = bmean.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        for (j, dj) in delta.iter().enumerate() {
            let col = &mut self.m2[j * d..(j + 1) * d];
            let wdj = w * dj;
            for i in j..d {
                col[i] += wdj * delta[i];
            }
            if let Some(o) = other_m2 {
                for i in j..d {
                    col[i] += o[j * d + i];
                }
            }
        }
        for (m, dl) in self.mean.iter_mut().zip(&delta) {
            *m += frac * dl;
        }
        self.count = n;
    }

    /// Merge another accumulator of the same dimension into this one, as if
    /// its samples had been given to `update`.
    pub fn merge(&mut self, other: &FeatureStats) -> Result<(), StatsError> {
        if other.dim != self.dim {
            return err(format!(
                "cannot merge statistics of dim {} into statistics of dim {}",
                other.dim, self.dim
            ));
        }
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            self.clone_from(other);
            return Ok(());
        }
        let mean = other.mean.clone();
        self.merge_moments(other.count, &mean, Some(&other.m2));
        Ok(())
    }

    /// The mean of the samples seen (needs at least one).
    pub fn mean(&self) -> Result<Vec<f64>, StatsError> {
        if self.count == 0 {
            return err("no samples yet: the mean needs at least 1");
        }
        Ok(self.mean.clone())
    }

    /// The unbiased covariance (divided by n − 1, as `numpy.cov`), a full
    /// symmetric d × d matrix in a flat vector (row- and column-major alike).
    pub fn covariance(&self) -> Result<Vec<f64>, StatsError> {
        let d = self.dim;
        if self.count < 2 {
            return err(format!(
                "{} sample(s) so far: the unbiased covariance needs at least 2",
                self.count
            ));
        }
        let scale = 1.0 / (self.count - 1) as f64;
        let mut out = try_zeroed(d * d, "the covariance")?;
        for j in 0..d {
            for i in j..d {
                let v = self.m2[j * d + i] * scale;
                out[j * d + i] = v;
                out[i * d + j] = v;
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Fréchet distance
// ---------------------------------------------------------------------------

/// How tr √(Σ1 Σ2) was computed (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceSqrtMethod {
    /// Cholesky of Σ1, eigenvalues of Lᵀ Σ2 L (the common case).
    CholeskySigma1,
    /// Σ1 is singular; Cholesky of Σ2, eigenvalues of Lᵀ Σ1 L.
    CholeskySigma2,
    /// Both singular: rank-revealing pivoted Cholesky of one of them, of rank
    /// `rank`, eigenvalues of the rank × rank matrix Sᵀ Σ_other S.
    PivotedCholesky { rank: usize },
}

impl TraceSqrtMethod {
    pub fn name(&self) -> &'static str {
        match self {
            TraceSqrtMethod::CholeskySigma1 => "cholesky-sigma1",
            TraceSqrtMethod::CholeskySigma2 => "cholesky-sigma2",
            TraceSqrtMethod::PivotedCholesky { .. } => "pivoted-cholesky",
        }
    }
}

/// A Fréchet distance with the parts it is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frechet {
    /// The distance, ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2), clamped at 0.
    pub distance: f64,
    /// ‖μ1 − μ2‖².
    pub mean_term: f64,
    /// tr √(Σ1 Σ2).
    pub trace_sqrt: f64,
    pub method: TraceSqrtMethod,
}

/// A validated, exactly symmetric covariance matrix.
struct Cov {
    name: &'static str,
    mat: Mat<f64>,
    max_diag: f64,
}

fn check_vector(name: &str, v: &[f64], d: usize) -> Result<(), StatsError> {
    if v.len() != d {
        return err(format!("{name} has {} values, expected {d}", v.len()));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return err(format!("{name} has a non-finite value {} at index {i}", v[i]));
    }
    Ok(())
}

/// Check shape, finiteness, symmetry and non-negative variances of a d × d
/// matrix given flat (row-major; for a symmetric matrix any order), and
/// return it symmetrised as (Σ + Σᵀ) / 2.
fn check_covariance(name: &'static str, s: &[f64], d: usize) -> Result<Cov, StatsError> {
    if s.len() != d * d {
        return err(format!("{name} has {} values, expected {d} x {d} = {}", s.len(), d * d));
    }
    if let Some(p) = s.iter().position(|x| !x.is_finite()) {
        return err(format!("{name} has a non-finite value {} at [{}, {}]", s[p], p / d, p % d));
    }
    let max_abs = s.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let tol = SYMMETRY_RTOL * max_abs;
    let mut worst = (0.0f64, 0usize, 0usize);
    for i in 0..d {
        for j in 0..i {
            let diff = (s[i * d + j] - s[j * d + i]).abs();
            if diff > worst.0 {
                worst = (diff, i, j);
            }
        }
    }
    if worst.0 > tol {
        let (diff, i, j) = worst;
        return err(format!(
            "{name} is not symmetric: |{name}[{i}, {j}] - {name}[{j}, {i}]| = {diff:.3e} exceeds \
             {SYMMETRY_RTOL:e} * max|{name}| = {tol:.3e}"
        ));
    }
    let mut max_diag = 0.0f64;
    for i in 0..d {
        let v = s[i * d + i];
        if v < 0.0 {
            return err(format!(
                "{name} is not a covariance matrix: negative variance {name}[{i}, {i}] = {v:e}"
            ));
        }
        max_diag = max_diag.max(v);
    }
    let mat = Mat::from_fn(d, d, |i, j| 0.5 * (s[i * d + j] + s[j * d + i]));
    Ok(Cov { name, mat, max_diag })
}

/// Pivots below this are treated as zero (LAPACK `dpstrf`'s default).
fn pivot_tol(c: &Cov) -> f64 {
    c.mat.nrows() as f64 * f64::EPSILON * c.max_diag
}

/// Cholesky factor L (lower) of a numerically positive definite matrix, or
/// None when a pivot is non-positive or below [`pivot_tol`].
fn cholesky(c: &Cov) -> Option<Mat<f64>> {
    use faer::linalg::cholesky::llt::factor as llt;
    let d = c.mat.nrows();
    if c.max_diag == 0.0 {
        return None;
    }
    let mut l = c.mat.clone();
    let par = par();
    let mut mem = MemBuffer::new(llt::cholesky_in_place_scratch::<f64>(d, par, Default::default()));
    let res = llt::cholesky_in_place(
        l.as_mut(),
        Default::default(),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    );
    if res.is_err() {
        return None;
    }
    let tol = pivot_tol(c);
    if (0..d).any(|i| {
        let p = l[(i, i)];
        !(p * p > tol)
    }) {
        return None;
    }
    for j in 1..d {
        for i in 0..j {
            l[(i, j)] = 0.0;
        }
    }
    Some(l)
}

/// Rank-revealing pivoted Cholesky: S (d × r) with S Sᵀ = Σ up to pivots
/// below [`pivot_tol`]. Errors when Σ is clearly indefinite.
fn pivoted_factor(c: &Cov) -> Result<Mat<f64>, StatsError> {
    use faer::linalg::cholesky::llt_pivoting::factor as piv;
    let d = c.mat.nrows();
    if c.max_diag == 0.0 {
        return Ok(Mat::zeros(d, 0));
    }
    let mut a = c.mat.clone();
    let mut perm = vec![0usize; d];
    let mut perm_inv = vec![0usize; d];
    let par = par();
    let mut mem = MemBuffer::new(piv::cholesky_in_place_scratch::<usize, f64>(d, par, Default::default()));
    let rank = match piv::cholesky_in_place(
        a.as_mut(),
        &mut perm,
        &mut perm_inv,
        par,
        MemStack::new(&mut mem),
        Default::default(),
    ) {
        Ok((info, _)) => info.rank,
        Err(_) => {
            return err(format!("{} is not positive semidefinite (pivoted Cholesky failed)", c.name))
        }
    };
    // P Σ Pᵀ = L Lᵀ with (P Σ Pᵀ)[i, j] = Σ[perm[i], perm[j]]; S = Pᵀ L_r.
    let s = Mat::from_fn(d, rank, |i, k| {
        let row = perm_inv[i];
        if row >= k {
            a[(row, k)]
        } else {
            0.0
        }
    });
    // What the factor leaves out must be rounding: for a positive
    // semidefinite Σ the residual Σ − S Sᵀ is bounded by the last pivot.
    let mut resid = c.mat.clone();
    tri_matmul(
        resid.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Add,
        s.as_ref(),
        BlockStructure::Rectangular,
        s.transpose(),
        BlockStructure::Rectangular,
        -1.0,
        par,
    );
    let mut worst = 0.0f64;
    for j in 0..d {
        for i in j..d {
            worst = worst.max(resid[(i, j)].abs());
        }
    }
    if worst > PSD_RTOL * c.max_diag {
        return err(format!(
            "{} is not positive semidefinite: after its rank-{rank} pivoted Cholesky a residual of \
             {worst:.3e} remains (largest variance {:.3e})",
            c.name, c.max_diag
        ));
    }
    Ok(s)
}

/// Lower triangle of Fᵀ Σ F for a factor F (d × r; `lower` when F is the
/// lower-triangular Cholesky factor, which halves the work).
fn congruence(f: MatRef<'_, f64>, sigma: MatRef<'_, f64>, lower: bool) -> Mat<f64> {
    let d = f.nrows();
    let r = f.ncols();
    let par = par();
    let fs = if lower { BlockStructure::TriangularLower } else { BlockStructure::Rectangular };
    let mut w = Mat::<f64>::zeros(d, r);
    tri_matmul(
        w.as_mut(),
        BlockStructure::Rectangular,
        Accum::Replace,
        sigma,
        BlockStructure::Rectangular,
        f,
        fs,
        1.0,
        par,
    );
    let mut m = Mat::<f64>::zeros(r, r);
    tri_matmul(
        m.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        f.transpose(),
        if lower { BlockStructure::TriangularUpper } else { BlockStructure::Rectangular },
        w.as_ref(),
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    m
}

/// Eigenvalues (ascending) of a symmetric matrix given by its lower triangle.
fn symmetric_eigenvalues(m: MatRef<'_, f64>) -> Result<Vec<f64>, StatsError> {
    use faer::linalg::evd;
    let n = m.nrows();
    let par = par();
    let mut s = faer::diag::Diag::<f64>::zeros(n);
    let req: StackReq = evd::self_adjoint_evd_scratch::<f64>(n, evd::ComputeEigenvectors::No, par, Default::default());
    let mut mem = MemBuffer::new(req);
    evd::self_adjoint_evd(m, s.as_mut(), None, par, MemStack::new(&mut mem), Default::default())
        .map_err(|e| StatsError(format!("symmetric eigenvalue iteration did not converge: {e:?}")))?;
    let mut v: Vec<f64> = s.column_vector().iter().copied().collect();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// Σ √λ over the eigenvalues of the symmetric positive semidefinite M,
/// treating rounding-level negative eigenvalues as 0. `blame` names the
/// input that must be at fault when M is clearly indefinite.
fn trace_sqrt_psd(m: MatRef<'_, f64>, blame: &str) -> Result<f64, StatsError> {
    let ev = symmetric_eigenvalues(m)?;
    let (Some(&lo), Some(&hi)) = (ev.first(), ev.last()) else {
        return Ok(0.0);
    };
    if lo < -PSD_RTOL * hi.max(0.0) || (hi <= 0.0 && lo < 0.0) {
        return err(format!(
            "{blame} is not positive semidefinite: sigma1 @ sigma2 has the eigenvalue {lo:.6e} \
             (largest {hi:.6e})"
        ));
    }
    // Eigenvalues within rounding of zero (a singular Σ gives n·ε-level
    // noise of either sign) count as 0 rather than adding √noise each.
    let noise = ev.len() as f64 * f64::EPSILON * hi;
    // Ascending order: small terms first.
    Ok(ev.iter().filter(|&&l| l > noise).map(|&l| l.sqrt()).sum())
}

fn trace_sqrt_product(c1: &Cov, c2: &Cov) -> Result<(f64, TraceSqrtMethod), StatsError> {
    if let Some(l) = cholesky(c1) {
        let m = congruence(l.as_ref(), c2.mat.as_ref(), true);
        return Ok((trace_sqrt_psd(m.as_ref(), c2.name)?, TraceSqrtMethod::CholeskySigma1));
    }
    if let Some(l) = cholesky(c2) {
        let m = congruence(l.as_ref(), c1.mat.as_ref(), true);
        return Ok((trace_sqrt_psd(m.as_ref(), c1.name)?, TraceSqrtMethod::CholeskySigma2));
    }
    let s1 = pivoted_factor(c1)?;
    let s2 = pivoted_factor(c2)?;
    let (s, other) = if s1.ncols() <= s2.ncols() { (s1, c2) } else { (s2, c1) };
    let rank = s.ncols();
    let m = congruence(s.as_ref(), other.mat.as_ref(), false);
    Ok((trace_sqrt_psd(m.as_ref(), other.name)?, TraceSqrtMethod::PivotedCholesky { rank }))
}

/// The Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2), with its parts.
///
/// `sigma1`, `sigma2` are d × d, flat (row-major); they must be finite,
/// symmetric within [`SYMMETRY_RTOL`] and have non-negative diagonals.
pub fn frechet_distance_detailed(
    mu1: &[f64],
    sigma1: &[f64],
    mu2: &[f64],
    sigma2: &[f64],
) -> Result<Frechet, StatsError> {
    let d = mu1.len();
    if d == 0 {
        return err("mu1 is empty: the features need at least one dimension");
    }
    check_vector("mu1", mu1, d)?;
    check_vector("mu2", mu2, d)?;
    let c1 = check_covariance("sigma1", sigma1, d)?;
    let c2 = check_covariance("sigma2", sigma2, d)?;
    let mean_term: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let tr1: f64 = (0..d).map(|i| c1.mat[(i, i)]).sum();
    let tr2: f64 = (0..d).map(|i| c2.mat[(i, i)]).sum();
    let (trace_sqrt, method) = trace_sqrt_product(&c1, &c2)?;
    let distance = (mean_term + tr1 + tr2 - 2.0 * trace_sqrt).max(0.0);
    Ok(Frechet { distance, mean_term, trace_sqrt, method })
}

/// The Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2).
pub fn frechet_distance(mu1: &[f64], sigma1: &[f64], mu2: &[f64], sigma2: &[f64]) -> Result<f64, StatsError> {
    frechet_distance_detailed(mu1, sigma1, mu2, sigma2).map(|f| f.distance)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (tests only): xorshift → uniform → Box-Muller.
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
        fn matrix(&mut self, n: usize, d: usize) -> Vec<f64> {
            (0..n * d).map(|_| self.normal()).collect()
        }
    }

    /// Two-pass reference mean and unbiased covariance of row-major data.
    fn two_pass(x: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
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

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    /// A random covariance: of `n` samples of d mixed, offset features.
    fn random_cov(rng: &mut Rng, n: usize, d: usize, shift: f64) -> (Vec<f64>, Vec<f64>) {
        let mix = rng.matrix(d, d);
        let z = rng.matrix(n, d);
        let mut x = matmul_rows(&z, &mix, n, d);
        for v in x.iter_mut() {
            *v += shift;
        }
        two_pass(&x, d)
    }

    fn matmul_rows(z: &[f64], mix: &[f64], n: usize, d: usize) -> Vec<f64> {
        let mut x = vec![0.0; n * d];
        for r in 0..n {
            for k in 0..d {
                let zk = z[r * d + k];
                for j in 0..d {
                    x[r * d + j] += zk * mix[k * d + j];
                }
            }
        }
        x
    }

    /// tr √(Σ1 Σ2) by brute force for diagonal matrices: Σ √(a_i b_i).
    #[test]
    fn diagonal_covariances_have_closed_form() {
        let d = 5;
        let a: [f64; 5] = [1.0, 4.0, 9.0, 0.25, 2.0];
        let b: [f64; 5] = [4.0, 1.0, 1.0, 4.0, 8.0];
        let mut s1 = vec![0.0; d * d];
        let mut s2 = vec![0.0; d * d];
        for i in 0..d {
            s1[i * d + i] = a[i];
            s2[i * d + i] = b[i];
        }
        let mu1 = [0.0, 1.0, 2.0, 3.0, 4.0];
        let mu2 = [1.0, 1.0, 2.0, 3.0, 2.0];
        let expect: f64 = 1.0 + 4.0 + (0..d).map(|i| a[i] + b[i] - 2.0 * (a[i] * b[i]).sqrt()).sum::<f64>();
        let f = frechet_distance_detailed(&mu1, &s1, &mu2, &s2).unwrap();
        assert!((f.distance - expect).abs() < 1e-12, "{} vs {expect}", f.distance);
        assert_eq!(f.method, TraceSqrtMethod::CholeskySigma1);
    }

    #[test]
    fn identical_gaussians_are_at_distance_zero() {
        let mut rng = Rng(7);
        let (mu, s) = random_cov(&mut rng, 200, 24, 3.0);
        let f = frechet_distance_detailed(&mu, &s, &mu, &s).unwrap();
        let tr: f64 = (0..24).map(|i| s[i * 24 + i]).sum();
        assert!(f.distance < 1e-9 * tr, "{f:?}");
        assert!((f.trace_sqrt - tr).abs() < 1e-9 * tr);
    }

    #[test]
    fn distance_is_symmetric_and_exact_for_scaled_covariances() {
        // Σ and 4Σ commute: tr √(Σ · 4Σ) = 2 tr Σ, so
        // FID(N(0, Σ), N(0, 4Σ)) = tr Σ + 4 tr Σ − 4 tr Σ = tr Σ.
        let mut rng = Rng(11);
        let d = 16;
        let (_, s) = random_cov(&mut rng, 100, d, 0.0);
        let s4: Vec<f64> = s.iter().map(|v| 4.0 * v).collect();
        let z = vec![0.0; d];
        let tr: f64 = (0..d).map(|i| s[i * d + i]).sum();
        let f = frechet_distance(&z, &s, &z, &s4).unwrap();
        assert!((f - tr).abs() < 1e-10 * tr, "{f} vs {tr}");
        let (mu2, s2) = random_cov(&mut rng, 100, d, 1.0);
        let a = frechet_distance(&z, &s, &mu2, &s2).unwrap();
        let b = frechet_distance(&mu2, &s2, &z, &s).unwrap();
        assert!((a - b).abs() < 1e-10 * a, "{a} vs {b}");
    }

    #[test]
    fn rank_deficient_inputs_take_the_pivoted_fallback() {
        // n < d: both covariances singular (rank n - 1).
        let mut rng = Rng(3);
        let d = 20;
        let (mu1, s1) = random_cov(&mut rng, 8, d, 0.0);
        let (mu2, s2) = random_cov(&mut rng, 12, d, 0.5);
        let f = frechet_distance_detailed(&mu1, &s1, &mu2, &s2).unwrap();
        assert_eq!(f.method, TraceSqrtMethod::PivotedCholesky { rank: 7 });
        // The pivoted route agrees with the Σ2-Cholesky route: Σ1 singular
        // against a full-rank Σ3 goes through the Cholesky of Σ3, and
        // tr √(Σ1 Σ3) is also Σ √λ of Sᵀ Σ3 S for Σ1's pivoted factor S.
        let (mu3, s3) = random_cov(&mut rng, 200, d, 0.5);
        let g = frechet_distance_detailed(&mu1, &s1, &mu3, &s3).unwrap();
        assert_eq!(g.method, TraceSqrtMethod::CholeskySigma2);
        let c1 = check_covariance("sigma1", &s1, d).unwrap();
        let c3 = check_covariance("sigma2", &s3, d).unwrap();
        let sf = pivoted_factor(&c1).unwrap();
        let m = congruence(sf.as_ref(), c3.mat.as_ref(), false);
        let via_pivoted = trace_sqrt_psd(m.as_ref(), "sigma2").unwrap();
        assert!((via_pivoted - g.trace_sqrt).abs() < 1e-9 * g.trace_sqrt, "{via_pivoted} vs {}", g.trace_sqrt);
        // A singular Gaussian against itself: distance ~0.
        let h = frechet_distance_detailed(&mu1, &s1, &mu1, &s1).unwrap();
        let tr: f64 = (0..d).map(|i| s1[i * d + i]).sum();
        assert!(h.distance < 1e-8 * tr, "{h:?}");
        assert!(matches!(h.method, TraceSqrtMethod::PivotedCholesky { .. }));
    }

    #[test]
    fn pivoted_factor_reconstructs_the_matrix() {
        let mut rng = Rng(5);
        let d = 15;
        let (_, s) = random_cov(&mut rng, 6, d, 0.0);
        let c = check_covariance("sigma1", &s, d).unwrap();
        let f = pivoted_factor(&c).unwrap();
        assert_eq!(f.ncols(), 5);
        let mut rec = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                rec[i * d + j] = (0..f.ncols()).map(|k| f[(i, k)] * f[(j, k)]).sum();
            }
        }
        assert!(max_abs_diff(&rec, &s) < 1e-12 * c.max_diag * d as f64);
    }

    #[test]
    fn zero_covariances_are_handled() {
        let d = 4;
        let z = vec![0.0; d * d];
        let mu1 = [1.0, 0.0, 0.0, 0.0];
        let mu2 = [0.0; 4];
        let f = frechet_distance_detailed(&mu1, &z, &mu2, &z).unwrap();
        assert_eq!(f.distance, 1.0);
        assert_eq!(f.method, TraceSqrtMethod::PivotedCholesky { rank: 0 });
    }

    #[test]
    fn invalid_inputs_are_named() {
        let eye: Vec<f64> = (0..9).map(|i| if i % 4 == 0 { 1.0 } else { 0.0 }).collect();
        let mu = [0.0; 3];
        let msg = |r: Result<f64, StatsError>| r.unwrap_err().0;
        assert!(msg(frechet_distance(&mu, &eye, &[0.0; 2], &eye)).contains("mu2 has 2 values, expected 3"));
        assert!(msg(frechet_distance(&mu, &eye[..8], &mu, &eye)).contains("sigma1 has 8 values"));
        let mut nan = eye.clone();
        nan[5] = f64::NAN;
        assert!(msg(frechet_distance(&mu, &eye, &mu, &nan)).contains("sigma2 has a non-finite value NaN at [1, 2]"));
        assert!(msg(frechet_distance(&mu, &eye, &[0.0, f64::INFINITY, 0.0], &eye)).contains("mu2 has a non-finite"));
        let mut asym = eye.clone();
        asym[1] = 0.5;
        assert!(msg(frechet_distance(&mu, &asym, &mu, &eye)).contains("sigma1 is not symmetric"));
        let mut neg = eye.clone();
        neg[8] = -1.0;
        assert!(msg(frechet_distance(&mu, &eye, &mu, &neg)).contains("negative variance sigma2[2, 2]"));
        // Symmetric, positive diagonal, indefinite.
        let indef = vec![1.0, 2.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert!(msg(frechet_distance(&mu, &eye, &mu, &indef)).contains("sigma2 is not positive semidefinite"));
        assert!(msg(frechet_distance(&mu, &indef, &mu, &indef)).contains("not positive semidefinite"));
        assert!(msg(frechet_distance(&[], &[], &[], &[])).contains("empty"));
        // Symmetric within tolerance is accepted.
        let mut near = eye.clone();
        near[1] = 1e-9;
        assert!(frechet_distance(&mu, &near, &mu, &eye).is_ok());
    }

    #[test]
    fn feature_stats_match_two_pass_in_any_batching() {
        let mut rng = Rng(9);
        let (n, d) = (2500, 7);
        let mut x = rng.matrix(n, d);
        for v in x.iter_mut() {
            *v = 1e4 + *v; // a large offset: raw second moments would cancel
        }
        let (mu, cov) = two_pass(&x, d);
        for splits in [vec![n], vec![1, 1, 998, 1500], vec![3, 2497]] {
            let mut fs = FeatureStats::new(d).unwrap();
            let mut at = 0;
            for s in splits {
                fs.update(&x[at * d..(at + s) * d]).unwrap();
                at += s;
            }
            assert_eq!(fs.count(), n as u64);
            assert!(max_abs_diff(&fs.mean().unwrap(), &mu) < 1e-9);
            assert!(max_abs_diff(&fs.covariance().unwrap(), &cov) < 1e-9);
        }
    }

    #[test]
    fn feature_stats_merge_equals_one_stream() {
        let mut rng = Rng(13);
        let d = 6;
        let x = rng.matrix(300, d);
        let mut all = FeatureStats::new(d).unwrap();
        all.update(&x).unwrap();
        let mut a = FeatureStats::new(d).unwrap();
        let mut b = FeatureStats::new(d).unwrap();
        a.update(&x[..100 * d]).unwrap();
        b.update(&x[100 * d..]).unwrap();
        let empty = FeatureStats::new(d).unwrap();
        a.merge(&empty).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 300);
        assert!(max_abs_diff(&a.mean().unwrap(), &all.mean().unwrap()) < 1e-12);
        assert!(max_abs_diff(&a.covariance().unwrap(), &all.covariance().unwrap()) < 1e-12);
        let mut e = FeatureStats::new(d).unwrap();
        e.merge(&b).unwrap();
        assert_eq!(e.count(), 200);
        assert!(a.merge(&FeatureStats::new(d + 1).unwrap()).unwrap_err().0.contains("dim 7 into statistics of dim 6"));
    }

    #[test]
    fn feature_stats_accepts_f32_and_rejects_bad_batches() {
        let mut fs = FeatureStats::new(2).unwrap();
        fs.update(&[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(fs.mean().unwrap(), vec![2.0, 3.0]);
        assert_eq!(fs.covariance().unwrap(), vec![2.0, 2.0, 2.0, 2.0]);
        assert!(fs.update(&[1.0f32, 2.0, 3.0]).unwrap_err().0.contains("not a whole number of rows of dim 2"));
        let e = fs.update(&[1.0f64, 2.0, 3.0, f64::NAN]).unwrap_err().0;
        assert!(e.contains("non-finite value NaN at row 1, column 1"), "{e}");
        assert_eq!(fs.count(), 2, "a rejected batch leaves the state unchanged");
        fs.update::<f32>(&[]).unwrap();
        assert_eq!(fs.count(), 2);
        let one = {
            let mut s = FeatureStats::new(2).unwrap();
            s.update(&[1.0f64, 1.0]).unwrap();
            s
        };
        assert!(one.covariance().unwrap_err().0.contains("at least 2"));
        assert!(FeatureStats::new(0).unwrap_err().0.contains("at least 1"));
        assert!(FeatureStats::new(usize::MAX).is_err());
        assert!(FeatureStats::new(3).unwrap().mean().is_err());
    }
}
