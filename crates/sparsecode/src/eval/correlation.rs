//! `|Pearson|` between every column of one code set and every column of another, from
//! statistics streamed over chunks of samples, so that memory is bounded by the `n_a x n_b`
//! matrix being matched, never by the number of samples.
//!
//! For columns `a_i`, `b_j` over `s` samples and fixed shifts `c_i`, `d_j` (zero, or the first
//! chunk's column means), the accumulator keeps, in f64,
//!
//! ```text
//! S_i = sum_r (a_ri - c_i)      Q_i = sum_r (a_ri - c_i)^2      (likewise T_j, R_j for b)
//! P_ij = sum_r (a_ri - c_i)(b_rj - d_j)
//! var_i = Q_i/s - (S_i/s)^2      cov_ij = P_ij/s - (S_i/s)(T_j/s)
//! corr_ij = cov_ij / sqrt(var_i var_j)      (0 where either variance is below 1e-12)
//! ```
//!
//! The shift cancels in `var` and `cov`; it only keeps the subtraction from cancelling
//! catastrophically when a column's mean is large against its spread.
//!
//! Two ways to form `P` per chunk, chosen once from the first chunk:
//! - **sparse** (shift 0): codes are mostly zeros, so `P_ij` only gains from rows where both
//!   are non-zero: `sum_r nnz_a(r) nnz_b(r)` multiply-adds, scattered in f64 into row `i` of
//!   `P`. For K-sparse true codes and a TopK SAE this is `K k` per sample instead of `n_a n_b`.
//! - **dense** (shift = the first chunk's means): one f32 GEMM of the centred chunk
//!   `A_c^T B_c` added into `P`, when the non-zero pairs exceed 1/32 of the dense product (a
//!   GEMM does a multiply-add ~30x faster than a scattered f64 add).

use crate::linalg::matmul;
use crate::{Error, Matrix, Parallelism, Result};
use rayon::prelude::*;

/// Below this variance a column counts as constant (correlation 0), as before streaming.
const MIN_VAR: f64 = 1e-12;

/// The dense product is chosen when non-zero pairs exceed `1 / DENSE_RATIO` of it.
const DENSE_RATIO: usize = 32;

#[derive(Debug)]
enum Mode {
    Sparse,
    Dense {
        shift_a: Vec<f32>,
        shift_b: Vec<f32>,
        scratch: Vec<f32>,
    },
}

/// Streaming co-moments of two code sets (see the module docs).
#[derive(Debug)]
pub struct CodeCorrelation {
    n_a: usize,
    n_b: usize,
    rows: u64,
    sum_a: Vec<f64>,
    sq_a: Vec<f64>,
    sum_b: Vec<f64>,
    sq_b: Vec<f64>,
    cross: Vec<f64>,
    mode: Option<Mode>,
}

/// Non-zeros of a chunk grouped by column (`a`, CSC) or by row (`b`, CSR): `start[k]..start[k+1]`
/// index `(index, value)` pairs of group `k`.
struct Groups {
    start: Vec<usize>,
    entries: Vec<(u32, f32)>,
}

impl Groups {
    fn by_row(m: &Matrix) -> Self {
        let mut start = Vec::with_capacity(m.rows() + 1);
        let mut entries = Vec::new();
        start.push(0);
        for r in 0..m.rows() {
            entries.extend(
                m.row(r)
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(j, v)| (j as u32, *v)),
            );
            start.push(entries.len());
        }
        Groups { start, entries }
    }

    fn by_column(m: &Matrix) -> Self {
        let (s, n) = m.shape();
        let mut count = vec![0usize; n + 1];
        m.as_slice()
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .for_each(|(k, _)| count[k % n + 1] += 1);
        for j in 0..n {
            count[j + 1] += count[j];
        }
        let mut fill = count.clone();
        let mut entries = vec![(0u32, 0.0f32); count[n]];
        for r in 0..s {
            for (j, v) in m.row(r).iter().enumerate().filter(|(_, v)| **v != 0.0) {
                entries[fill[j]] = (r as u32, *v);
                fill[j] += 1;
            }
        }
        Groups {
            start: count,
            entries,
        }
    }

    fn group(&self, k: usize) -> &[(u32, f32)] {
        &self.entries[self.start[k]..self.start[k + 1]]
    }
}

