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
//! through a *symmetric* eigenproblem (docs/DESIGN.md §4): with Σ1 = L Lᵀ
//! (Cholesky), Σ1 Σ2 = L (Lᵀ Σ2 L) L⁻¹ is similar to M = Lᵀ Σ2 L, which is
//! symmetric positive semidefinite, so its eigenvalues λᵢ are real and
//! tr √(Σ1 Σ2) = Σ √λᵢ. Cost: one Cholesky (faer), two triangular products
//! (faer) and the eigenvalues, no eigenvectors, of a symmetric matrix: a
//! two-stage tridiagonalisation (`tridiag`) and implicit QL
//! (`ql_implicit`). faer's own symmetric eigensolver reduces in one
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
//!
//! # Accumulation
//!
//! [`FeatureStats`] keeps the count, the mean and M2 = Σ (x − μ)(x − μ)ᵀ in
//! f64. Each chunk of rows is centred on its own mean and merged by Chan et
//! al.'s pairwise rule, M2 = M2_a + M2_b + δ δᵀ n_a n_b / n, so no raw
//! second moments are formed (no cancellation when the mean is large next
//! to the spread) and two accumulators merge exactly ([`FeatureStats::merge`]).
//! Large batches are split over the threads, one shard each.
//!
//! On x86-64 with AVX2 and FMA, each shard's part of a batch is one group,
//! added by `crate::gram`'s blocked kernel. The kernel converts and centres
//! while it packs, and it takes the merge's rank-1 term as one more row,
//! √(n_a n_b / n) δ, so a batch costs one pass over M2, not two. M2 is then
//! kept in the kernel's tiled layout. Elsewhere, chunks of rows are
//! transposed, centred and multiplied by faer, and M2 is dense. The tests
//! run both paths against each other.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;
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

/// Tests set this to run `FeatureStats` through the faer fallback (the path
/// taken on CPUs without AVX2 + FMA) on a CPU that has them.
#[cfg(test)]
static FORCE_FAER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn force_faer() -> bool {
    #[cfg(test)]
    {
        FORCE_FAER.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(test))]
    {
        false
    }
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

// ---------------------------------------------------------------------------
// FeatureStats
// ---------------------------------------------------------------------------

/// Rows per shard below which a batch is not split over the threads.
const MIN_SHARD_ROWS: usize = 256;

/// Streaming mean and covariance of d-dimensional features, in f64.
///
/// Large batches are split into contiguous row ranges, one per worker
/// thread, each accumulated into its own `Moments` shard by a
/// single-threaded product; the shards are merged (exactly, by the pairwise
/// rule) when the statistics are read. Coarse-grained threads beat the matrix
/// product's own fine-grained ones here: no synchronisation inside the
/// product, and on a busy machine no thread waits for a descheduled one.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    dim: usize,
    shards: Vec<Moments>,
}

/// How a shard stores M2's lower triangle.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// d × d column-major (the faer path, CPUs without AVX2 + FMA).
    Dense(usize),
    /// `crate::gram`'s tiles (the AVX2 Gram kernel's path).
    Tiled(crate::gram::Tiles),
}

impl Layout {
    /// The layout this CPU's update path writes.
    fn for_dim(d: usize) -> Layout {
        if crate::gram::available() && !force_faer() {
            Layout::Tiled(crate::gram::Tiles::new(d))
        } else {
            Layout::Dense(d)
        }
    }

    fn len(&self) -> usize {
        match self {
            Layout::Dense(d) => d * d,
            Layout::Tiled(t) => t.len(),
        }
    }

    /// Offset of element (i, j), i ≥ j.
    fn index(&self, i: usize, j: usize) -> usize {
        match self {
            Layout::Dense(d) => j * d + i,
            Layout::Tiled(t) => t.index(i, j),
        }
    }

    /// [`Layout::for_each_lower`] restricted to columns NR·q .. NR·(q + 1).
    fn for_each_lower_in_block(&self, q: usize, mut f: impl FnMut(usize, usize, usize)) {
        match self {
            Layout::Dense(d) => {
                for j in q * crate::gram::NR..((q + 1) * crate::gram::NR).min(*d) {
                    for i in j..*d {
                        f(i, j, j * d + i);
                    }
                }
            }
            Layout::Tiled(t) => t.for_each_lower_in_column(q, f),
        }
    }

    /// Calls f(i, j, offset) for every i ≥ j, in memory order.
    fn for_each_lower(&self, mut f: impl FnMut(usize, usize, usize)) {
        let d = match self {
            Layout::Dense(d) => *d,
            Layout::Tiled(t) => t.dim(),
        };
        for q in 0..d.div_ceil(crate::gram::NR) {
            self.for_each_lower_in_block(q, &mut f);
        }
    }
}

/// Count, mean and M2 = Σ (x − mean)(x − mean)ᵀ of one group of samples.
#[derive(Debug, Clone)]
struct Moments {
    count: u64,
    mean: Vec<f64>,
    /// The lower triangle, stored as `layout` says; empty until first used.
    m2: Vec<f64>,
    layout: Layout,
    /// The Gram kernel's packing buffers, reused from batch to batch.
    scratch: crate::gram::Scratch,
}

impl Moments {
    fn empty(d: usize, layout: &Layout) -> Moments {
        Moments { count: 0, mean: vec![0.0; d], m2: Vec::new(), layout: layout.clone(), scratch: Default::default() }
    }

    fn ensure_m2(&mut self, d: usize) -> Result<(), StatsError> {
        if self.m2.is_empty() {
            self.m2 = try_zeroed(self.layout.len(), &format!("a {d} x {d} covariance accumulator"))?;
        }
        Ok(())
    }

    /// Add validated rows (row-major, `d` values each) whose column means
    /// are `bmean`, as one group, through the AVX2 Gram kernel: the merge's
    /// rank-1 term w δ δᵀ goes in as one more row, √w δ, of the product.
    fn add_group_gram<T: Copy + Into<f64> + Sync>(&mut self, d: usize, data: &[T], bmean: &[f64], parallel: bool) -> Result<(), StatsError> {
        let nb = (data.len() / d) as u64;
        if nb == 0 {
            return Ok(());
        }
        self.ensure_m2(d)?;
        let (na, n) = (self.count, self.count + nb);
        let delta: Vec<f64> = bmean.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        let root_w = ((na as f64) * (nb as f64) / (n as f64)).sqrt();
        let extra: Option<Vec<f64>> = (na > 0).then(|| delta.iter().map(|v| root_w * v).collect());
        let Layout::Tiled(tiles) = &self.layout else {
            return err("internal error: the Gram kernel needs the tiled layout");
        };
        let blocking = crate::gram::Blocking::default();
        crate::gram::syrk_centred(data, d, bmean, extra.as_deref(), &mut self.m2, tiles, &mut self.scratch, parallel, blocking);
        self.advance(nb, &delta);
        Ok(())
    }

