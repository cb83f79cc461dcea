//! Orthogonal matching pursuit, batched over samples (one thread per sample block):
//! `min ||y - z D||` subject to at most `k` non-zeros or `||y - z D|| <= tol`.
//!
//! Each iteration picks the atom most correlated with the residual, then solves least squares
//! on the support through a Cholesky factor of the support's Gram matrix grown by one row per
//! atom (the incremental update is a triangular solve: no factorisation library does this
//! in place for us). Correlations come from the precomputed Gram matrix `G = D D^T` when it fits
//! (`N <= 4096`), otherwise from the explicit residual.

use crate::linalg::{matmul, MatRef};
use crate::{Error, Matrix, Parallelism, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Stopping rule of [`omp`]; at least one of the two must be set.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OmpParams {
    /// Maximum number of atoms per sample.
    pub k: Option<usize>,
    /// Stop once the residual norm is at most this. Values below about `1e-3 * ||y||` are under
    /// f32 precision and let OMP keep adding atoms.
    pub tol: Option<f32>,
}

const GRAM_MAX: usize = 4096;

/// Sparse codes `[S, N]` of every row of `y` with dictionary `d`.
pub fn omp(y: &Matrix, d: &Matrix, p: &OmpParams, par: Parallelism) -> Result<Matrix> {
    par.install(|| omp_on_pool(y, d, p, par))
}

fn omp_on_pool(y: &Matrix, d: &Matrix, p: &OmpParams, par: Parallelism) -> Result<Matrix> {
    super::check_problem(y, d)?;
    let (n, m) = d.shape();
    let k = match (p.k, p.tol) {
        (None, None) => {
            return Err(Error::param(
                "k",
                "OMP needs a number of atoms (k) or a residual tolerance (tol)",
            ))
        }
        (Some(k), _) if k == 0 || k > n.min(m) => {
            return Err(Error::param(
                "k",
                format!(
                    "{k} must be in 1..={} (min of atoms and dimensions)",
                    n.min(m)
                ),
            ))
        }
        (_, Some(t)) if !(t.is_finite() && t >= 0.0) => {
            return Err(Error::param(
                "tol",
                format!("{t} must be a non-negative number"),
            ))
        }
        (k, _) => k.unwrap_or(n.min(m)),
    };
    let tol_sq = p.tol.map(|t| (t as f64) * (t as f64)).unwrap_or(-1.0);
    let s = y.rows();
    // alpha0 = y D^T for every sample.
    let mut alpha0 = vec![0.0f32; s * n];
    matmul(&mut alpha0, y.view(), d.view().t(), 0.0, par);
    let gram = (n <= GRAM_MAX).then(|| {
        let mut g = Matrix::zeros(n, n);
        matmul(g.as_mut_slice(), d.view(), d.view().t(), 0.0, par);
        g
    });
    let diag: Vec<f32> = (0..n)
        .map(|j| d.row(j).iter().map(|v| v * v).sum())
        .collect();
    let mut codes = Matrix::zeros(s, n);
    codes
        .as_mut_slice()
        .par_chunks_mut(n)
        .zip(alpha0.par_chunks(n))
        .zip(y.as_slice().par_chunks(m))
        .for_each(|((out, a0), yr)| one(yr, a0, d, gram.as_ref(), &diag, k, tol_sq, out));
    Ok(codes)
}

#[allow(clippy::too_many_arguments)]
fn one(
    y: &[f32],
    a0: &[f32],
    d: &Matrix,
    gram: Option<&Matrix>,
    diag: &[f32],
    k: usize,
    tol_sq: f64,
    out: &mut [f32],
) {
    let (n, m) = d.shape();
    let y_sq: f64 = y.iter().map(|v| (*v as f64).powi(2)).sum();
    let mut support: Vec<usize> = Vec::with_capacity(k);
    let mut l = vec![0.0f64; k * k]; // lower-triangular Cholesky factor, row-major k x k
    let mut z = vec![0.0f64; k];
    let mut alpha: Vec<f64> = a0.iter().map(|v| *v as f64).collect();
    let mut resid: Vec<f32> = y.to_vec();
    let mut w = vec![0.0f64; k];
    while support.len() < k && y_sq - dot_support(&z, &support, a0) > tol_sq {
        // Most correlated atom (normalised by atom norm), excluding the support.
        let mut best = None;
        let mut best_v = 0.0f64;
        for j in 0..n {
            if diag[j] <= 0.0 || support.contains(&j) {
                continue;
            }
            let v = alpha[j].abs() / (diag[j] as f64).sqrt();
            if v > best_v {
                best_v = v;
                best = Some(j);
            }
        }
        let Some(j) = best else { break };
        if best_v <= 1e-12 {
            break;
        }
        let s = support.len();
        // New Cholesky row: L w = G[S, j]; l_ss = sqrt(G_jj - w.w).
        for i in 0..s {
            let gij = gram_at(d, gram, support[i], j);
            let acc: f64 = (0..i).map(|q| l[i * k + q] * w[q]).sum();
            w[i] = (gij - acc) / l[i * k + i];
        }
        let rest = diag[j] as f64 - w[..s].iter().map(|v| v * v).sum::<f64>();
        if rest <= 1e-10 * diag[j] as f64 {
            break; // the atom is (numerically) in the span of the support
        }
        l[s * k..s * k + s].copy_from_slice(&w[..s]);
        l[s * k + s] = rest.sqrt();
        support.push(j);
        let s = s + 1;
        // Solve L L^T z = alpha0[S].
        let mut u = vec![0.0f64; s];
        for i in 0..s {
            let acc: f64 = (0..i).map(|q| l[i * k + q] * u[q]).sum();
            u[i] = (a0[support[i]] as f64 - acc) / l[i * k + i];
        }
        for i in (0..s).rev() {
            let acc: f64 = (i + 1..s).map(|q| l[q * k + i] * z[q]).sum();
            z[i] = (u[i] - acc) / l[i * k + i];
        }
        // Correlations with the new residual.
        match gram {
            Some(g) => {
                for (jj, a) in alpha.iter_mut().enumerate() {
                    let row = g.row(jj);
                    *a = a0[jj] as f64
                        - support
                            .iter()
                            .zip(&z)
                            .map(|(&q, zq)| row[q] as f64 * zq)
                            .sum::<f64>();
                }
            }
            None => {
                resid.copy_from_slice(y);
                for (&q, zq) in support.iter().zip(&z) {
                    resid
                        .iter_mut()
                        .zip(d.row(q))
                        .for_each(|(r, dv)| *r -= (*zq as f32) * dv);
                }
                let mut a = vec![0.0f32; n];
                matmul(
                    &mut a,
                    MatRef::new(&resid, 1, m),
                    d.view().t(),
                    0.0,
                    Parallelism::Serial,
                );
                alpha.iter_mut().zip(&a).for_each(|(x, v)| *x = *v as f64);
            }
        }
    }
    out.fill(0.0);
    for (&j, zj) in support.iter().zip(&z) {
        out[j] = *zj as f32;
    }
}

fn gram_at(d: &Matrix, gram: Option<&Matrix>, i: usize, j: usize) -> f64 {
    match gram {
        Some(g) => g.get(i, j) as f64,
        None => d
            .row(i)
            .iter()
            .zip(d.row(j))
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum(),
    }
}

/// `||y||^2 - ||r||^2 = z_S . alpha0_S` for the least-squares solution on the support.
fn dot_support(z: &[f64], support: &[usize], a0: &[f32]) -> f64 {
    support
        .iter()
        .zip(z)
        .map(|(&j, zj)| zj * a0[j] as f64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{generate, Magnitude, SynthConfig};

    /// Reference OMP: full least squares by normal equations solved with Gaussian elimination
    /// at every step, residual computed explicitly.
    fn naive(y: &[f32], d: &Matrix, k: usize) -> Vec<f32> {
        let (n, m) = d.shape();
        let mut support: Vec<usize> = vec![];
        let mut z = vec![];
        let mut r: Vec<f64> = y.iter().map(|v| *v as f64).collect();
        for _ in 0..k {
            let j = (0..n)
                .filter(|j| !support.contains(j))
                .max_by(|&a, &b| {
                    let ca: f64 = (0..m).map(|i| r[i] * d.get(a, i) as f64).sum::<f64>().abs();
                    let cb: f64 = (0..m).map(|i| r[i] * d.get(b, i) as f64).sum::<f64>().abs();
                    ca.total_cmp(&cb)
                })
                .unwrap();
            support.push(j);
            let s = support.len();
            let mut a = vec![vec![0.0f64; s + 1]; s];
            for p in 0..s {
                for q in 0..s {
                    a[p][q] = (0..m)
                        .map(|i| d.get(support[p], i) as f64 * d.get(support[q], i) as f64)
                        .sum();
                }
                a[p][s] = (0..m)
                    .map(|i| d.get(support[p], i) as f64 * y[i] as f64)
                    .sum();
            }
            for c in 0..s {
                let piv = (c..s)
                    .max_by(|&x, &yy| a[x][c].abs().total_cmp(&a[yy][c].abs()))
                    .unwrap();
                a.swap(c, piv);
                for rr in 0..s {
                    if rr != c {
                        let f = a[rr][c] / a[c][c];
                        for q in c..=s {
                            a[rr][q] -= f * a[c][q];
                        }
                    }
                }
            }
            z = (0..s).map(|p| a[p][s] / a[p][p]).collect();
            for i in 0..m {
                r[i] = y[i] as f64
                    - (0..s)
                        .map(|p| z[p] * d.get(support[p], i) as f64)
                        .sum::<f64>();
            }
        }
        let mut out = vec![0.0f32; n];
        for (p, &j) in support.iter().enumerate() {
            out[j] = z[p] as f32;
        }
        out
    }

    #[test]
    fn matches_naive_omp_and_recovers_planted_support() {
        let cfg = SynthConfig {
            latents: 40,
            dims: 20,
            samples: 50,
            test_samples: 0,
            magnitude: Magnitude::SignedNormal,
            ..SynthConfig::e2(5)
        };
        let data = generate(&cfg, None).unwrap();
        let (y, d) = (&data.train.activations, &data.dictionary);
        for threads in [1, 2] {
            let z = omp(
                y,
                d,
                &OmpParams {
                    k: Some(3),
                    tol: None,
                },
                Parallelism::threads(threads),
            )
            .unwrap();
            for r in 0..y.rows() {
                let want = naive(y.row(r), d, 3);
                for (a, b) in z.row(r).iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4, "row {r}: {:?} vs {want:?}", z.row(r));
                }
            }
        }
        // Noiseless 3-sparse codes with M = 20: exact recovery for almost every sample.
        let z = omp(
            y,
            d,
            &OmpParams {
                k: None,
                tol: Some(1e-2),
            },
            Parallelism::Serial,
        )
        .unwrap();
        let exact = (0..y.rows())
            .filter(|&r| {
                z.row(r)
                    .iter()
                    .zip(data.train.codes.row(r))
                    .all(|(a, b)| (a - b).abs() < 1e-3)
            })
            .count();
        assert!(exact >= 48, "{exact}/50");
    }

    #[test]
    fn explicit_residual_path_agrees_with_gram_path() {
        let cfg = SynthConfig {
            latents: 30,
            dims: 10,
            samples: 20,
            test_samples: 0,
            ..SynthConfig::e2(6)
        };
        let data = generate(&cfg, None).unwrap();
        let (y, d) = (&data.train.activations, &data.dictionary);
        let with_gram = omp(
            y,
            d,
            &OmpParams {
                k: Some(4),
                tol: None,
            },
            Parallelism::Serial,
        )
        .unwrap();
        let mut no_gram = Matrix::zeros(y.rows(), 30);
        let diag: Vec<f32> = (0..30)
            .map(|j| d.row(j).iter().map(|v| v * v).sum())
            .collect();
        for r in 0..y.rows() {
            let mut a0 = vec![0.0f32; 30];
            matmul(
                &mut a0,
                MatRef::new(y.row(r), 1, 10),
                d.view().t(),
                0.0,
                Parallelism::Serial,
            );
            one(y.row(r), &a0, d, None, &diag, 4, -1.0, no_gram.row_mut(r));
        }
        for (a, b) in with_gram.as_slice().iter().zip(no_gram.as_slice()) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn rejects_impossible_k() {
        let y = Matrix::zeros(2, 4);
        let d = Matrix::from_fn(6, 4, |r, c| (r == c) as i32 as f32 + 0.1);
        assert!(omp(
            &y,
            &d,
            &OmpParams {
                k: Some(5),
                tol: None
            },
            Parallelism::Serial
        )
        .unwrap_err()
        .to_string()
        .contains("`k`"));
        assert!(omp(
            &y,
            &d,
            &OmpParams { k: None, tol: None },
            Parallelism::Serial
        )
        .is_err());
    }
}
