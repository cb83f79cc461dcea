//! Small vector kernels for the sparse paths (gather-sums, per-latent gradient sums, dots),
//! compiled for AVX-512, AVX2+FMA and plain x86-64 and picked at run time by `pulp`, the same
//! dispatcher `gemm` uses. Without it the crate's own loops would only use the SSE2 baseline.
//!
//! Every kernel fixes its order of operations (16 independent accumulators for dots), so results
//! are identical whichever instruction set runs them.

/// Width of the accumulator array in [`dot`]: one AVX-512 register of f32.
const LANES: usize = 16;

/// Runs `f` compiled for the best instruction set of this CPU. Inside `f`, use the `*_inline`
/// kernels so they are compiled into the same specialised code. Mark the closure
/// `#[inline(always)]`: otherwise LLVM keeps a large closure as a function of its own, compiled
/// for the x86-64 baseline (SSE2), and the dispatch buys nothing — `perf` found every sparse
/// TopK phase (weight gradients, candidate passes, exact dots, packing) in 128-bit code so.
#[inline(always)]
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// [`axpy`] for use inside [`run`].
#[inline(always)]
pub fn axpy_inline(y: &mut [f32], a: f32, x: &[f32]) {
    axpy_body(y, a, x)
}

/// [`dot`] for use inside [`run`].
#[inline(always)]
pub fn dot_inline(a: &[f32], b: &[f32]) -> f32 {
    dot_body(a, b)
}

#[inline(always)]
fn axpy_body(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * *xi;
    }
}

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    // Fixed pairwise reduction of the lanes.
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0] + tail
}

/// `y += a * x` (over the shorter length).
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    pulp::Arch::new().dispatch(
        #[inline(always)]
        || axpy_body(y, a, x),
    );
}

/// `sum_i a_i b_i` (over the shorter length), in a fixed order.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    pulp::Arch::new().dispatch(
        #[inline(always)]
        || dot_body(a, b),
    )
}

/// `y += sum_s coef[s] * rows[s]` where `rows(s)` yields the s-th row: one dispatch for a whole
/// gather-sum.
pub fn axpy_many<'a>(y: &mut [f32], terms: impl Iterator<Item = (f32, &'a [f32])>) {
    pulp::Arch::new().dispatch(
        #[inline(always)]
        || {
            for (c, x) in terms {
                axpy_body(y, c, x);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn match_naive(v in prop::collection::vec(-3.0f32..3.0, 0..80), a in -2.0f32..2.0) {
            let w: Vec<f32> = v.iter().enumerate().map(|(i, x)| x * 0.5 + i as f32 * 0.01).collect();
            let naive_dot: f64 = v.iter().zip(&w).map(|(x, y)| *x as f64 * *y as f64).sum();
            prop_assert!((dot(&v, &w) as f64 - naive_dot).abs() < 1e-3 * (1.0 + naive_dot.abs()));
            let mut y = w.clone();
            axpy(&mut y, a, &v);
            for i in 0..v.len() {
                prop_assert!((y[i] - (w[i] + a * v[i])).abs() < 1e-5);
            }
            let mut z = vec![0.0f32; v.len()];
            axpy_many(&mut z, [(a, &v[..]), (1.0, &w[..])].into_iter());
            let mut z2 = vec![0.0f32; v.len()];
            axpy(&mut z2, a, &v);
            axpy(&mut z2, 1.0, &w);
            prop_assert_eq!(z, z2);
        }
    }
}
