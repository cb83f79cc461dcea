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
    let (ca, ta) = a[..n].as_chunks::<LANES>();
    let (cb, tb) = b[..n].as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    reduce_lanes(acc) + tail_dot(ta, tb)
}

/// The fixed pairwise sum of a dot product's lanes: `acc[i] += acc[i + w]` for `w` = 8, 4, 2, 1.
///
/// The accumulators go through [`std::hint::black_box`] first: with the reduction in view,
/// LLVM's SLP vectoriser split the 16 accumulators of the loop before it into pairs (eight
/// 64-bit multiplies and adds per 16 products instead of one 512-bit each; `perf` showed it as
/// the hottest line of the certified TopK step's sparse phases at 384 x 6144). Same operations
/// on every lane either way, so the same bits.
#[inline(always)]
fn reduce_lanes(acc: [f32; LANES]) -> f32 {
    let mut acc = std::hint::black_box(acc);
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0]
}

/// `sum_i a_i b_i` of the last `n % LANES` entries, in order.
#[inline(always)]
fn tail_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut tail = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        tail += x * y;
    }
    tail
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

    /// The fixed order [`dot`] promises, one scalar at a time.
    fn dot_in_order(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let whole = n - n % LANES;
        let mut acc = [0.0f32; LANES];
        for j in 0..whole {
            acc[j % LANES] += a[j] * b[j];
        }
        let mut w = LANES;
        while w > 1 {
            w /= 2;
            for i in 0..w {
                acc[i] += acc[i + w];
            }
        }
        let mut tail = 0.0f32;
        for j in whole..n {
            tail += a[j] * b[j];
        }
        acc[0] + tail
    }

    proptest! {
        #[test]
        fn dot_keeps_its_order_to_the_bit(
            v in prop::collection::vec(-1e3f32..1e3, 0..200),
            w in prop::collection::vec(-1e3f32..1e3, 0..200),
        ) {
            prop_assert_eq!(dot(&v, &w).to_bits(), dot_in_order(&v, &w).to_bits());
            let inline = run(
                #[inline(always)]
                || dot_inline(&v, &w),
            );
            prop_assert_eq!(inline.to_bits(), dot_in_order(&v, &w).to_bits());
        }

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
