//! Row norms and normalisation (dictionary atoms and decoder rows are kept at unit norm).

use crate::Matrix;

/// Euclidean norm of every row.
pub fn row_norms(m: &Matrix) -> Vec<f32> {
    (0..m.rows())
        .map(|r| {
            m.row(r)
                .iter()
                .map(|v| (*v as f64) * (*v as f64))
                .sum::<f64>()
                .sqrt() as f32
        })
        .collect()
}

/// Cosine similarity of two vectors, accumulated in f64 (0 when either is zero).
pub fn cosine<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x.into(), y.into());
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Scales every row of the row-major `data` (`cols` wide) to unit norm; rows of norm below 1e-12
/// are left as they are. Returns how many rows were too small to normalise.
pub fn normalize_rows(data: &mut [f32], cols: usize) -> usize {
    let mut tiny = 0;
    if cols == 0 {
        return 0;
    }
    for row in data.chunks_mut(cols) {
        let n = row
            .iter()
            .map(|v| (*v as f64) * (*v as f64))
            .sum::<f64>()
            .sqrt();
        if n > 1e-12 {
            let inv = (1.0 / n) as f32;
            row.iter_mut().for_each(|v| *v *= inv);
        } else {
            tiny += 1;
        }
    }
    tiny
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_parallel_orthogonal_and_zero_vectors() {
        assert!((cosine(&[1.0f32, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[1.0f32, 0.0], &[0.0, 3.0]), 0.0);
        assert_eq!(cosine(&[0.0f32, 0.0], &[1.0, 1.0]), 0.0);
        let (a, b) = ([0.3f32, -1.2, 2.0], [1.0f32, 0.5, -0.25]);
        let naive = (0.3 - 0.6 - 0.5)
            / (0.3f64.powi(2) + 1.44 + 4.0).sqrt()
            / (1.0f64 + 0.25 + 0.0625).sqrt();
        assert!((cosine(&a, &b) - naive).abs() < 1e-6);
        let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
        assert!((cosine(&a64, &b64) - cosine(&a, &b)).abs() < 1e-12);
    }

    #[test]
    fn normalises_and_skips_zero_rows() {
        let mut m = Matrix::from_vec(3, 2, vec![3.0, 4.0, 0.0, 0.0, 0.0, -2.0]).unwrap();
        let tiny = normalize_rows(m.as_mut_slice(), 2);
        assert_eq!(tiny, 1);
        assert_eq!(m.row(0), &[0.6, 0.8]);
        assert_eq!(m.row(1), &[0.0, 0.0]);
        assert_eq!(row_norms(&m), vec![1.0, 0.0, 1.0]);
    }
}
