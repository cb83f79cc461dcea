//! Small dense symmetric positive-definite solves in f64 (Gram matrices of a few atoms, MOD's
//! `Z^T Z`). Written here because the sizes are tiny and the callers need f64 on f32 data; a
//! general dense-LA crate would add a dependency for forty lines.

use crate::Matrix;

/// Factors the row-major `s x s` matrix `g` in place as `L L^T` (lower triangle); `false` when it
/// is not numerically positive definite.
pub fn cholesky(g: &mut [f64], s: usize) -> bool {
    for j in 0..s {
        let mut diag = g[j * s + j];
        for k in 0..j {
            diag -= g[j * s + k] * g[j * s + k];
        }
        if diag <= 1e-12 {
            return false;
        }
        let l = diag.sqrt();
        g[j * s + j] = l;
        for i in j + 1..s {
            let mut v = g[i * s + j];
            for k in 0..j {
                v -= g[i * s + k] * g[j * s + k];
            }
            g[i * s + j] = v / l;
        }
    }
    true
}

/// Solves `L L^T x = rhs` in place, given the factor from [`cholesky`].
pub fn cholesky_solve(l: &[f64], s: usize, rhs: &mut [f64]) {
    for i in 0..s {
        let v = (0..i).fold(rhs[i], |acc, k| acc - l[i * s + k] * rhs[k]);
        rhs[i] = v / l[i * s + i];
    }
    for i in (0..s).rev() {
        let v = (i + 1..s).fold(rhs[i], |acc, k| acc - l[k * s + i] * rhs[k]);
        rhs[i] = v / l[i * s + i];
    }
}

/// Least squares of `y` on the atoms (rows of `d`) in `support` by the normal equations; `None`
/// when those atoms are numerically dependent.
pub fn least_squares_on(d: &Matrix, y: &[f32], support: &[usize]) -> Option<Vec<f64>> {
    let s = support.len();
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(p, q)| *p as f64 * *q as f64)
            .sum::<f64>()
    };
    let mut g = vec![0.0f64; s * s];
    let mut rhs = vec![0.0f64; s];
    for (a, &i) in support.iter().enumerate() {
        rhs[a] = dot(d.row(i), y);
        for (b, &j) in support.iter().enumerate().take(a + 1) {
            g[a * s + b] = dot(d.row(i), d.row(j));
        }
    }
    if !cholesky(&mut g, s) {
        return None;
    }
    cholesky_solve(&g, s, &mut rhs);
    Some(rhs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_small_spd_system_and_refuses_a_singular_one() {
        // G = [[4, 2], [2, 3]], x = [1, -1] -> G x = [2, -1].
        let mut g = vec![4.0, 2.0, 2.0, 3.0];
        assert!(cholesky(&mut g, 2));
        let mut b = vec![2.0, -1.0];
        cholesky_solve(&g, 2, &mut b);
        assert!((b[0] - 1.0).abs() < 1e-12 && (b[1] + 1.0).abs() < 1e-12);
        let mut sing = vec![1.0, 1.0, 1.0, 1.0];
        assert!(!cholesky(&mut sing, 2));
        let d = Matrix::from_vec(2, 2, vec![1.0, 0.0, 1.0, 0.0]).unwrap();
        assert!(least_squares_on(&d, &[1.0, 0.0], &[0, 1]).is_none());
    }
}