impl CodeCorrelation {
    /// An empty accumulator for `n_a` and `n_b` columns; admits its `n_a x n_b` f64 co-moments
    /// and the f32 correlation matrix it will return.
    pub fn new(n_a: usize, n_b: usize) -> Result<Self> {
        crate::memory::admit_array("code correlation (co-moments and result)", &[n_a, n_b], 12)?;
        Ok(CodeCorrelation {
            n_a,
            n_b,
            rows: 0,
            sum_a: vec![0.0; n_a],
            sq_a: vec![0.0; n_a],
            sum_b: vec![0.0; n_b],
            sq_b: vec![0.0; n_b],
            cross: vec![0.0; n_a * n_b],
            mode: None,
        })
    }

    /// Samples added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds the same samples of both code sets (`[rows, n_a]` and `[rows, n_b]`).
    pub fn add(&mut self, a: &Matrix, b: &Matrix, par: Parallelism) -> Result<()> {
        if a.rows() != b.rows() || a.cols() != self.n_a || b.cols() != self.n_b {
            return Err(Error::shape(
                "code correlation",
                format!("[rows, {}] and [rows, {}]", self.n_a, self.n_b),
                format!("{:?} and {:?}", a.shape(), b.shape()),
            ));
        }
        if a.rows() == 0 {
            return Ok(());
        }
        if self.mode.is_none() {
            self.mode = Some(self.choose_mode(a, b)?);
        }
        match &mut self.mode {
            Some(Mode::Dense {
                shift_a,
                shift_b,
                scratch,
            }) => {
                let (ac, bc) = (centred(a, shift_a), centred(b, shift_b));
                add_moments(&mut self.sum_a, &mut self.sq_a, &ac);
                add_moments(&mut self.sum_b, &mut self.sq_b, &bc);
                let at = ac.transpose();
                matmul(scratch, at.view(), bc.view(), 0.0, par);
                let n_b = self.n_b;
                par.install(|| {
                    self.cross
                        .par_chunks_mut(n_b.max(1))
                        .zip(scratch.par_chunks(n_b.max(1)))
                        .for_each(|(p, s)| p.iter_mut().zip(s).for_each(|(p, s)| *p += *s as f64))
                });
            }
            _ => {
                add_moments(&mut self.sum_a, &mut self.sq_a, a);
                add_moments(&mut self.sum_b, &mut self.sq_b, b);
                let (ga, gb) = (Groups::by_column(a), Groups::by_row(b));
                scatter_products(&mut self.cross, self.n_b, &ga, &gb, par);
            }
        }
        self.rows += a.rows() as u64;
        Ok(())
    }

    fn choose_mode(&self, a: &Matrix, b: &Matrix) -> Result<Mode> {
        let nnz = |m: &Matrix, r: usize| m.row(r).iter().filter(|v| **v != 0.0).count();
        let pairs: usize = (0..a.rows()).map(|r| nnz(a, r) * nnz(b, r)).sum();
        let dense = a.rows().saturating_mul(self.n_a).saturating_mul(self.n_b);
        if pairs.saturating_mul(DENSE_RATIO) <= dense {
            return Ok(Mode::Sparse);
        }
        crate::memory::admit_array("code correlation (dense product)", &[self.n_a, self.n_b], 4)?;
        Ok(Mode::Dense {
            shift_a: column_means(a),
            shift_b: column_means(b),
            scratch: vec![0.0; self.n_a * self.n_b],
        })
    }

    /// `|corr_ij|` clipped at 1, `[n_a, n_b]`.
    pub fn abs_correlation(&self) -> Matrix {
        let s = self.rows.max(1) as f64;
        let stats = |sum: &[f64], sq: &[f64]| -> (Vec<f64>, Vec<f64>) {
            let mean: Vec<f64> = sum.iter().map(|v| v / s).collect();
            let inv_sd = sq
                .iter()
                .zip(&mean)
                .map(|(q, m)| {
                    let var = q / s - m * m;
                    if var < MIN_VAR {
                        0.0
                    } else {
                        1.0 / var.sqrt()
                    }
                })
                .collect();
            (mean, inv_sd)
        };
        let (mean_a, inv_a) = stats(&self.sum_a, &self.sq_a);
        let (mean_b, inv_b) = stats(&self.sum_b, &self.sq_b);
        let mut c = Matrix::zeros(self.n_a, self.n_b);
        for i in 0..self.n_a {
            let p = &self.cross[i * self.n_b..(i + 1) * self.n_b];
            for (j, out) in c.row_mut(i).iter_mut().enumerate() {
                let cov = p[j] / s - mean_a[i] * mean_b[j];
                *out = ((cov * inv_a[i] * inv_b[j]).abs().min(1.0)) as f32;
            }
        }
        c
    }
}

