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
    fn normalises_and_skips_zero_rows() {
        let mut m = Matrix::from_vec(3, 2, vec![3.0, 4.0, 0.0, 0.0, 0.0, -2.0]).unwrap();
        let tiny = normalize_rows(m.as_mut_slice(), 2);
        assert_eq!(tiny, 1);
        assert_eq!(m.row(0), &[0.6, 0.8]);
        assert_eq!(m.row(1), &[0.0, 0.0]);
        assert_eq!(row_norms(&m), vec![1.0, 0.0, 1.0]);
    }
}
