//! The lower triangle of a centred Gram matrix, C += (X − 1 μᵀ)ᵀ (X − 1 μᵀ),
//! straight from row-major samples, for [`crate::stats::FeatureStats`].
//!
//! This is the one product behind the covariance, and the only step where
//! `FeatureStats` competes with `numpy.cov`, which is OpenBLAS `dsyrk`.
//! faer's triangular product needed X transposed and converted first. On
//! one Zen 3 core it ran at ~21 GFLOP/s, where OpenBLAS ran at ~34.
//!
//! This module is a BLIS-style blocked product (Van Zee & van de Geijn,
//! "BLIS: A Framework for Rapidly Instantiating BLAS Functionality", 2015).
//! Its packing step also converts f32 → f64 and subtracts the mean, so the
//! samples are read in their own layout and no transposed copy is made:
//!
//! * loop over blocks of `kc` samples; pack every feature of the block into
//!   `NR`-wide panels (the "B" operand, shared read-only by all threads);
//! * loop over blocks of `mc` features (rows of C, in parallel when asked);
//!   pack them into `MR`-wide panels (the "A" operand, kept in L2);
//! * for each `NR`-column panel left of the block's last row, and each
//!   `MR`-row panel that reaches the lower triangle, run one `MR × NR`
//!   register tile: 12 AVX2 accumulators, 2 loads and 6 broadcasts per 12
//!   FMAs, unrolled four samples a trip.
//!
//! C is stored as [`Tiles`], one contiguous block per register tile, not as
//! a dense matrix. Measured on one Zen 3 core (2500 × 2048 f32 samples,
//! `cargo run --release --example gram_speed -- 0 256 96`), each step in
//! turn:
//!
//! * first version, dense C: 24-27 GFLOP/s;
//! * packing B 16 panels at a time: 31-34;
//! * tiled C: the kernel stopped losing a quarter of its speed to C's
//!   scattered lines;
//! * the four-sample unroll: 0.29 s against 0.32-0.35 s, in alternating runs.
//!
//! The kernel alone, with its operands in L1, peaks at ~40 GFLOP/s.
//!
//! The same driver serves [`lower_update`], C += α P Qᵀ into a dense
//! lower triangle: the rank-2b update of the tridiagonalisation's band
//! reduction (`crate::stats`). In alternating runs it took the Fréchet
//! distance at d = 2048 from 2.96x to 3.14-3.42x the speed of
//! `numpy.linalg.eigvals`, against faer's triangular product there.
//!
//! Tiles that straddle the diagonal are computed whole, so C's strict upper
//! triangle receives partial sums. Callers read only i ≥ j, through
//! [`Tiles::index`] and [`Tiles::for_each_lower`]. Without AVX2 and FMA
//! (another architecture, or an old x86), [`available`] is false and the
//! caller keeps its faer path.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the register tile (two AVX2 vectors of f64).
pub const MR: usize = 8;
/// Columns of the register tile (broadcast operands).
pub const NR: usize = 6;
/// The block sizes of [`syrk_centred`]; the default is the tuned one
/// (`examples/gram_speed.rs` times others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Samples per block: a B micro-panel is kc · NR · 8 B (256: 12 KiB, L1).
    pub kc: usize,
    /// Features per A block, a multiple of MR: mc · kc · 8 B (96: 192 KiB, L2).
    pub mc: usize,
}

impl Default for Blocking {
    fn default() -> Blocking {
        Blocking { kc: 256, mc: 96 }
    }
}

/// Whether the AVX2 + FMA kernel can run on this CPU.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The layout of C: the lower triangle as MR × NR tiles, each 48 f64
/// contiguous (column-major inside), tile columns one after another, each
/// from the first tile that reaches the diagonal down to the last row. A
/// tile's update then touches six adjacent cache lines on one page, where a
/// dense d × d matrix spread it over six pages 16 KiB apart: with C far out
/// of cache that cost a quarter of the kernel's speed. Half the memory of
/// the dense matrix; rows and columns past d are zero padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiles {
    d: usize,
    np: usize,
    /// Tile index of the first stored tile of each tile column (and the total).
    start: Vec<usize>,
}

impl Tiles {
    pub fn new(d: usize) -> Tiles {
        let (np, nq) = (d.div_ceil(MR), d.div_ceil(NR));
        let mut start = Vec::with_capacity(nq + 1);
        let mut at = 0;
        for q in 0..nq {
            start.push(at);
            at += np - Self::first_p(q);
        }
        start.push(at);
        Tiles { d, np, start }
    }

