//! The Fréchet distance between two Gaussians.
//!
//! FID = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2).
//!
//! pytorch-fid takes `scipy.linalg.sqrtm(Σ1 Σ2)` (a Schur decomposition of
//! a non-symmetric matrix), torch-fidelity sums `√` of
//! `numpy.linalg.eigvals(Σ1 Σ2)` (a non-symmetric eigenproblem). Both are
//! slow at d = 2048 and produce complex noise. Here the trace is taken
//! through a *symmetric* eigenproblem (docs/DESIGN.md §4): with Σ1 = L Lᵀ
//! (Cholesky), Σ1 Σ2 = L (Lᵀ Σ2 L) L⁻¹ is similar to M = Lᵀ Σ2 L, which is
//! symmetric positive semidefinite, so its eigenvalues λᵢ are real and
//! tr √(Σ1 Σ2) = Σ √λᵢ. Cost: one Cholesky (faer), two triangular products
//! (faer) and the eigenvalues, no eigenvectors, of a symmetric matrix: a
//! two-stage tridiagonalisation (`super::tridiag`) and implicit QL
//! (`super::eigen`). faer's own symmetric eigensolver reduces in one
//! memory-bound stage and was ~2x slower at d = 2048, which is why that step
//! is written here; every step is checked against faer in the tests.
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
//! error. The result is clamped at 0: the Fréchet distance is a squared
//! Wasserstein distance, never negative, and a tiny negative value is
//! rounding.

use super::eigen::{faer_symmetric_eigenvalues, symmetric_eigenvalues_in_place, Eigensolver};
use super::{err, par, try_zeroed, StatsError};
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef};

/// Relative tolerance of the symmetry check: |Σij − Σji| ≤ tol · max |Σ|.
/// Loose enough for covariances computed in float32, tight enough to catch
/// a matrix that is not a covariance at all.
pub const SYMMETRY_RTOL: f64 = 1e-5;

/// Eigenvalues of Lᵀ Σ2 L below −PSD_RTOL · λ_max mean an input is not
/// positive semidefinite (rounding gives ~1e-13; float32 inputs ~1e-7).
pub const PSD_RTOL: f64 = 1e-4;

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
    pub eigensolver: Eigensolver,
}

/// A validated, exactly symmetric covariance matrix (d × d, contiguous:
/// column-major and row-major alike).
struct Cov {
    name: &'static str,
    data: Vec<f64>,
    d: usize,
    max_diag: f64,
}

impl Cov {
    fn mat(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.data, self.d, self.d)
    }

    fn trace(&self) -> f64 {
        (0..self.d).map(|i| self.data[i * self.d + i]).sum()
    }
}

