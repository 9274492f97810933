//! Two-stage Householder tridiagonalisation, Qᵀ A Q = T, for the
//! eigenvalues of Lᵀ Σ2 L (the scheme of LAPACK's `dsytrd_2stage`).
//!
//! Why not faer's `self_adjoint_evd`: it reduces with a one-stage sweep
//! that reads (and writes) the whole trailing matrix for every column, so
//! at d = 2048 it streams ~20 GB through the caches and runs at memory
//! speed. Here stage 1 reduces A to a band of width [`BAND`] with block
//! reflectors whose two-sided application is two matrix products per
//! panel (faer, all cores, compute bound); stage 2 chases the band down to
//! tridiagonal with reflectors of length ≤ [`BAND`] on a compact copy of the
//! band that fits in L2. Eigenvalues only: no Q is accumulated. The tests
//! check the eigenvalues against faer's.

use super::par;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef, Par};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::test_util::Rng;

    /// The pipelined two-thread bulge chase does exactly what the serial one
    /// does, for wide and narrow bands (narrow: many short steps to hand over).
    #[test]
    fn pipelined_chase_equals_the_serial_one_bit_for_bit() {
        let mut rng = Rng(33);
        for (n, b) in [(5usize, 2usize), (257, 32), (300, 3), (513, 17)] {
            let g = rng.matrix(n, n);
            let mut a: Vec<f64> = (0..n * n).map(|k| g[k] + g[(k % n) * n + k / n]).collect();
            reduce_to_band(&mut a, n, b);
            let mut serial = Band::from_dense(&a, n, b);
            let mut piped = serial.clone();
            serial.chase_with(1);
            piped.chase_with(2);
            assert_eq!(serial.tridiagonal(), piped.tridiagonal(), "n = {n}, b = {b}");
        }
    }
}