    /// The first row tile that reaches the diagonal in tile column q.
    fn first_p(q: usize) -> usize {
        q * NR / MR
    }

    /// The matrix's dimension d.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Length of the buffer, in f64.
    pub fn len(&self) -> usize {
        self.start[self.start.len() - 1] * MR * NR
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offset of tile (p, q); p ≥ first_p(q).
    fn tile(&self, p: usize, q: usize) -> usize {
        (self.start[q] + p - Self::first_p(q)) * MR * NR
    }

    /// Offset of element (i, j), i ≥ j.
    pub fn index(&self, i: usize, j: usize) -> usize {
        debug_assert!(i >= j && i < self.d);
        self.tile(i / MR, j / NR) + (j % NR) * MR + i % MR
    }

    /// Calls f(i, j, offset) for every i ≥ j of the d × d lower triangle, in
    /// buffer order.
    pub fn for_each_lower(&self, mut f: impl FnMut(usize, usize, usize)) {
        for q in 0..self.start.len() - 1 {
            self.for_each_lower_in_column(q, &mut f);
        }
    }

    /// [`Tiles::for_each_lower`] for tile column q (columns NR·q .. NR·q + NR).
    pub fn for_each_lower_in_column(&self, q: usize, mut f: impl FnMut(usize, usize, usize)) {
        let d = self.d;
        for p in Self::first_p(q)..self.np {
            let base = self.tile(p, q);
            for s in 0..NR.min(d - q * NR) {
                let j = q * NR + s;
                for r in 0..MR.min(d - p * MR) {
                    let i = p * MR + r;
                    if i >= j {
                        f(i, j, base + s * MR + r);
                    }
                }
            }
        }
    }
}

/// `c` (laid out as `tiles` says) += Xcᵀ Xc + e eᵀ on and below the diagonal,
/// where Xc is `rows` (n × d, row-major) minus `mean` and e the optional
/// `extra` row (already centred: `FeatureStats` passes √w·δ, the rank-1
/// term of the pairwise merge, so the merge costs one more sample instead
/// of another pass over C). `parallel` spreads the feature blocks over
/// rayon's pool; otherwise the calling thread does all the work.
///
/// Panics if [`available`] is false or the slices have the wrong lengths
/// (both are the caller's invariants, checked before any user data arrives).
#[allow(clippy::too_many_arguments)]
pub fn syrk_centred<T: Copy + Into<f64> + Sync>(
    rows: &[T],
    d: usize,
    mean: &[f64],
    extra: Option<&[f64]>,
    c: &mut [f64],
    tiles: &Tiles,
    scratch: &mut Scratch,
    parallel: bool,
    blocking: Blocking,
) {
    assert!(d > 0 && rows.len() % d == 0 && mean.len() == d && tiles.d == d && c.len() == tiles.len());
    assert!(extra.is_none_or(|e| e.len() == d));
    let src = Source { slab: rows, extra, d, mean, scale: 1.0 };
    product(src, src, SharedOut(c.as_mut_ptr()), Out::Tiled(tiles), scratch, parallel, blocking);
}

/// `c` (m × m, column-major, leading dimension `ld` ≥ m) += α P Qᵀ on and
/// below the diagonal; P and Q are m × k, column-major (stride m). The
/// strict upper triangle of `c` is not touched. This is the symmetric
/// rank-k update of the tridiagonalisation's band reduction.
///
/// Panics if [`available`] is false or the slices are too short.
#[allow(clippy::too_many_arguments)]
pub fn lower_update(p: &[f64], q: &[f64], m: usize, alpha: f64, c: &mut [f64], ld: usize, scratch: &mut Scratch, parallel: bool) {
    if m == 0 {
        return;
    }
    assert!(p.len() % m == 0 && q.len() == p.len() && ld >= m && c.len() >= (m - 1) * ld + m);
    let zeros = vec![0.0; m];
    let a = Source { slab: p, extra: None, d: m, mean: &zeros, scale: 1.0 };
    let b = Source { scale: alpha, slab: q, ..a };
    product(a, b, SharedOut(c.as_mut_ptr()), Out::Dense { ld }, scratch, parallel, Blocking::default());
}

/// Where [`product`] adds its tiles.
#[derive(Clone, Copy)]
enum Out<'a> {
    Tiled(&'a Tiles),
    /// Column-major with leading dimension `ld`; only i ≥ j is written.
    Dense { ld: usize },
}

/// C += Aᵀ B on and below the diagonal, A and B the operands (n samples of
/// d features each), through the blocked kernel.
#[allow(clippy::too_many_arguments)]
fn product<T: Copy + Into<f64> + Sync>(
    a_op: Source<'_, T>,
    b_op: Source<'_, T>,
    c: SharedOut,
    out: Out<'_>,
    scratch: &mut Scratch,
    parallel: bool,
    blocking: Blocking,
) {
    let Blocking { kc: kc_max, mc: mc_max } = blocking;
    assert!(available(), "gram's kernel needs AVX2 and FMA");
    let d = a_op.d;
    assert!(mc_max % MR == 0 && kc_max > 0 && a_op.slab.len() == b_op.slab.len() && b_op.d == d);
    assert_eq!(a_op.extra.is_some(), b_op.extra.is_some());
    let n = a_op.slab.len() / d;
    let extra = a_op.extra.is_some();
    if n == 0 && !extra {
        return;
    }
    // Equal sample blocks of at most kc (no short leftover block); the
    // extra row rides along with the last block.
    let kc = n.div_ceil(n.div_ceil(kc_max).max(1)).max(1);
    let nq = d.div_ceil(NR);
    let blocks: Vec<usize> = (0..d).step_by(mc_max).collect();
    let parallel = parallel && rayon::current_num_threads() > 1;
    // The packs live in `scratch`, from one call to the next: fresh buffers
    // came from the allocator as fresh pages, faulted in on every call.
    let Scratch { bpack, apacks } = scratch;
    if bpack.len() < nq * NR * (kc + 1) {
        bpack.resize(nq * NR * (kc + 1), 0.0);
    }
    apacks.resize_with(if parallel { blocks.len() } else { 1 }.max(apacks.len()), Vec::new);
    let mut k0 = 0;
    while k0 < n || (k0 == 0 && n == 0) {
        let k = kc.min(n - k0);
        let last = k0 + kc >= n;
        let (a_src, b_src) = (a_op.block(k0, k, last), b_op.block(k0, k, last));
        k0 += kc;
        let kt = k + (last && extra) as usize;
        // 16 panels at a time: each sample's row is read in one run and
        // written to 16 panels, not to all d / NR at once (which
        // touched a page per panel per sample: 9% of the time at d = 2048).
        for g0 in (0..d).step_by(16 * NR) {
            let width = (16 * NR).min(nq * NR - g0);
            pack_fast::<T, NR>(b_src, g0, width, kt, &mut bpack[g0 * kt..(g0 + width) * kt]);
        }
        let bpack = &bpack[..];
        let run = |apack: &mut Vec<f64>, i0: usize| {
            let mc = mc_max.min(d - i0);
            let np = mc.div_ceil(MR);
            apack.resize(np * MR * kt, 0.0);
            pack_fast::<T, MR>(a_src, i0, np * MR, kt, apack);
            // SAFETY: blocks write disjoint rows (i0..i0 + mc) of C.
            unsafe { block(apack, bpack, kt, d, i0, mc, c, out) };
        };
        if parallel {
            use rayon::prelude::*;
            // Largest blocks (most columns left of them) first.
            blocks.par_iter().zip(apacks.par_iter_mut()).rev().for_each(|(&i0, a)| run(a, i0));
        } else {
            blocks.iter().for_each(|&i0| run(&mut apacks[0], i0));
        }
    }
}

/// The packing buffers of [`syrk_centred`], kept between calls.
#[derive(Default)]
pub struct Scratch {
    bpack: Vec<f64>,
    apacks: Vec<Vec<f64>>,
}

impl Clone for Scratch {
    /// A new, empty scratch: buffers are not state worth copying.
    fn clone(&self) -> Scratch {
        Scratch::default()
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a: usize = self.apacks.iter().map(Vec::len).sum();
        write!(f, "Scratch {{ {} + {a} f64 }}", self.bpack.len())
    }
}

/// A pointer that threads writing disjoint elements of one buffer share.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f64);
// SAFETY: the threads given a `SharedOut` write disjoint elements.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn get(self) -> *mut f64 {
        self.0
    }
}

