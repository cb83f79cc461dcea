//! How linear one representation is in another: the held-out `R^2` of a least-squares affine map
//! `y ~ x A + c`, fitted on training rows and scored on test rows,
//! `R^2 = 1 - sum ||y - y_hat||^2 / sum ||y - mean(y)||^2` pooled over `y`'s columns (the mean is
//! the test rows' own, per column). The normal equations are solved in f64 with a ridge of
//! `1e-9 x` the Gram matrix's mean diagonal, only to keep a rank-deficient `x` solvable.

use crate::linalg::cholesky::{cholesky, cholesky_solve};
use crate::{Error, Matrix, Result};

/// Held-out `R^2` of `y` from `x` (see the module docs).
pub fn linear_r2(
    x_train: &Matrix,
    y_train: &Matrix,
    x_test: &Matrix,
    y_test: &Matrix,
) -> Result<f64> {
    let (p, q) = (x_train.cols(), y_train.cols());
    if x_train.rows() != y_train.rows()
        || x_test.rows() != y_test.rows()
        || x_test.cols() != p
        || y_test.cols() != q
        || x_train.rows() <= p
    {
        return Err(Error::shape(
            "linear R^2",
            format!("train [n > {p}, {p}] -> [n, {q}] and test [m, {p}] -> [m, {q}]"),
            format!(
                "{:?} -> {:?} and {:?} -> {:?}",
                x_train.shape(),
                y_train.shape(),
                x_test.shape(),
                y_test.shape()
            ),
        ));
    }
    crate::memory::admit_array("linear R^2 normal equations", &[p + 1, p + 1 + q], 8)?;
    let coef = fit(x_train, y_train);
    let (mut sse, mut sst) = (0.0f64, 0.0f64);
    let mean: Vec<f64> = (0..q)
        .map(|j| {
            (0..y_test.rows())
                .map(|r| y_test.get(r, j) as f64)
                .sum::<f64>()
                / y_test.rows().max(1) as f64
        })
        .collect();
    for r in 0..x_test.rows() {
        let xr = x_test.row(r);
        for j in 0..q {
            let pred =
                coef[p * q + j] + (0..p).map(|i| xr[i] as f64 * coef[i * q + j]).sum::<f64>();
            let y = y_test.get(r, j) as f64;
            sse += (y - pred).powi(2);
            sst += (y - mean[j]).powi(2);
        }
    }
    Ok(1.0 - sse / sst)
}

/// Coefficients `[(p + 1) x q]` (row `p` is the intercept) of the least-squares fit.
fn fit(x: &Matrix, y: &Matrix) -> Vec<f64> {
    let (p, q) = (x.cols(), y.cols());
    let s = p + 1;
    let mut g = vec![0.0f64; s * s];
    let mut rhs = vec![0.0f64; s * q];
    let mut row = vec![0.0f64; s];
    for r in 0..x.rows() {
        row[..p]
            .iter_mut()
            .zip(x.row(r))
            .for_each(|(a, v)| *a = *v as f64);
        row[p] = 1.0;
        for i in 0..s {
            for k in 0..=i {
                g[i * s + k] += row[i] * row[k];
            }
            for (j, v) in y.row(r).iter().enumerate() {
                rhs[i * q + j] += row[i] * *v as f64;
            }
        }
    }
    let ridge = 1e-9 * (0..s).map(|i| g[i * s + i]).sum::<f64>() / s as f64;
    for i in 0..s {
        g[i * s + i] += ridge;
        for k in 0..i {
            g[k * s + i] = g[i * s + k];
        }
    }
    if !cholesky(&mut g, s) {
        return vec![0.0; s * q];
    }
    let mut coef = vec![0.0f64; s * q];
    let mut col = vec![0.0f64; s];
    for j in 0..q {
        (0..s).for_each(|i| col[i] = rhs[i * q + j]);
        cholesky_solve(&g, s, &mut col);
        (0..s).for_each(|i| coef[i * q + j] = col[i]);
    }
    coef
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_affine_map_has_r2_one_and_noise_lowers_it_as_predicted() {
        let x = Matrix::standard_normal(2000, 4, 1);
        let a = Matrix::standard_normal(4, 3, 2);
        let noise = Matrix::standard_normal(2000, 3, 3);
        let affine = |sigma: f32| {
            Matrix::from_fn(2000, 3, |r, j| {
                (0..4).map(|i| x.get(r, i) * a.get(i, j)).sum::<f32>()
                    + 1.5
                    + sigma * noise.get(r, j)
            })
        };
        let (tr, te) = (0..1000, 1000..2000);
        let split = |m: &Matrix, r: std::ops::Range<usize>| m.slice_rows(r.start, r.end);
        let y = affine(0.0);
        let r2 = linear_r2(
            &split(&x, tr.clone()),
            &split(&y, tr.clone()),
            &split(&x, te.clone()),
            &split(&y, te.clone()),
        )
        .unwrap();
        assert!(r2 > 1.0 - 1e-9, "{r2}");
        // Unit noise on a signal of variance sum_i a_ij^2 per column: R^2 = 1 - 3 / total var.
        let y = affine(1.0);
        let signal: f64 = (0..3)
            .map(|j| (0..4).map(|i| (a.get(i, j) as f64).powi(2)).sum::<f64>())
            .sum();
        let want = signal / (signal + 3.0);
        let r2 = linear_r2(
            &split(&x, tr.clone()),
            &split(&y, tr),
            &split(&x, te.clone()),
            &split(&y, te),
        )
        .unwrap();
        assert!((r2 - want).abs() < 0.03, "{r2} vs {want}");
        // A nonlinear function is not linear: tanh of a large multiple.
        let ynl = Matrix::from_fn(2000, 1, |r, _| (5.0 * x.get(r, 0)).tanh() * x.get(r, 1));
        let r2 = linear_r2(
            &x.slice_rows(0, 1000),
            &ynl.slice_rows(0, 1000),
            &x.slice_rows(1000, 2000),
            &ynl.slice_rows(1000, 2000),
        )
        .unwrap();
        assert!(r2 < 0.1, "{r2}");
        assert!(linear_r2(&x.slice_rows(0, 3), &y.slice_rows(0, 3), &x, &y).is_err());
    }
}