    /// Count and mean after a group of `nb` samples whose mean is
    /// `delta` away from the current one.
    fn advance(&mut self, nb: u64, delta: &[f64]) {
        let n = self.count + nb;
        let frac = nb as f64 / n as f64;
        for (m, dl) in self.mean.iter_mut().zip(delta) {
            *m += frac * dl;
        }
        self.count = n;
    }

    /// Add validated rows, whose column means are `mean`, by this shard's
    /// path: the Gram kernel (tiled M2) or faer (dense M2). `parallel`: the
    /// product may use the whole thread pool.
    fn add_part<T: Copy + Into<f64> + Sync>(&mut self, d: usize, rows: &[T], mean: &[f64], parallel: bool) -> Result<(), StatsError> {
        match self.layout {
            Layout::Tiled(_) => self.add_group_gram(d, rows, mean, parallel),
            Layout::Dense(_) => self.add_rows(d, rows, if parallel { par() } else { Par::Seq }),
        }
    }

    /// Add validated rows (row-major, `d` values each) chunk by chunk.
    fn add_rows<T: Copy + Into<f64> + Sync>(&mut self, d: usize, data: &[T], par: Par) -> Result<(), StatsError> {
        let rows = data.len() / d;
        if rows == 0 {
            return Ok(());
        }
        self.ensure_m2(d)?;
        if self.layout != Layout::Dense(d) {
            return err("internal error: the faer path needs the dense layout");
        }
        // Equal chunks of at most CHUNK_ROWS rows (no small leftover chunk).
        let chunk = rows.div_ceil(rows.div_ceil(CHUNK_ROWS));
        let mut buf = try_zeroed(chunk * d, "the batch scratch")?;
        for block in data.chunks(chunk * d) {
            let nb = block.len() / d;
            let bmean = column_means(block, d);
            // X (nb × d, column-major: one feature's values contiguous), centred.
            // faer's product runs fastest with both operands contiguous along
            // the summed dimension: ~2.4x the row-per-sample layout here.
            transpose_centred(block, nb, d, &bmean, &mut buf[..block.len()]);
            let x = MatRef::from_column_major_slice(&buf[..block.len()], nb, d);
            let m2 = MatMut::from_column_major_slice_mut(&mut self.m2, d, d);
            tri_matmul(
                m2,
                BlockStructure::TriangularLower,
                Accum::Add,
                x.transpose(),
                BlockStructure::Rectangular,
                x,
                BlockStructure::Rectangular,
                1.0,
                par,
            );
            self.merge_group(nb as u64, &bmean, None);
        }
        Ok(())
    }

    /// Fold the count and mean of a group of `nb` samples (whose own M2 is
    /// `other`'s, or already added to `self.m2` when None) into the state:
    /// M2 += δ δᵀ n_a n_b / n.
    fn merge_group(&mut self, nb: u64, bmean: &[f64], other: Option<&Moments>) {
        let na = self.count;
        let w = (na as f64) * (nb as f64) / ((na + nb) as f64);
        let delta: Vec<f64> = bmean.iter().zip(&self.mean).map(|(b, a)| b - a).collect();
        let Moments { m2, layout, .. } = self;
        match other {
            // The first group (w = 0) has nothing to add.
            None if na == 0 => {}
            None => layout.for_each_lower(|i, j, at| m2[at] += w * delta[j] * delta[i]),
            Some(o) => layout.for_each_lower(|i, j, at| m2[at] += w * delta[j] * delta[i] + o.m2[o.layout.index(i, j)]),
        }
        self.advance(nb, &delta);
    }

    fn merge(&mut self, d: usize, other: &Moments) -> Result<(), StatsError> {
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            self.clone_from(other);
            return Ok(());
        }
        self.ensure_m2(d)?;
        self.merge_group(other.count, &other.mean, Some(other));
        Ok(())
    }
}

/// Column means of `rows` (row-major, `d` wide), summed in f64.
fn column_means<T: Copy + Into<f64>>(rows: &[T], d: usize) -> Vec<f64> {
    let mut sum = vec![0.0f64; d];
    for row in rows.chunks_exact(d) {
        for (m, x) in sum.iter_mut().zip(row) {
            *m += (*x).into();
        }
    }
    let inv = 1.0 / (rows.len() / d) as f64;
    sum.iter_mut().for_each(|m| *m *= inv);
    sum
}

/// An error naming the first non-finite value of `data`, found when one of
/// the shards' column `means` is not finite; a batch without NaN or
/// infinity that gets there has overflowed.
fn check_finite<T: Copy + Into<f64>>(data: &[T], d: usize, means: &[Vec<f64>]) -> Result<(), StatsError> {
    if means.iter().flatten().all(|m| m.is_finite()) {
        return Ok(());
    }
    if let Some(pos) = data.iter().position(|v| !(*v).into().is_finite()) {
        let v: f64 = data[pos].into();
        return err(format!("batch has a non-finite value {v} at row {}, column {}", pos / d, pos % d));
    }
    err("batch values are too large: their sum overflows float64")
}

/// x (nb × d, column-major) = rows of `block` (nb × d, row-major) minus
/// `mean`, in f64; 16 × 16 tiles so reads and writes both stay in cache.
fn transpose_centred<T: Copy + Into<f64>>(block: &[T], nb: usize, d: usize, mean: &[f64], x: &mut [f64]) {
    const TILE: usize = 16;
    for i0 in (0..nb).step_by(TILE) {
        let i1 = (i0 + TILE).min(nb);
        for j0 in (0..d).step_by(TILE) {
            let j1 = (j0 + TILE).min(d);
            for j in j0..j1 {
                let m = mean[j];
                let dst = &mut x[j * nb + i0..j * nb + i1];
                for (k, out) in dst.iter_mut().enumerate() {
                    *out = block[(i0 + k) * d + j].into() - m;
                }
            }
        }
    }
}

