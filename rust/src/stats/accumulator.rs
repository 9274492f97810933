//! The streaming mean / covariance accumulator, [`FeatureStats`].
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

use super::{err, par, try_zeroed, StatsError};
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Rows converted and centred at a time in [`FeatureStats::update`]:
/// bounds the f64 scratch (rows × dim) while keeping the rank-k update
/// large enough to run at matrix-multiply speed.
const CHUNK_ROWS: usize = 1024;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_util::{max_abs_diff, two_pass, Rng};

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
