//! Dense products through the `gemm` crate (runtime-dispatched AVX-512/AVX2 micro-kernels).
//! Strided views make transposes free: `a.t()` swaps the strides, nothing is copied.

use super::Parallelism;

/// A borrowed, possibly transposed view of a row-major buffer.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// Views `data` as a row-major `rows x cols` matrix. Panics if `data` is too short: callers pass
    /// buffers they sized themselves.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= rows * cols,
            "MatRef: buffer shorter than rows*cols"
        );
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Views `rows x cols` values of `data` whose rows start `row_stride` apart (a column block of
    /// a wider row-major matrix, e.g. one attention head). Panics if `data` is too short.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        let needed = match rows {
            0 => 0,
            r => (r - 1) * row_stride + cols,
        };
        assert!(
            (rows <= 1 || cols <= row_stride) && data.len() >= needed,
            "MatRef: strided view runs past the buffer"
        );
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transposed view.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Number of rows of the view.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns of the view.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Products smaller than this many multiply-adds run on one thread: spawning costs more.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// `dst = beta * dst + a * b` where `dst` is row-major `a.rows() x b.cols()`.
/// With `beta == 0` the old content of `dst` is ignored (it may hold anything, even NaN).
///
/// Panics on mismatched shapes: shapes are checked where user input enters, so a mismatch here is a
/// bug in the library.
pub fn matmul(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, beta: f32, par: Parallelism) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner dimensions differ");
    assert!(dst.len() >= m * n, "matmul: destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta == 0.0 {
            dst[..m * n].fill(0.0);
        } else {
            dst[..m * n].iter_mut().for_each(|v| *v *= beta);
        }
        return;
    }
    let parallelism = match par {
        Parallelism::Threads(t) if t > 1 && m * n * k >= PARALLEL_MIN_FLOPS => {
            ::gemm::Parallelism::Rayon(t)
        }
        _ => ::gemm::Parallelism::None,
    };
    // gemm's Rayon mode runs on the current pool: the one this call owns.
    match parallelism {
        ::gemm::Parallelism::None => gemm_raw(dst, a, b, beta, parallelism),
        _ => par.install(|| gemm_raw(dst, a, b, beta, parallelism)),
    }
}

fn gemm_raw(
    dst: &mut [f32],
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    parallelism: ::gemm::Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // SAFETY: the views were bounds-checked at construction (`MatRef::new` checks the buffer covers
    // rows*cols, `t()` only swaps strides), `dst` holds at least m*n values and is a unique borrow,
    // and the shapes agree (asserted by `matmul`, the only caller).
    unsafe {
        ::gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            beta,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `codes D (+ bias on every row)`: the signal a set of codes describes with dictionary `d`
/// (atoms are rows), e.g. an SAE's decoder output.
pub fn synthesize(
    codes: &crate::Matrix,
    d: &crate::Matrix,
    bias: Option<&[f32]>,
    par: Parallelism,
) -> crate::Matrix {
    let mut out = crate::Matrix::zeros(codes.rows(), d.cols());
    matmul(out.as_mut_slice(), codes.view(), d.view(), 0.0, par);
    if let Some(b) = bias {
        out.add_to_rows(b, 1.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av as f64 * bv as f64;
                }
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    proptest! {
        #[test]
        fn matches_naive(m in 0usize..37, k in 0usize..41, n in 0usize..35, ta: bool, tb: bool,
                         beta in prop::sample::select(vec![0.0f32, 1.0, 0.5]), threads in 1usize..3,
                         seed in 0u64..1000) {
            let mut s = seed as f32;
            let mut next = || { s = (s * 1.618 + 0.37).fract(); s - 0.5 };
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let init: Vec<f32> = (0..m * n).map(|_| next()).collect();
            let av = if ta { MatRef::new(&a, k, m).t() } else { MatRef::new(&a, m, k) };
            let bv = if tb { MatRef::new(&b, n, k).t() } else { MatRef::new(&b, k, n) };
            let mut dst = init.clone();
            matmul(&mut dst, av, bv, beta, Parallelism::threads(threads));
            let want = naive(&a, &b, m, k, n, ta, tb);
            for i in 0..m * n {
                let expect = want[i] + beta * init[i];
                prop_assert!((dst[i] - expect).abs() <= 1e-4 * (1.0 + expect.abs()),
                    "at {i}: {} vs {}", dst[i], expect);
            }
        }
    }

    #[test]
    fn large_parallel_matches_serial() {
        let (m, k, n) = (130, 70, 90);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let mut s = vec![0.0; m * n];
        let mut p = vec![0.0; m * n];
        matmul(
            &mut s,
            MatRef::new(&a, m, k),
            MatRef::new(&b, k, n),
            0.0,
            Parallelism::Serial,
        );
        matmul(
            &mut p,
            MatRef::new(&a, m, k),
            MatRef::new(&b, k, n),
            0.0,
            Parallelism::Threads(2),
        );
        assert_eq!(s, p);
        assert_eq!(s, naive(&a, &b, m, k, n, false, false));
    }
}