/// An operand: samples (row-major, `d` wide), the mean to subtract, the
/// optional extra row that follows them, and a factor for all of them.
struct Source<'a, T> {
    slab: &'a [T],
    extra: Option<&'a [f64]>,
    d: usize,
    mean: &'a [f64],
    scale: f64,
}

impl<T> Clone for Source<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Source<'_, T> {}

impl<'a, T> Source<'a, T> {
    /// Samples k0 .. k0 + k, with the extra row only in the `last` block.
    fn block(self, k0: usize, k: usize, last: bool) -> Source<'a, T> {
        let d = self.d;
        Source { slab: &self.slab[k0 * d..(k0 + k) * d], extra: if last { self.extra } else { None }, ..self }
    }
}

/// Panels of width `W` over features f0 .. f0 + width (zero past d), `kt`
/// samples long: the rows of a block minus μ, then the extra row if any,
/// times the factor: dst[(p · kt + s) · W + r] = (x[s][f0 + p·W + r] − μ[..]) · scale.
#[inline(always)]
fn pack<T: Copy + Into<f64>, const W: usize>(src: Source<'_, T>, f0: usize, width: usize, kt: usize, dst: &mut [f64]) {
    let Source { slab, extra, d, mean, scale } = src;
    let valid = width.min(d - f0);
    let (full, rest) = (valid / W, valid % W);
    let mu = &mean[f0..f0 + valid];
    for (s, row) in slab.chunks_exact(d).enumerate() {
        let row = &row[f0..f0 + valid];
        for p in 0..full {
            let o = (p * kt + s) * W;
            let x: &[T; W] = row[p * W..(p + 1) * W].try_into().unwrap();
            let m: &[f64; W] = mu[p * W..(p + 1) * W].try_into().unwrap();
            let y: &mut [f64; W] = (&mut dst[o..o + W]).try_into().unwrap();
            for r in 0..W {
                y[r] = (x[r].into() - m[r]) * scale;
            }
        }
        if rest > 0 {
            let o = (full * kt + s) * W;
            let tile = &mut dst[o..o + W];
            for (r, y) in tile.iter_mut().enumerate() {
                *y = if r < rest { (row[full * W + r].into() - mu[full * W + r]) * scale } else { 0.0 };
            }
        }
    }
    if let Some(e) = extra {
        let (s, e) = (kt - 1, &e[f0..f0 + valid]);
        for p in 0..valid.div_ceil(W) {
            let o = (p * kt + s) * W;
            for (r, y) in dst[o..o + W].iter_mut().enumerate() {
                *y = e.get(p * W + r).map_or(0.0, |v| v * scale);
            }
        }
    }
}