/// A d × d matrix buffer, fallible allocation (large covariances).
fn square_buffer(d: usize, what: &str) -> Result<Vec<f64>, StatsError> {
    try_zeroed(d * d, what)
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
/// symmetrise it in place, (Σ + Σᵀ) / 2. The pairs (i, j), (j, i) are
/// visited in 64 × 64 tiles so both reads stay in cache and in the TLB; no
/// new d × d buffer (at d = 2048 each fresh 32 MB costs ~10 ms of page faults).
fn check_covariance(name: &'static str, mut s: Vec<f64>, d: usize) -> Result<Cov, StatsError> {
    if s.len() != d * d {
        return err(format!("{name} has {} values, expected {d} x {d} = {}", s.len(), d * d));
    }
    let mut finite = true;
    let mut max_abs = 0.0f64;
    for x in &s {
        finite &= x.is_finite();
        max_abs = max_abs.max(x.abs());
    }
    if !finite {
        let p = s.iter().position(|x| !x.is_finite()).unwrap_or(0);
        return err(format!("{name} has a non-finite value {} at [{}, {}]", s[p], p / d, p % d));
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
    const TILE: usize = 64;
    let mut worst = (0.0f64, 0usize, 0usize);
    for jb in (0..d).step_by(TILE) {
        for ib in (jb..d).step_by(TILE) {
            for i in ib..(ib + TILE).min(d) {
                for j in jb..(jb + TILE).min(d).min(i) {
                    let (a, b) = (s[i * d + j], s[j * d + i]);
                    let diff = (a - b).abs();
                    if diff > worst.0 {
                        worst = (diff, i, j);
                    }
                    let m = 0.5 * (a + b);
                    s[i * d + j] = m;
                    s[j * d + i] = m;
                }
            }
        }
    }
    let tol = SYMMETRY_RTOL * max_abs;
    if worst.0 > tol {
        let (diff, i, j) = worst;
        return err(format!(
            "{name} is not symmetric: |{name}[{i}, {j}] - {name}[{j}, {i}]| = {diff:.3e} exceeds \
             {SYMMETRY_RTOL:e} * max|{name}| = {tol:.3e}"
        ));
    }
    Ok(Cov { name, data: s, d, max_diag })
}

/// Pivots below this are treated as zero (LAPACK `dpstrf`'s default).
fn pivot_tol(c: &Cov) -> f64 {
    c.d as f64 * f64::EPSILON * c.max_diag
}

/// Cholesky factor L (lower, d × d contiguous, upper part zeroed) of a
/// numerically positive definite matrix, or None when a pivot is
/// non-positive or below [`pivot_tol`].
fn cholesky(c: &Cov) -> Option<Vec<f64>> {
    use faer::linalg::cholesky::llt::factor as llt;
    let d = c.d;
    if c.max_diag == 0.0 {
        return None;
    }
    let mut l = c.data.clone();
    let par = par();
    let mut mem = MemBuffer::new(llt::cholesky_in_place_scratch::<f64>(d, par, Default::default()));
    let res = llt::cholesky_in_place(
        MatMut::from_column_major_slice_mut(&mut l, d, d),
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
        let p = l[i * d + i];
        !(p * p > tol)
    }) {
        return None;
    }
    for j in 1..d {
        l[j * d..j * d + j].fill(0.0);
    }
    Some(l)
}

/// Rank-revealing pivoted Cholesky: S (d × r) with S Sᵀ = Σ up to pivots
/// below [`pivot_tol`]. Errors when Σ is clearly indefinite.
fn pivoted_factor(c: &Cov) -> Result<Mat<f64>, StatsError> {
    use faer::linalg::cholesky::llt_pivoting::factor as piv;
    let d = c.d;
    if c.max_diag == 0.0 {
        return Ok(Mat::zeros(d, 0));
    }
    let mut a = c.mat().to_owned();
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
        Err(_) => return err(format!("{} is not positive semidefinite (pivoted Cholesky failed)", c.name)),
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
    let mut resid = c.mat().to_owned();
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
/// lower-triangular Cholesky factor, which halves the work), as an r × r
/// contiguous column-major buffer.
fn congruence(f: MatRef<'_, f64>, sigma: MatRef<'_, f64>, lower: bool) -> Result<Vec<f64>, StatsError> {
    let d = f.nrows();
    let r = f.ncols();
    let par = par();
    let fs = if lower { BlockStructure::TriangularLower } else { BlockStructure::Rectangular };
    let mut w = try_zeroed(d * r, "an intermediate product")?;
    tri_matmul(
        MatMut::from_column_major_slice_mut(&mut w, d, r),
        BlockStructure::Rectangular,
        Accum::Replace,
        sigma,
        BlockStructure::Rectangular,
        f,
        fs,
        1.0,
        par,
    );
    let mut m = square_buffer(r, "the congruence product")?;
    tri_matmul(
        MatMut::from_column_major_slice_mut(&mut m, r, r),
        BlockStructure::TriangularLower,
        Accum::Replace,
        f.transpose(),
        if lower { BlockStructure::TriangularUpper } else { BlockStructure::Rectangular },
        MatRef::from_column_major_slice(&w, d, r),
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    Ok(m)
}

/// Σ √λ over the eigenvalues of the symmetric positive semidefinite M,
/// treating rounding-level negative eigenvalues as 0. `blame` names the
/// input that must be at fault when M is clearly indefinite.
fn trace_sqrt_psd(m: Vec<f64>, n: usize, blame: &str, solver: Eigensolver) -> Result<f64, StatsError> {
    let ev = match solver {
        Eigensolver::TwoStage => symmetric_eigenvalues_in_place(m, n)?,
        Eigensolver::Faer => faer_symmetric_eigenvalues(&m, n)?,
    };
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

fn trace_sqrt_product(c1: &Cov, c2: &Cov, solver: Eigensolver) -> Result<(f64, TraceSqrtMethod), StatsError> {
    let d = c1.d;
    for (first, second, method) in
        [(c1, c2, TraceSqrtMethod::CholeskySigma1), (c2, c1, TraceSqrtMethod::CholeskySigma2)]
    {
        if let Some(l) = cholesky(first) {
            let m = congruence(MatRef::from_column_major_slice(&l, d, d), second.mat(), true)?;
            drop(l);
            return Ok((trace_sqrt_psd(m, d, second.name, solver)?, method));
        }
    }
    let s1 = pivoted_factor(c1)?;
    let s2 = pivoted_factor(c2)?;
    let (s, other) = if s1.ncols() <= s2.ncols() { (s1, c2) } else { (s2, c1) };
    let rank = s.ncols();
    let m = congruence(s.as_ref(), other.mat(), false)?;
    Ok((trace_sqrt_psd(m, rank, other.name, solver)?, TraceSqrtMethod::PivotedCholesky { rank }))
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
    frechet_distance_with(mu1, sigma1.to_vec(), mu2, sigma2.to_vec(), Eigensolver::default())
}

/// [`frechet_distance_detailed`] taking the covariances by value: they are
/// symmetrised and used in place (saves two d × d copies), with a choice
/// of [`Eigensolver`].
pub fn frechet_distance_with(
    mu1: &[f64],
    sigma1: Vec<f64>,
    mu2: &[f64],
    sigma2: Vec<f64>,
    solver: Eigensolver,
) -> Result<Frechet, StatsError> {
    let d = mu1.len();
    if d == 0 {
        return err("mu1 is empty: the features need at least one dimension");
    }
    check_vector("mu1", mu1, d)?;
    check_vector("mu2", mu2, d)?;
    let (c1, c2) =
        rayon::join(|| check_covariance("sigma1", sigma1, d), || check_covariance("sigma2", sigma2, d));
    let (c1, c2) = (c1?, c2?);
    let mean_term: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    let (trace_sqrt, method) = trace_sqrt_product(&c1, &c2, solver)?;
    let distance = (mean_term + c1.trace() + c2.trace() - 2.0 * trace_sqrt).max(0.0);
    Ok(Frechet { distance, mean_term, trace_sqrt, method, eigensolver: solver })
}

/// The Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2).
pub fn frechet_distance(mu1: &[f64], sigma1: &[f64], mu2: &[f64], sigma2: &[f64]) -> Result<f64, StatsError> {
    frechet_distance_detailed(mu1, sigma1, mu2, sigma2).map(|f| f.distance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_util::{max_abs_diff, two_pass, Rng};

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
        let c1 = check_covariance("sigma1", s1.clone(), d).unwrap();
        let c3 = check_covariance("sigma2", s3.clone(), d).unwrap();
        let sf = pivoted_factor(&c1).unwrap();
        let m = congruence(sf.as_ref(), c3.mat(), false).unwrap();
        let via_pivoted = trace_sqrt_psd(m, sf.ncols(), "sigma2", Eigensolver::TwoStage).unwrap();
        assert!(
            (via_pivoted - g.trace_sqrt).abs() < 1e-9 * g.trace_sqrt,
            "{via_pivoted} vs {}",
            g.trace_sqrt
        );
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
        let c = check_covariance("sigma1", s.clone(), d).unwrap();
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
        assert!(msg(frechet_distance(&mu, &eye, &mu, &nan))
            .contains("sigma2 has a non-finite value NaN at [1, 2]"));
        assert!(msg(frechet_distance(&mu, &eye, &[0.0, f64::INFINITY, 0.0], &eye))
            .contains("mu2 has a non-finite"));
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

    /// The whole distance through faer's eigensolver equals the default
    /// two-stage one: full-rank pairs (Cholesky of Σ1), Σ1 singular (Σ2's
    /// Cholesky) and both singular (pivoted Cholesky).
    #[test]
    fn both_eigensolvers_give_the_same_distance_on_every_path() {
        let mut rng = Rng(41);
        let mut paths = Vec::new();
        for (n1, n2, d) in [(400usize, 300usize, 40usize), (20, 300, 40), (20, 30, 40), (600, 500, 130)] {
            let (m1, s1) = random_cov(&mut rng, n1, d, 0.5);
            let (m2, s2) = random_cov(&mut rng, n2, d, -0.25);
            let a = frechet_distance_with(&m1, s1.clone(), &m2, s2.clone(), Eigensolver::TwoStage).unwrap();
            let b = frechet_distance_with(&m1, s1, &m2, s2, Eigensolver::Faer).unwrap();
            assert_eq!(a.method, b.method);
            paths.push(a.method.name());
            assert_eq!((a.eigensolver, b.eigensolver), (Eigensolver::TwoStage, Eigensolver::Faer));
            let rel = (a.trace_sqrt - b.trace_sqrt).abs() / a.trace_sqrt.abs().max(1e-300);
            assert!(rel < 1e-11, "n1={n1} n2={n2} d={d} {:?}: {rel:e}", a.method);
            assert!((a.distance - b.distance).abs() <= 1e-9 * a.distance.max(1.0));
        }
        assert_eq!(paths, ["cholesky-sigma1", "cholesky-sigma2", "pivoted-cholesky", "cholesky-sigma1"]);
        assert_eq!(Eigensolver::parse("faer").unwrap(), Eigensolver::Faer);
        assert_eq!(Eigensolver::parse("two-stage").unwrap(), Eigensolver::TwoStage);
        let e = Eigensolver::parse("lapack").unwrap_err();
        assert!(e.0.contains("'two-stage' or 'faer'"), "{e}");
    }
}