/// `P[i, :] += sum over rows r where a_ri != 0 of a_ri * b[r, :]` (b's non-zeros only), one
/// task per column of `a`, each writing its own row of `P`.
fn scatter_products(cross: &mut [f64], n_b: usize, ga: &Groups, gb: &Groups, par: Parallelism) {
    par.install(|| {
        cross
            .par_chunks_mut(n_b.max(1))
            .enumerate()
            .for_each(|(i, p)| {
                for &(r, va) in ga.group(i) {
                    let va = va as f64;
                    for &(j, vb) in gb.group(r as usize) {
                        p[j as usize] += va * vb as f64;
                    }
                }
            })
    })
}

fn add_moments(sum: &mut [f64], sq: &mut [f64], m: &Matrix) {
    for r in 0..m.rows() {
        for ((s, q), v) in sum.iter_mut().zip(sq.iter_mut()).zip(m.row(r)) {
            if *v != 0.0 {
                let v = *v as f64;
                *s += v;
                *q += v * v;
            }
        }
    }
}

fn column_means(m: &Matrix) -> Vec<f32> {
    let mut sum = vec![0.0f64; m.cols()];
    for r in 0..m.rows() {
        sum.iter_mut()
            .zip(m.row(r))
            .for_each(|(s, v)| *s += *v as f64);
    }
    sum.into_iter()
        .map(|s| (s / m.rows().max(1) as f64) as f32)
        .collect()
}

fn centred(m: &Matrix, shift: &[f32]) -> Matrix {
    let mut c = m.clone();
    let w = m.cols().max(1);
    c.as_mut_slice()
        .chunks_mut(w)
        .for_each(|row| row.iter_mut().zip(shift).for_each(|(v, s)| *v -= s));
    c
}

/// Rows per chunk when whole matrices are streamed through [`CodeCorrelation`].
const CHUNK_ROWS: usize = 4096;