impl FeatureStats {
    /// An empty accumulator for `dim`-dimensional features.
    pub fn new(dim: usize) -> Result<Self, StatsError> {
        if dim == 0 {
            return err("dim must be at least 1");
        }
        if dim.checked_mul(dim).is_none() {
            return err(format!("dim {dim} is too large: dim * dim overflows"));
        }
        let threads = rayon::current_num_threads().clamp(1, 8);
        let mut shards = vec![Moments::empty(dim, &Layout::for_dim(dim)); threads];
        shards[0].ensure_m2(dim)?; // fail early when even one accumulator does not fit
        Ok(FeatureStats { dim, shards })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of samples seen so far.
    pub fn count(&self) -> u64 {
        self.shards.iter().map(|s| s.count).sum()
    }

    /// Add a batch of samples: `data` holds `data.len() / dim` rows of `dim`
    /// values each, row-major. Non-finite values are rejected before the
    /// state changes; an empty batch is a no-op.
    pub fn update<T: Copy + Into<f64> + Sync>(&mut self, data: &[T]) -> Result<(), StatsError> {
        let d = self.dim;
        if data.len() % d != 0 {
            return err(format!(
                "batch holds {} values, which is not a whole number of rows of dim {d}",
                data.len()
            ));
        }
        let rows = data.len() / d;
        if rows == 0 {
            return Ok(());
        }
        let t = self.shards.len().min(rows / MIN_SHARD_ROWS).max(1);
        let part = |k: usize| &data[(rows * k / t) * d..(rows * (k + 1) / t) * d];
        // Column means of each shard's rows, in parallel; a non-finite mean
        // is how a NaN or infinity shows itself, before any state changes.
        let mut means: Vec<Vec<f64>> = vec![Vec::new(); t];
        rayon::scope(|sc| {
            for (k, m) in means.iter_mut().enumerate() {
                let rows = part(k);
                sc.spawn(move |_| *m = column_means(rows, d));
            }
        });
        check_finite(data, d, &means)?;
        // Every accumulator first, so that a failed allocation changes nothing.
        for shard in &mut self.shards[..t] {
            shard.ensure_m2(d)?;
        }
        if t == 1 {
            return self.shards[0].add_part(d, data, &means[0], true);
        }
        let mut results: Vec<Result<(), StatsError>> = vec![Ok(()); t];
        rayon::scope(|sc| {
            for (k, ((shard, res), mean)) in self.shards[..t].iter_mut().zip(results.iter_mut()).zip(&means).enumerate() {
                let rows = part(k);
                sc.spawn(move |_| *res = shard.add_part(d, rows, mean, false));
            }
        });
        results.into_iter().collect()
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
        for shard in &other.shards {
            self.shards[0].merge(self.dim, shard)?;
        }
        Ok(())
    }

    /// The mean of the samples seen (needs at least one).
    pub fn mean(&self) -> Result<Vec<f64>, StatsError> {
        if self.count() == 0 {
            return err("no samples yet: the mean needs at least 1");
        }
        Ok(self.combined_mean())
    }

    /// The unbiased covariance (divided by n − 1, as `numpy.cov`), a full
    /// symmetric d × d matrix in a flat vector (row- and column-major alike).
    ///
    /// The shards combine in one pass: M2 = Σ_s M2_s + Σ_s n_s δ_s δ_sᵀ with
    /// δ_s = μ_s − μ (the pairwise rule, all groups at once).
    pub fn covariance(&self) -> Result<Vec<f64>, StatsError> {
        let d = self.dim;
        let count = self.count();
        if count < 2 {
            return err(format!("{count} sample(s) so far: the unbiased covariance needs at least 2"));
        }
        let mean = self.combined_mean();
        let live: Vec<(&Moments, f64, Vec<f64>)> = self
            .shards
            .iter()
            .filter(|s| s.count > 0)
            .map(|s| (s, s.count as f64, s.mean.iter().zip(&mean).map(|(a, b)| a - b).collect()))
            .collect();
        let layout = &live[0].0.layout;
        let same = live.iter().all(|(s, ..)| s.layout == *layout);
        let scale = 1.0 / (count - 1) as f64;
        let mut out = try_zeroed(d * d, "the covariance")?;
        let dst = crate::gram::SharedOut(out.as_mut_ptr());
        // One pass, in parallel over blocks of NR columns: each element
        // (i ≥ j) is summed over the shards, scaled, and written to both
        // (i, j) and (j, i) by the one task that owns column block j / NR.
        (0..d.div_ceil(crate::gram::NR)).into_par_iter().for_each(|q| {
            layout.for_each_lower_in_block(q, |i, j, at| {
                let mut v = 0.0;
                for (s, w, delta) in &live {
                    let a = if same { at } else { s.layout.index(i, j) };
                    v += s.m2[a] + w * delta[j] * delta[i];
                }
                v *= scale;
                // SAFETY: i, j < d, and only this task writes (i, j) and (j, i).
                unsafe {
                    *dst.get().add(j * d + i) = v;
                    *dst.get().add(i * d + j) = v;
                }
            });
        });
        Ok(out)
    }

    /// The count-weighted mean of the shards' means.
    fn combined_mean(&self) -> Vec<f64> {
        let n = self.count() as f64;
        let mut mean = vec![0.0; self.dim];
        for shard in self.shards.iter().filter(|s| s.count > 0) {
            let w = shard.count as f64 / n;
            for (m, x) in mean.iter_mut().zip(&shard.mean) {
                *m += w * x;
            }
        }
        mean
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

/// Which routine takes the eigenvalues of the symmetric Lᵀ Σ2 L.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eigensolver {
    /// The two-stage tridiagonalisation ([`tridiag`]) and implicit QL of
    /// this module (the default: at d = 2048 the whole distance took 2.0 s
    /// against faer's 2.9-3.6 s on one AVX2 EPYC core, and about half of
    /// faer's time on the AVX-512 Xeon).
    #[default]
    TwoStage,
    /// faer's `self_adjoint_eigenvalues` (one-stage Householder reduction,
    /// then faer's tridiagonal QR): the maintained crate's own routine, for
    /// users who prefer it and as an independent cross-check.
    Faer,
}

impl Eigensolver {
    pub fn name(&self) -> &'static str {
        match self {
            Eigensolver::TwoStage => "two-stage",
            Eigensolver::Faer => "faer",
        }
    }

    /// Parse "two-stage" or "faer".
    pub fn parse(name: &str) -> Result<Self, StatsError> {
        match name {
            "two-stage" => Ok(Eigensolver::TwoStage),
            "faer" => Ok(Eigensolver::Faer),
            _ => err(format!("eigensolver must be 'two-stage' or 'faer', got {name:?}")),
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

/// Eigenvalues (ascending) of a symmetric matrix given by its lower triangle:
/// [`tridiag::tridiagonalize`], then faer's implicit QR on the tridiagonal.
#[cfg(test)]
fn symmetric_eigenvalues(m: MatRef<'_, f64>) -> Result<Vec<f64>, StatsError> {
    let n = m.nrows();
    let mut a = Vec::with_capacity(n * n);
    for j in 0..n {
        a.extend(m.col(j).iter().copied());
    }
    symmetric_eigenvalues_in_place(a, n)
}

/// The same for an n × n contiguous column-major buffer, overwritten.
fn symmetric_eigenvalues_in_place(mut a: Vec<f64>, n: usize) -> Result<Vec<f64>, StatsError> {
    let (diag, offdiag) = tridiag::tridiagonalize(&mut a, n);
    drop(a);
    tridiagonal_eigenvalues(&diag, &offdiag)
}

/// Eigenvalues (ascending) of the symmetric tridiagonal matrix with the
/// given diagonal and first subdiagonal.
///
/// Implicit QL with Wilkinson shifts, eigenvalues only (EISPACK's `tql1`
/// scheme): O(n²) and a few times faster here than faer's tridiagonal QR,
/// whose deflation scan computes a `hypot` per entry per iteration. The
/// matrix is scaled to max |entry| = 1 first, so `√(f² + g²)` cannot
/// overflow. Should an eigenvalue need more than 60 sweeps (not seen in
/// practice), faer's QR algorithm takes over.
fn tridiagonal_eigenvalues(diag: &[f64], offdiag: &[f64]) -> Result<Vec<f64>, StatsError> {
    let n = diag.len();
    let scale = diag.iter().chain(offdiag).fold(0.0f64, |m, v| m.max(v.abs()));
    if n == 0 || scale == 0.0 {
        return Ok(vec![0.0; n]);
    }
    let inv = 1.0 / scale;
    let mut d: Vec<f64> = diag.iter().map(|v| v * inv).collect();
    let mut e: Vec<f64> = offdiag.iter().map(|v| v * inv).collect();
    e.resize(n, 0.0);
    if !ql_implicit(&mut d, &mut e) {
        return tridiagonal_eigenvalues_faer(diag, offdiag);
    }
    let mut v: Vec<f64> = d.iter().map(|x| x * scale).collect();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// In place: d (diagonal) becomes the eigenvalues; e (subdiagonal, e[i]
/// couples i and i + 1, e[n - 1] = 0) is destroyed. False if it fails to converge.
fn ql_implicit(d: &mut [f64], e: &mut [f64]) -> bool {
    let n = d.len();
    let eps = f64::EPSILON;
    let tiny = f64::MIN_POSITIVE / eps;
    for l in 0..n {
        let mut sweeps = 0;
        loop {
            // The first negligible subdiagonal entry at or after l.
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= eps * dd || e[m].abs() < tiny {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            sweeps += 1;
            if sweeps > 60 {
                return false;
            }
            // Wilkinson shift from the leading 2 x 2 block.
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut i = m;
            let mut underflow = false;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = (f * f + g * g).sqrt();
                e[i + 1] = r;
                if r == 0.0 {
                    // Recover from underflow: deflate and restart the sweep.
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                let inv = 1.0 / r;
                s = f * inv;
                c = g * inv;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    true
}

/// Eigenvalues (ascending) of the symmetric n × n matrix whose lower
/// triangle is in `a` (column-major), by faer's `self_adjoint_eigenvalues`.
fn faer_symmetric_eigenvalues(a: &[f64], n: usize) -> Result<Vec<f64>, StatsError> {
    let mut v = MatRef::from_column_major_slice(a, n, n)
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .map_err(|e| StatsError(format!("symmetric eigenvalue iteration did not converge: {e:?}")))?;
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// faer's tridiagonal QR (eigenvalues only): the fallback of [`ql_implicit`].
fn tridiagonal_eigenvalues_faer(diag: &[f64], offdiag: &[f64]) -> Result<Vec<f64>, StatsError> {
    use faer::linalg::evd;
    let n = diag.len();
    let mut sub = offdiag.to_vec();
    sub.resize(n, 0.0);
    let mut s = faer::diag::Diag::<f64>::zeros(n);
    let req =
        evd::self_adjoint_evd_scratch::<f64>(n, evd::ComputeEigenvectors::No, Par::Seq, Default::default());
    let mut mem = MemBuffer::new(req);
    evd::tridiagonal_self_adjoint_evd(
        faer::diag::DiagRef::from_slice(diag),
        faer::diag::DiagRef::from_slice(&sub),
        s.as_mut(),
        None,
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| StatsError(format!("symmetric eigenvalue iteration did not converge: {e:?}")))?;
    let mut v: Vec<f64> = s.column_vector().iter().copied().collect();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// Two-stage Householder tridiagonalisation, Qᵀ A Q = T, for the
/// eigenvalues of Lᵀ Σ2 L (the scheme of LAPACK's `dsytrd_2stage`).
///
/// Why not faer's `self_adjoint_evd`: it reduces with a one-stage sweep
/// that reads (and writes) the whole trailing matrix for every column, so
/// at d = 2048 it streams ~20 GB through the caches and runs at memory
/// speed. Here stage 1 reduces A to a band of width [`BAND`] with block
/// reflectors whose two-sided application is two matrix products per
/// panel (faer, all cores, compute bound); stage 2 chases the band down to
/// tridiagonal with reflectors of length ≤ [`BAND`] on a compact copy of the
/// band that fits in L2. Eigenvalues only: no Q is accumulated. The tests
/// check the eigenvalues against faer's.
mod tridiag {
    use super::*;

    /// Bandwidth of the intermediate band matrix (stage 1 panel width).
    pub(super) const BAND: usize = 32;

    /// Reduce the symmetric n × n matrix `a` (column-major, leading dimension
    /// n, lower triangle referenced; overwritten) to tridiagonal form.
    /// Returns (diagonal, subdiagonal).
    pub(super) fn tridiagonalize(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
        assert_eq!(a.len(), n * n);
        if n == 0 {
            return (Vec::new(), Vec::new());
        }
        let b = BAND.min(n - 1).max(1);
        reduce_to_band(a, n, b);
        let mut band = Band::from_dense(a, n, b);
        band.chase_to_tridiagonal();
        band.tridiagonal()
    }

    /// Overwrite x[1..] with the Householder vector's tail (its head is 1)
    /// and return (β, τ): (I − τ v vᵀ) x = β e1. x[0] is left as it was.
    /// Scaled norm: no overflow for any finite input.
    pub(super) fn householder(x: &mut [f64]) -> (f64, f64) {
        let alpha = x[0];
        let tail = &mut x[1..];
        let scale = tail.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if scale == 0.0 {
            return (alpha, 0.0);
        }
        let ssq: f64 = tail.iter().map(|v| (v / scale) * (v / scale)).sum();
        let xnorm = scale * ssq.sqrt();
        let beta = -alpha.hypot(xnorm).copysign(alpha);
        let tau = (beta - alpha) / beta;
        let inv = 1.0 / (alpha - beta);
        tail.iter_mut().for_each(|v| *v *= inv);
        (beta, tau)
    }

    /// Stage 1: Qᵀ A Q has lower bandwidth b. For each panel of b columns,
    /// a QR of the block below the band gives Q = I − V T Vᵀ, and the
    /// trailing matrix gets A ← A − Y Vᵀ − V Yᵀ with X = A V T,
    /// Y = X − ½ V (Tᵀ Vᵀ X): one symmetric product, one rank-2b update.
    pub(super) fn reduce_to_band(a: &mut [f64], n: usize, b: usize) {
        let par = par();
        let mut gram_scratch = crate::gram::Scratch::default();
        let mut k = 0;
        while k + b + 1 < n {
            let r0 = k + b; // first row below the band in this panel
            let m = n - r0;
            let nb = b.min(m);
            // QR of the panel A[r0.., k..k+b], unblocked (it is m × b, in cache).
            let mut taus = vec![0.0; nb];
            for c in 0..nb {
                let head = (k + c) * n + r0 + c;
                let (beta, tau) = householder(&mut a[head..(k + c) * n + n]);
                taus[c] = tau;
                if tau != 0.0 {
                    a[head] = 1.0;
                    for q in c + 1..b {
                        let (left, right) = a.split_at_mut((k + q) * n);
                        let v = &left[head..(k + c) * n + n];
                        let target = &mut right[r0 + c..n];
                        let s = dot(v, target);
                        axpy(-tau * s, v, target);
                    }
                }
                a[head] = beta;
            }
            // V (unit lower trapezoidal) out of the panel, which becomes R.
            let mut v = Mat::<f64>::zeros(m, nb);
            for c in 0..nb {
                let col = &mut a[(k + c) * n + r0..(k + c) * n + n];
                v[(c, c)] = 1.0;
                for r in c + 1..m {
                    v[(r, c)] = col[r];
                    col[r] = 0.0;
                }
            }
            // T, upper triangular: T[c, c] = τ_c, T[..c, c] = −τ_c T[..c, ..c] V[:, ..c]ᵀ v_c.
            let mut gram = Mat::<f64>::zeros(nb, nb);
            faer::linalg::matmul::matmul(
                gram.as_mut(),
                Accum::Replace,
                v.transpose(),
                v.as_ref(),
                1.0,
                Par::Seq,
            );
            let mut t = Mat::<f64>::zeros(nb, nb);
            for c in 0..nb {
                for i in 0..c {
                    let mut acc = 0.0;
                    for j in i..c {
                        acc += t[(i, j)] * gram[(j, c)];
                    }
                    t[(i, c)] = -taus[c] * acc;
                }
                t[(c, c)] = taus[c];
            }
            let a22 = MatRef::from_column_major_slice_with_stride(&a[r0 * n + r0..], m, m, n);
            // X = A22 V (lower triangle only: tril(A) V + strict_tril(A)ᵀ V), then X T.
            let mut av = Mat::<f64>::zeros(m, nb);
            tri_matmul(
                av.as_mut(),
                BlockStructure::Rectangular,
                Accum::Replace,
                a22,
                BlockStructure::TriangularLower,
                v.as_ref(),
                BlockStructure::Rectangular,
                1.0,
                par,
            );
            tri_matmul(
                av.as_mut(),
                BlockStructure::Rectangular,
                Accum::Add,
                a22.transpose(),
                BlockStructure::StrictTriangularUpper,
                v.as_ref(),
                BlockStructure::Rectangular,
                1.0,
                par,
            );
            let mut x = Mat::<f64>::zeros(m, nb);
            tri_matmul(
                x.as_mut(),
                BlockStructure::Rectangular,
                Accum::Replace,
                av.as_ref(),
                BlockStructure::Rectangular,
                t.as_ref(),
                BlockStructure::TriangularUpper,
                1.0,
                par,
            );
            // Y = X − ½ V Tᵀ (Vᵀ X).
            let mut vtx = Mat::<f64>::zeros(nb, nb);
            faer::linalg::matmul::matmul(vtx.as_mut(), Accum::Replace, v.transpose(), x.as_ref(), 1.0, par);
            let mut wm = Mat::<f64>::zeros(nb, nb);
            tri_matmul(
                wm.as_mut(),
                BlockStructure::Rectangular,
                Accum::Replace,
                t.transpose(),
                BlockStructure::TriangularLower,
                vtx.as_ref(),
                BlockStructure::Rectangular,
                1.0,
                Par::Seq,
            );
            faer::linalg::matmul::matmul(x.as_mut(), Accum::Add, v.as_ref(), wm.as_ref(), -0.5, par);
            // A22 −= [V Y] [Y V]ᵀ, lower triangle: operands m × 2b, stride m.
            let stack = |first: &Mat<f64>, second: &Mat<f64>| -> Vec<f64> {
                let mut out = Vec::with_capacity(2 * nb * m);
                for mat in [first, second] {
                    (0..nb).for_each(|c| out.extend_from_slice(mat.col_as_slice(c)));
                }
                out
            };
            let (vy, yv) = (stack(&v, &x), stack(&x, &v));
            if crate::gram::available() {
                // The Gram kernel's update where it runs.
                let a22 = &mut a[r0 * n + r0..];
                crate::gram::lower_update(&vy, &yv, m, -1.0, a22, n, &mut gram_scratch, true);
            } else {
                let a22 = MatMut::from_column_major_slice_with_stride_mut(&mut a[r0 * n + r0..], m, m, n);
                tri_matmul(
                    a22,
                    BlockStructure::TriangularLower,
                    Accum::Add,
                    MatRef::from_column_major_slice(&vy, m, 2 * nb),
                    BlockStructure::Rectangular,
                    MatRef::from_column_major_slice(&yv, m, 2 * nb).transpose(),
                    BlockStructure::Rectangular,
                    -1.0,
                    par,
                );
            }
            k += b;
        }
    }

    /// A symmetric band matrix, lower part, compact: column j holds rows
    /// j ..= j + 2b − 1 (the band of width b plus room for the bulges).
    #[derive(Clone)]
    pub(super) struct Band {
        n: usize,
        b: usize,
        ld: usize,
        data: Vec<f64>,
    }

    impl Band {
        pub(super) fn from_dense(a: &[f64], n: usize, b: usize) -> Band {
            let ld = 2 * b;
            let mut data = vec![0.0; n * ld];
            for j in 0..n {
                let rows = (b + 1).min(n - j);
                data[j * ld..j * ld + rows].copy_from_slice(&a[j * n + j..j * n + j + rows]);
            }
            Band { n, b, ld, data }
        }

        pub(super) fn tridiagonal(&self) -> (Vec<f64>, Vec<f64>) {
            let d = (0..self.n).map(|i| self.data[i * self.ld]).collect();
            let e = (0..self.n.saturating_sub(1)).map(|i| self.data[i * self.ld + 1]).collect();
            (d, e)
        }

        /// Stage 2, bulge chasing. Sweep s annihilates column s below the
        /// subdiagonal with a reflector H of length ≤ b acting on rows
        /// r..r+l (r = s + 1); H applied on the right to the block C below
        /// the diagonal block fills C (the bulge), whose first column the
        /// next reflector annihilates, and so on down the band. The rest of
        /// each bulge lies inside the next sweep's blocks, so entries stay
        /// within 2b − 1 of the diagonal.
        fn chase_to_tridiagonal(&mut self) {
            // Two threads pay once there is enough to chase (d = 2048: 0.2 s
            // on one thread); below that, spawning costs more.
            let threads = if self.n >= 256 { rayon::current_num_threads().min(2) } else { 1 };
            self.chase_with(threads);
        }

        /// The chase on 1 thread, or pipelined over 2: the same operations
        /// in the same order on every element either way.
        pub(super) fn chase_with(&mut self, threads: usize) {
            let (n, b, ld) = (self.n, self.b, self.ld);
            let sweeps = n.saturating_sub(2);
            if threads < 2 {
                let mut scratch = SweepScratch::new(b);
                let data = self.data.as_mut_ptr();
                for s in 0..sweeps {
                    // SAFETY: one thread, and `data` holds n columns of ld.
                    unsafe { sweep(data, n, b, ld, s, &mut scratch, |_| {}, |_| {}) };
                }
                return;
            }
            // Pipelined: sweep s works on columns [r, r + b) at step t (r =
            // s + 1 + t·b), so it may run step t once sweep s − 1 has
            // finished step t + 1; sweep s − 1's step t + 2 and later touch
            // columns past r + b. Even sweeps on one thread, odd on the other,
            // each waiting on its predecessor's published step count.
            use std::sync::atomic::{AtomicUsize, Ordering};
            let done: Vec<AtomicUsize> = (0..sweeps).map(|_| AtomicUsize::new(0)).collect();
            let data = crate::gram::SharedOut(self.data.as_mut_ptr());
            let run = |parity: usize| {
                let mut scratch = SweepScratch::new(b);
                for s in (parity..sweeps).step_by(2) {
                    let wait = |t: usize| {
                        if s == 0 {
                            return;
                        }
                        let mut spins = 0u32;
                        while done[s - 1].load(Ordering::Acquire) < t + 2 {
                            spins += 1;
                            if spins < 1 << 12 {
                                std::hint::spin_loop();
                            } else {
                                std::thread::yield_now(); // the other thread may be descheduled
                            }
                        }
                    };
                    let publish = |t: usize| done[s].store(t, Ordering::Release);
                    // SAFETY: the waits above keep the two threads on disjoint
                    // columns (see the comment before `done`).
                    unsafe { sweep(data.get(), n, b, ld, s, &mut scratch, wait, publish) };
                    done[s].store(usize::MAX, Ordering::Release);
                }
            };
            std::thread::scope(|sc| {
                sc.spawn(|| run(1));
                run(0);
            });
        }
    }

    /// The reflectors and products of one sweep.
    struct SweepScratch {
        v: Vec<f64>,
        w: Vec<f64>,
        y: Vec<f64>,
    }

    impl SweepScratch {
        fn new(b: usize) -> SweepScratch {
            SweepScratch { v: vec![0.0; b], w: vec![0.0; b], y: vec![0.0; b] }
        }
    }

    /// Sweep s of the bulge chase: annihilate column s below its first
    /// subdiagonal and chase the bulge off the end of the band. `wait(t)` is
    /// called before step t touches columns s + 1 + t·b .. s + 1 + (t+1)·b
    /// (step 0 also column s), `publish(t + 1)` after it.
    ///
    /// # Safety
    /// `data` holds the band (n columns of `ld`), and no other thread
    /// touches the columns of a step while it runs.
    #[allow(clippy::too_many_arguments)]
    unsafe fn sweep(
        data: *mut f64,
        n: usize,
        b: usize,
        ld: usize,
        s: usize,
        scratch: &mut SweepScratch,
        wait: impl Fn(usize),
        publish: impl Fn(usize),
    ) {
        let len = b.min(n - 1 - s);
        if len < 2 {
            return;
        }
        let SweepScratch { v, w, y } = scratch;
        wait(0);
        // Each step's columns, as a slice of their own: [r·ld, (r + l)·ld).
        let cols = |r: usize, l: usize| std::slice::from_raw_parts_mut(data.add(r * ld), (l * ld).min((n - r) * ld));
        let x = &mut std::slice::from_raw_parts_mut(data.add(s * ld), ld)[1..1 + len];
        let (beta, mut tau) = householder(x);
        v[0] = 1.0;
        v[1..len].copy_from_slice(&x[1..]);
        x[0] = beta;
        x[1..].fill(0.0);
        let (mut r, mut l) = (s + 1, len);
        let mut t = 0;
        loop {
            if t > 0 {
                wait(t);
            }
            // Columns r .. r + l, offsets relative to column r.
            let data = cols(r, l);
            if tau != 0.0 {
                two_sided(data, ld, 0, l, &v[..l], tau, &mut w[..l]);
            }
            let r2 = r + l;
            if r2 >= n {
                publish(t + 1);
                break;
            }
            let l2 = b.min(n - r2);
            // C = A[r2 .. r2 + l2, r .. r + l]; column q sits at q ld + (l − q).
            if tau != 0.0 {
                let y = &mut y[..l2];
                y.fill(0.0);
                for q in 0..l {
                    let at = q * ld + l - q;
                    axpy(v[q], &data[at..at + l2], y);
                }
                for q in 0..l {
                    let at = q * ld + l - q;
                    axpy(-tau * v[q], y, &mut data[at..at + l2]);
                }
            }
            if l2 < 2 {
                publish(t + 1);
                break;
            }
            let c0 = &mut data[l..l + l2];
            let (beta2, tau2) = householder(c0);
            v[0] = 1.0;
            v[1..l2].copy_from_slice(&c0[1..]);
            c0[0] = beta2;
            c0[1..].fill(0.0);
            if tau2 != 0.0 {
                for q in 1..l {
                    let at = q * ld + l - q;
                    let col = &mut data[at..at + l2];
                    let sdot = dot(&v[..l2], col);
                    axpy(-tau2 * sdot, &v[..l2], col);
                }
            }
            publish(t + 1);
            tau = tau2;
            r = r2;
            l = l2;
            t += 1;
        }
    }

    /// D ← H D H for the symmetric l × l diagonal block at (r, r), lower
    /// part in band storage, H = I − τ v vᵀ (LAPACK `dsytd2`'s update).
    fn two_sided(data: &mut [f64], ld: usize, r: usize, l: usize, v: &[f64], tau: f64, w: &mut [f64]) {
        w.fill(0.0);
        for j in 0..l {
            let col = &data[(r + j) * ld..(r + j) * ld + (l - j)];
            let s = fused_dot_axpy(&col[1..], &v[j + 1..], v[j], &mut w[j + 1..]);
            w[j] += col[0] * v[j] + s;
        }
        w.iter_mut().for_each(|x| *x *= tau);
        let alpha = -0.5 * tau * dot(w, v);
        axpy(alpha, v, w);
        for j in 0..l {
            let col = &mut data[(r + j) * ld..(r + j) * ld + (l - j)];
            axpy(-w[j], &v[j..], col);
            axpy(-v[j], &w[j..], col);
        }
    }

    // Small dense kernels: 8 independent accumulators so the compiler
    // vectorises; compiled for AVX2 when the CPU has it (runtime check).

    #[inline(always)]
    fn fused_dot_axpy_body(x: &[f64], v: &[f64], a: f64, y: &mut [f64]) -> f64 {
        let len = x.len().min(v.len()).min(y.len());
        let (x, v, y) = (&x[..len], &v[..len], &mut y[..len]);
        let mut acc = [0.0f64; 8];
        let mut xc = x.chunks_exact(8);
        let mut vc = v.chunks_exact(8);
        let mut yc = y.chunks_exact_mut(8);
        for ((xs, vs), ys) in (&mut xc).zip(&mut vc).zip(&mut yc) {
            for k in 0..8 {
                acc[k] += xs[k] * vs[k];
                ys[k] += a * xs[k];
            }
        }
        let mut s = 0.0;
        for ((xs, vs), ys) in xc.remainder().iter().zip(vc.remainder()).zip(yc.into_remainder()) {
            s += xs * vs;
            *ys += a * xs;
        }
        acc.iter().sum::<f64>() + s
    }

    #[inline(always)]
    fn dot_body(x: &[f64], y: &[f64]) -> f64 {
        let len = x.len().min(y.len());
        let (x, y) = (&x[..len], &y[..len]);
        let mut acc = [0.0f64; 8];
        let mut xc = x.chunks_exact(8);
        let mut yc = y.chunks_exact(8);
        for (xs, ys) in (&mut xc).zip(&mut yc) {
            for k in 0..8 {
                acc[k] += xs[k] * ys[k];
            }
        }
        let s: f64 = xc.remainder().iter().zip(yc.remainder()).map(|(a, b)| a * b).sum();
        acc.iter().sum::<f64>() + s
    }

    #[inline(always)]
    fn axpy_body(a: f64, x: &[f64], y: &mut [f64]) {
        for (ys, xs) in y.iter_mut().zip(x) {
            *ys += a * xs;
        }
    }

    macro_rules! dispatch {
        ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
            pub(super) fn $name($($arg: $ty),*) -> $ret {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx2")]
                    unsafe fn avx2($($arg: $ty),*) -> $ret {
                        $body($($arg),*)
                    }
                    if std::arch::is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU supports AVX2 (checked just above).
                        return unsafe { avx2($($arg),*) };
                    }
                }
                $body($($arg),*)
            }
        };
    }

    dispatch!(fused_dot_axpy, fused_dot_axpy_body, (x: &[f64], v: &[f64], a: f64, y: &mut [f64]) -> f64);
    dispatch!(dot, dot_body, (x: &[f64], y: &[f64]) -> f64);
    dispatch!(axpy, axpy_body, (a: f64, x: &[f64], y: &mut [f64]) -> ());
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
    frechet_distance_owned(mu1, sigma1.to_vec(), mu2, sigma2.to_vec())
}

/// [`frechet_distance_detailed`] taking the covariances by value: they are
/// symmetrised and used in place (saves two d × d copies).
pub fn frechet_distance_owned(
    mu1: &[f64],
    sigma1: Vec<f64>,
    mu2: &[f64],
    sigma2: Vec<f64>,
) -> Result<Frechet, StatsError> {
    frechet_distance_with(mu1, sigma1, mu2, sigma2, Eigensolver::default())
}

/// [`frechet_distance_owned`] with a choice of [`Eigensolver`].
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

    /// Eigenvalues through the two-stage tridiagonalisation agree with
    /// faer's own symmetric eigensolver, across the band and panel sizes.
    #[test]
    fn two_stage_tridiagonalisation_matches_faer_eigenvalues() {
        let mut rng = Rng(21);
        for n in [1usize, 2, 3, 4, 31, 32, 33, 47, 48, 49, 50, 95, 96, 97, 98, 100, 145, 450] {
            let g = rng.matrix(n, n);
            let sym = Mat::from_fn(n, n, |i, j| g[i * n + j] + g[j * n + i]);
            let ours = symmetric_eigenvalues(sym.as_ref()).unwrap();
            let mut theirs = sym.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
            theirs.sort_by(f64::total_cmp);
            let scale = theirs.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(&ours, &theirs);
            assert!(diff < 1e-12 * scale * (n as f64).sqrt(), "n = {n}: {diff:e}");
        }
    }

    /// The pipelined two-thread bulge chase does exactly what the serial one
    /// does, for wide and narrow bands (narrow: many short steps to hand over).
    #[test]
    fn pipelined_chase_equals_the_serial_one_bit_for_bit() {
        let mut rng = Rng(33);
        for (n, b) in [(5usize, 2usize), (257, 32), (300, 3), (513, 17)] {
            let g = rng.matrix(n, n);
            let mut a: Vec<f64> = (0..n * n).map(|k| g[k] + g[(k % n) * n + k / n]).collect();
            tridiag::reduce_to_band(&mut a, n, b);
            let mut serial = tridiag::Band::from_dense(&a, n, b);
            let mut piped = serial.clone();
            serial.chase_with(1);
            piped.chase_with(2);
            assert_eq!(serial.tridiagonal(), piped.tridiagonal(), "n = {n}, b = {b}");
        }
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

    #[test]
    fn ql_eigenvalues_match_faer_on_hard_tridiagonals() {
        let mut rng = Rng(31);
        let cases: Vec<(Vec<f64>, Vec<f64>)> = vec![
            // random
            ((0..300).map(|_| rng.normal()).collect(), (0..299).map(|_| rng.normal()).collect()),
            // Wilkinson W+21: close eigenvalue pairs
            ((0..21).map(|i: i32| (10 - i).abs() as f64).collect(), vec![1.0; 20]),
            // graded over 30 orders of magnitude, PSD-like
            (
                (0..60).map(|i| 10f64.powi(-(i / 2))).collect(),
                (0..59).map(|i| 0.3 * 10f64.powi(-(i / 2) - 1)).collect(),
            ),
            // zero diagonal (all shifts start at 0), and a decoupled block
            (vec![0.0; 50], (0..49).map(|i| if i == 25 { 0.0 } else { 1.0 }).collect()),
            // constant: all eigenvalues equal
            (vec![2.5; 40], vec![0.0; 39]),
        ];
        for (k, (d, e)) in cases.into_iter().enumerate() {
            let ours = tridiagonal_eigenvalues(&d, &e).unwrap();
            let theirs = tridiagonal_eigenvalues_faer(&d, &e).unwrap();
            let scale = d.iter().chain(&e).fold(0.0f64, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(&ours, &theirs);
            assert!(diff <= 1e-13 * scale * (d.len() as f64).sqrt(), "case {k}: {diff:e}");
        }
        assert!(tridiagonal_eigenvalues(&[], &[]).unwrap().is_empty());
        assert_eq!(tridiagonal_eigenvalues(&[3.0], &[]).unwrap(), vec![3.0]);
    }

    #[test]
    fn tridiagonalisation_handles_already_reduced_columns() {
        // Diagonal and block-diagonal matrices make zero Householder tails
        // (τ = 0); huge and tiny entries must not overflow or underflow.
        let n = 40;
        for scale in [1e-150, 1.0, 1e150] {
            let diag = Mat::from_fn(n, n, |i, j| if i == j { scale * (i as f64 - 7.5) } else { 0.0 });
            let ev = symmetric_eigenvalues(diag.as_ref()).unwrap();
            let want: Vec<f64> = (0..n).map(|i| scale * (i as f64 - 7.5)).collect();
            assert!(max_abs_diff(&ev, &want) <= 1e-14 * scale * n as f64, "scale {scale:e}");
            let blocks =
                Mat::from_fn(
                    n,
                    n,
                    |i, j| {
                        if i / 2 == j / 2 {
                            scale * if i == j { 2.0 } else { 1.0 }
                        } else {
                            0.0
                        }
                    },
                );
            let ev = symmetric_eigenvalues(blocks.as_ref()).unwrap();
            let ones = ev.iter().filter(|&&v| (v / scale - 1.0).abs() < 1e-12).count();
            let threes = ev.iter().filter(|&&v| (v / scale - 3.0).abs() < 1e-12).count();
            assert_eq!((ones, threes), (n / 2, n / 2), "scale {scale:e}: {ev:?}");
        }
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
    fn feature_stats_sharded_updates_match_two_pass() {
        // Batches large enough to be split over the worker threads.
        let mut rng = Rng(17);
        let (n, d) = (3 * MIN_SHARD_ROWS * 4 + 7, 5);
        let mut x = rng.matrix(n, d);
        x.iter_mut().for_each(|v| *v = 3.0 * *v - 2.0);
        let (mu, cov) = two_pass(&x, d);
        let mut fs = FeatureStats::new(d).unwrap();
        fs.update(&x[..(n / 2) * d]).unwrap();
        fs.update(&x[(n / 2) * d..]).unwrap();
        assert_eq!(fs.count(), n as u64);
        assert!(max_abs_diff(&fs.mean().unwrap(), &mu) < 1e-12);
        assert!(max_abs_diff(&fs.covariance().unwrap(), &cov) < 1e-11);
    }

    #[test]
    fn feature_stats_gram_kernel_and_faer_fallback_agree() {
        // The AVX2 Gram kernel (crate::gram) against the faer path that CPUs
        // without it take, on a ragged width and sharded and unsharded batches.
        let mut rng = Rng(21);
        let (n, d) = (4 * MIN_SHARD_ROWS + 300, 37);
        let x: Vec<f32> = rng.matrix(n, d).iter().map(|v| (5.0 * v + 100.0) as f32).collect();
        let run = |faer: bool| {
            FORCE_FAER.store(faer, std::sync::atomic::Ordering::Relaxed);
            let mut fs = FeatureStats::new(d).unwrap();
            fs.update(&x[..100 * d]).unwrap();
            fs.update(&x[100 * d..]).unwrap();
            FORCE_FAER.store(false, std::sync::atomic::Ordering::Relaxed);
            fs.covariance().unwrap()
        };
        let (faer, gram) = (run(true), run(false));
        let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (_, want) = two_pass(&xs, d);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(&faer, &want) < 1e-12 * scale);
        assert!(max_abs_diff(&gram, &want) < 1e-12 * scale);
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
        assert!(a
            .merge(&FeatureStats::new(d + 1).unwrap())
            .unwrap_err()
            .0
            .contains("dim 7 into statistics of dim 6"));
    }

    #[test]
    fn feature_stats_accepts_f32_and_rejects_bad_batches() {
        let mut fs = FeatureStats::new(2).unwrap();
        fs.update(&[1.0f32, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(fs.mean().unwrap(), vec![2.0, 3.0]);
        assert_eq!(fs.covariance().unwrap(), vec![2.0, 2.0, 2.0, 2.0]);
        assert!(fs
            .update(&[1.0f32, 2.0, 3.0])
            .unwrap_err()
            .0
            .contains("not a whole number of rows of dim 2"));
        let e = fs.update(&[1.0f64, 2.0, 3.0, f64::NAN]).unwrap_err().0;
        assert!(e.contains("non-finite value NaN at row 1, column 1"), "{e}");
        assert_eq!(fs.count(), 2, "a rejected batch leaves the state unchanged");
        let e = fs.update(&[1e308f64, 1.0, 1e308, 1.0]).unwrap_err().0;
        assert!(e.contains("sum overflows float64"), "{e}");
        assert_eq!(fs.count(), 2);
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
