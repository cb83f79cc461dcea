//! Largest squared singular value by power iteration on `D^T D` (the Lipschitz constant of the
//! least-squares gradient in ISTA/FISTA).

use crate::{linalg::matmul, Matrix, Parallelism};

/// `sigma_max(d)^2`, from power iteration started at a fixed vector (deterministic), with a 1%
/// safety margin so that the step `1/L` stays inside the convergence region.
pub fn spectral_norm_sq(d: &Matrix, par: Parallelism) -> f32 {
    let (n, m) = d.shape();
    if n == 0 || m == 0 {
        return 0.0;
    }
    // Iterate on the smaller Gram matrix side: v in R^m, w = D v in R^n, v' = D^T w.
    let mut v: Vec<f32> = (0..m).map(|i| 1.0 + (i as f32 * 0.618).fract()).collect();
    let mut w = vec![0.0f32; n];
    let mut est = 0.0f64;
    for _ in 0..500 {
        let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        matmul(
            &mut w,
            d.view(),
            crate::linalg::MatRef::new(&v, m, 1),
            0.0,
            par,
        );
        let mut v2 = vec![0.0f32; m];
        matmul(
            &mut v2,
            d.view().t(),
            crate::linalg::MatRef::new(&w, n, 1),
            0.0,
            par,
        );
        let new = v2
            .iter()
            .zip(&v)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum::<f64>();
        v = v2;
        if (new - est).abs() <= 1e-7 * new.abs() {
            est = new;
            break;
        }
        est = new;
    }
    (est * 1.01) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_matrix() {
        let d = Matrix::from_vec(3, 2, vec![3.0, 0.0, 0.0, 1.0, 0.0, 0.0]).unwrap();
        let l = spectral_norm_sq(&d, Parallelism::Serial);
        assert!((l - 9.0 * 1.01).abs() < 1e-3, "{l}");
    }
}