/// [`CodeCorrelation`] over two whole code sets, chunk by chunk.
pub fn abs_correlation(a: &Matrix, b: &Matrix, par: Parallelism) -> Result<Matrix> {
    if a.rows() != b.rows() {
        return Err(Error::shape(
            "code correlation",
            format!("{} samples in both code sets", a.rows()),
            format!("{} and {}", a.rows(), b.rows()),
        ));
    }
    let mut acc = CodeCorrelation::new(a.cols(), b.cols())?;
    for start in (0..a.rows()).step_by(CHUNK_ROWS) {
        let end = (start + CHUNK_ROWS).min(a.rows());
        acc.add(&a.slice_rows(start, end), &b.slice_rows(start, end), par)?;
    }
    Ok(acc.abs_correlation())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, computed the pre-streaming way: columns standardised in f64 over all
    /// samples, then one product.
    fn reference(a: &Matrix, b: &Matrix) -> Matrix {
        let std_cols = |z: &Matrix| -> Vec<Vec<f64>> {
            let s = z.rows() as f64;
            (0..z.cols())
                .map(|j| {
                    let col: Vec<f64> = (0..z.rows()).map(|r| z.get(r, j) as f64).collect();
                    let mean = col.iter().sum::<f64>() / s;
                    let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / s;
                    if var < MIN_VAR {
                        return vec![0.0; col.len()];
                    }
                    let inv = 1.0 / (var * s).sqrt();
                    col.iter().map(|v| (v - mean) * inv).collect()
                })
                .collect()
        };
        let (sa, sb) = (std_cols(a), std_cols(b));
        Matrix::from_fn(a.cols(), b.cols(), |i, j| {
            let d: f64 = sa[i].iter().zip(&sb[j]).map(|(x, y)| x * y).sum();
            d.abs().min(1.0) as f32
        })
    }

    fn sparse_codes(rows: usize, cols: usize, density: f64, seed: u64) -> Matrix {
        let noise = Matrix::standard_normal(rows, cols, seed);
        let gate = Matrix::standard_normal(rows, cols, seed + 100);
        // P(|N(0,1)| > t) = density for the gate.
        let t = match density {
            d if d >= 1.0 => -1.0,
            d if d > 0.3 => 0.5,
            _ => 1.6,
        };
        Matrix::from_fn(rows, cols, |r, c| {
            if gate.get(r, c).abs() > t {
                noise.get(r, c).abs() + 0.1
            } else {
                0.0
            }
        })
    }

    fn assert_close(got: &Matrix, want: &Matrix, tol: f32) {
        assert_eq!(got.shape(), want.shape());
        for (g, w) in got.as_slice().iter().zip(want.as_slice()) {
            assert!((g - w).abs() <= tol, "{g} vs {w}");
        }
    }

    #[test]
    fn sparse_codes_stream_to_the_reference_correlation() {
        let a = sparse_codes(9000, 12, 0.1, 1);
        let mut b = sparse_codes(9000, 20, 0.1, 2);
        // Some columns of b follow a (so correlations are not all near 0), one is constant.
        for r in 0..9000 {
            b.row_mut(r)[3] = a.get(r, 5) * 2.0;
            b.row_mut(r)[7] = 0.0;
        }
        let got = abs_correlation(&a, &b, Parallelism::Threads(2)).unwrap();
        let mut acc = CodeCorrelation::new(12, 20).unwrap();
        acc.add(&a, &b, Parallelism::Serial).unwrap();
        assert!(matches!(acc.mode, Some(Mode::Sparse)));
        assert_close(&got, &reference(&a, &b), 1e-6);
        assert!((got.get(5, 3) - 1.0).abs() < 1e-6);
        assert_eq!(got.get(0, 7), 0.0);
    }

    #[test]
    fn dense_codes_with_large_means_stream_to_the_reference_correlation() {
        // Dense, with means 1000x their spread: the shifted sums keep the precision.
        let a0 = Matrix::standard_normal(9000, 6, 3);
        let b0 = Matrix::standard_normal(9000, 5, 4);
        let a = Matrix::from_fn(9000, 6, |r, c| 1000.0 + a0.get(r, c));
        let b = Matrix::from_fn(9000, 5, |r, c| {
            -500.0 + b0.get(r, c) + if c == 0 { a0.get(r, 2) } else { 0.0 }
        });
        let mut acc = CodeCorrelation::new(6, 5).unwrap();
        acc.add(
            &a.slice_rows(0, 100),
            &b.slice_rows(0, 100),
            Parallelism::Serial,
        )
        .unwrap();
        assert!(matches!(acc.mode, Some(Mode::Dense { .. })));
        let got = abs_correlation(&a, &b, Parallelism::Serial).unwrap();
        assert_close(&got, &reference(&a, &b), 2e-4);
        assert!(got.get(2, 0) > 0.6);
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        let a = sparse_codes(5000, 8, 0.5, 5);
        let b = sparse_codes(5000, 9, 0.1, 6);
        let mut one = CodeCorrelation::new(8, 9).unwrap();
        one.add(&a, &b, Parallelism::Serial).unwrap();
        let mut many = CodeCorrelation::new(8, 9).unwrap();
        for s in (0..5000).step_by(333) {
            let e = (s + 333).min(5000);
            many.add(
                &a.slice_rows(s, e),
                &b.slice_rows(s, e),
                Parallelism::Threads(2),
            )
            .unwrap();
        }
        assert_eq!(many.rows(), 5000);
        assert_close(&many.abs_correlation(), &one.abs_correlation(), 1e-6);
    }

    #[test]
    fn mismatched_chunks_are_refused() {
        let mut acc = CodeCorrelation::new(3, 4).unwrap();
        let e = acc.add(
            &Matrix::zeros(2, 3),
            &Matrix::zeros(3, 4),
            Parallelism::Serial,
        );
        assert!(e.is_err());
        let e = acc.add(
            &Matrix::zeros(2, 3),
            &Matrix::zeros(2, 5),
            Parallelism::Serial,
        );
        assert!(e.is_err());
    }
}