/// [`pack`] compiled for AVX2 (4-wide conversions and subtractions where
/// the default x86-64 target has 2-wide ones).
fn pack_fast<T: Copy + Into<f64>, const W: usize>(src: Source<'_, T>, f0: usize, width: usize, kt: usize, dst: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<T: Copy + Into<f64>, const W: usize>(src: Source<'_, T>, f0: usize, width: usize, kt: usize, dst: &mut [f64]) {
            pack::<T, W>(src, f0, width, kt, dst)
        }
        // SAFETY: only reached from `product`, which asserts `available()`.
        unsafe { avx2::<T, W>(src, f0, width, kt, dst) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    pack::<T, W>(src, f0, width, kt, dst)
}

/// The tiles of rows i0 .. i0 + mc that reach the lower triangle.
///
/// # Safety
/// `c` points at the output `out` describes (d × d), which no other thread
/// writes in rows i0 .. i0 + mc (i0 a multiple of MR); the packs hold `k`
/// samples.
#[allow(clippy::too_many_arguments)]
unsafe fn block(apack: &[f64], bpack: &[f64], k: usize, d: usize, i0: usize, mc: usize, c: SharedOut, out: Out<'_>) {
    let (p0, last_row) = (i0 / MR, i0 + mc - 1);
    for q in 0..=last_row / NR {
        let b = &bpack[q * NR * k..(q + 1) * NR * k];
        for p in p0.max(Tiles::first_p(q))..=last_row / MR {
            let a = &apack[(p - p0) * MR * k..(p - p0 + 1) * MR * k];
            let (r0, j0) = (p * MR, q * NR);
            // SAFETY (all three calls): `available()` was checked by
            // `product`; the tile lies inside C.
            #[cfg(target_arch = "x86_64")]
            match out {
                Out::Tiled(tiles) => kernel_avx2(a.as_ptr(), b.as_ptr(), k, c.get().add(tiles.tile(p, q)), MR),
                Out::Dense { ld } if r0 >= j0 + NR - 1 && r0 + MR <= d && j0 + NR <= d => {
                    kernel_avx2(a.as_ptr(), b.as_ptr(), k, c.get().add(j0 * ld + r0), ld)
                }
                Out::Dense { ld } => {
                    // On the diagonal or at C's edge: add only what is in
                    // the lower triangle of the d × d matrix.
                    let mut t = [0.0f64; MR * NR];
                    kernel_avx2(a.as_ptr(), b.as_ptr(), k, t.as_mut_ptr(), MR);
                    for s in 0..NR.min(d - j0) {
                        let j = j0 + s;
                        for r in j.max(r0) - r0..MR.min(d - r0) {
                            *c.get().add(j * ld + r0 + r) += t[s * MR + r];
                        }
                    }
                }
            }
        }
    }
}

/// c[0..MR, 0..NR] (column-major, leading dimension `ld`) += Σ_s a[s] b[s]ᵀ
/// over `k` samples.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(a: *const f64, b: *const f64, k: usize, c: *mut f64, ld: usize) {
    // The tile is far away in memory (C does not fit in cache): ask for its
    // lines now, so they arrive while the products run.
    for s in 0..NR {
        _mm_prefetch::<_MM_HINT_T0>(c.add(s * ld) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(s * ld + MR - 1) as *const i8);
    }
    // acc[s] = the tile's column s, two vectors of four rows; constant
    // indices throughout, so the twelve accumulators live in registers.
    let mut acc = [[_mm256_setzero_pd(); 2]; NR];
    let (mut a, mut b) = (a, b);
    macro_rules! step {
        ($a:expr, $b:expr) => {{
            let lo = _mm256_loadu_pd($a);
            let hi = _mm256_loadu_pd($a.add(4));
            for (s, col) in acc.iter_mut().enumerate() {
                let bb = _mm256_broadcast_sd(&*$b.add(s));
                col[0] = _mm256_fmadd_pd(lo, bb, col[0]);
                col[1] = _mm256_fmadd_pd(hi, bb, col[1]);
            }
        }};
    }
    // Four samples a trip: a quarter of the loop's own instructions.
    for _ in 0..k / 4 {
        step!(a, b);
        step!(a.add(MR), b.add(NR));
        step!(a.add(2 * MR), b.add(2 * NR));
        step!(a.add(3 * MR), b.add(3 * NR));
        a = a.add(4 * MR);
        b = b.add(4 * NR);
    }
    for _ in 0..k % 4 {
        step!(a, b);
        a = a.add(MR);
        b = b.add(NR);
    }
    for (s, [lo, hi]) in acc.into_iter().enumerate() {
        let col = c.add(s * ld);
        _mm256_storeu_pd(col, _mm256_add_pd(_mm256_loadu_pd(col), lo));
        _mm256_storeu_pd(col.add(4), _mm256_add_pd(_mm256_loadu_pd(col.add(4)), hi));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f64], d: usize, mean: &[f64]) -> Vec<f64> {
        let n = x.len() / d;
        let mut c = vec![0.0; d * d];
        for s in 0..n {
            for j in 0..d {
                let xj = x[s * d + j] - mean[j];
                for i in j..d {
                    c[j * d + i] += (x[s * d + i] - mean[i]) * xj;
                }
            }
        }
        c
    }

    /// got (tiled) equals factor · want (dense) on and below the diagonal.
    fn assert_lower_eq(got: &[f64], tiles: &Tiles, want: &[f64], factor: f64, label: &str) {
        tiles.for_each_lower(|i, j, at| {
            let (g, w) = (got[at], factor * want[j * tiles.d + i]);
            assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{label} ({i},{j}): {g} vs {w}");
        });
    }

    fn data(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..n * d)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn lower_triangle_matches_the_naive_sum_for_ragged_shapes() {
        if !available() {
            eprintln!("skipped: no AVX2 + FMA");
            return;
        }
        // d not a multiple of MR, NR or mc; n not a multiple of kc; n = 1.
        for &(n, d) in &[(1, 1), (3, 5), (7, 13), (300, 97), (513, 200), (260, 8 * 6)] {
            let x = data(n, d, (n * 1000 + d) as u64);
            let mean: Vec<f64> = (0..d).map(|j| 0.1 * j as f64).collect();
            let want = naive(&x, d, &mean);
            let tiles = Tiles::new(d);
            for parallel in [false, true] {
                let mut got = vec![0.0; tiles.len()];
                // Twice: the update adds to what is there.
                syrk_centred(&x, d, &mean, None, &mut got, &tiles, &mut Scratch::default(), parallel, Blocking::default());
                syrk_centred(&x, d, &mean, None, &mut got, &tiles, &mut Scratch::default(), parallel, Blocking::default());
                assert_lower_eq(&got, &tiles, &want, 2.0, &format!("n={n} d={d}"));
            }
        }
    }

    #[test]
    fn the_extra_row_is_one_more_sample() {
        if !available() {
            return;
        }
        for &(n, d, kc) in &[(0, 9, 256), (1, 9, 256), (40, 23, 8), (41, 23, 8), (600, 50, 256)] {
            let x = data(n, d, 3 + n as u64);
            let e: Vec<f64> = (0..d).map(|j| 0.5 - 0.01 * j as f64).collect();
            let mean = vec![0.125; d];
            // The extra row, un-centred, as a last sample of the naive sum.
            let mut with_e = x.clone();
            with_e.extend(e.iter().zip(&mean).map(|(v, m)| v + m));
            let want = naive(&with_e, d, &mean);
            let tiles = Tiles::new(d);
            for parallel in [false, true] {
                let mut got = vec![0.0; tiles.len()];
                syrk_centred(&x, d, &mean, Some(&e), &mut got, &tiles, &mut Scratch::default(), parallel, Blocking { kc, mc: 16 });
                assert_lower_eq(&got, &tiles, &want, 1.0, &format!("n={n} d={d} kc={kc}"));
            }
        }
    }

    #[test]
    fn lower_update_adds_alpha_p_qt_below_the_diagonal_only() {
        if !available() {
            return;
        }
        for &(m, k, ld) in &[(1, 1, 1), (7, 3, 9), (13, 64, 13), (97, 64, 100), (300, 40, 301)] {
            let (p, q) = (data(k, m, m as u64), data(k, m, 7 + k as u64));
            let c0 = data(ld, ld, 99);
            for parallel in [false, true] {
                let mut c = c0.clone();
                lower_update(&p, &q, m, -0.5, &mut c, ld, &mut Scratch::default(), parallel);
                for j in 0..m {
                    for i in 0..m {
                        let want = if i >= j {
                            c0[j * ld + i] - 0.5 * (0..k).map(|s| p[s * m + i] * q[s * m + j]).sum::<f64>()
                        } else {
                            c0[j * ld + i] // the strict upper triangle is left alone
                        };
                        let got = c[j * ld + i];
                        assert!((got - want).abs() <= 1e-12 * (1.0 + want.abs()), "m={m} k={k} ({i},{j}): {got} vs {want}");
                    }
                }
                // Nothing outside the m x m block moves either.
                for (at, (g, w)) in c.iter().zip(&c0).enumerate() {
                    if at % ld >= m || at / ld >= m {
                        assert_eq!(g, w, "m={m} ld={ld}: offset {at}");
                    }
                }
            }
        }
    }

    #[test]
    fn f32_samples_are_converted_exactly() {
        if !available() {
            return;
        }
        let (n, d) = (70, 19);
        let x64: Vec<f64> = data(n, d, 7).iter().map(|v| *v as f32 as f64).collect();
        let x32: Vec<f32> = x64.iter().map(|v| *v as f32).collect();
        let mean = vec![0.25; d];
        let tiles = Tiles::new(d);
        let (mut a, mut b) = (vec![0.0; tiles.len()], vec![0.0; tiles.len()]);
        let mut scratch = Scratch::default();
        syrk_centred(&x64, d, &mean, None, &mut a, &tiles, &mut scratch, false, Blocking::default());
        syrk_centred(&x32, d, &mean, None, &mut b, &tiles, &mut scratch, false, Blocking::default());
        assert_eq!(a, b);
    }

    #[test]
    fn tiles_store_each_lower_element_once_in_half_the_space() {
        for d in [1, 5, 6, 8, 13, 48, 97, 2048] {
            let tiles = Tiles::new(d);
            let mut seen = vec![false; tiles.len()];
            let mut count = 0;
            let mut last = None;
            tiles.for_each_lower(|i, j, at| {
                assert!(i >= j && i < d);
                assert_eq!(at, tiles.index(i, j));
                assert!(!seen[at], "d={d}: ({i},{j}) shares offset {at}");
                seen[at] = true;
                // Columns of tiles in order: offsets only grow tile by tile.
                assert!(last.is_none_or(|l| at / (MR * NR) >= l / (MR * NR)));
                last = Some(at);
                count += 1;
            });
            assert_eq!(count, d * (d + 1) / 2);
            // Padding included, never more than the dense matrix plus a tile column.
            assert!(tiles.len() <= d * d / 2 + (d + MR) * (MR + NR) + MR * NR, "d={d}: {}", tiles.len());
        }
    }
}

