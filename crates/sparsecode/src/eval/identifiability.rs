//! Identifiability against ground truth: code MCC (mean matched |Pearson| between true and
//! recovered latents) and dictionary recovery (matched |cosine| between atoms, MMCS, recovered@tau).

use super::correlation::abs_correlation;
use super::matching::{max_weight_matching, Matching};
use crate::linalg::{matmul, normalize_rows};
use crate::{Error, Matrix, Parallelism, Result};
use serde::{Deserialize, Serialize};

/// `|<a_i, b_j>|` (clipped at 1) for unit rows `a_i`, `b_j`.
fn abs_inner_products(a: &Matrix, b: &Matrix, par: Parallelism) -> Matrix {
    let mut c = Matrix::zeros(a.rows(), b.rows());
    matmul(c.as_mut_slice(), a.view(), b.view().t(), 0.0, par);
    c.as_mut_slice()
        .iter_mut()
        .for_each(|v| *v = v.abs().min(1.0));
    c
}

/// Code MCC: the Hungarian-matched mean of [`abs_correlation`](super::abs_correlation) over the true latents (a true
/// latent left unmatched, when there are fewer recovered latents, counts as 0).
pub fn code_mcc(
    z_true: &Matrix,
    z_hat: &Matrix,
    hungarian_max: usize,
    par: Parallelism,
) -> Result<(f64, Matching)> {
    let c = abs_correlation(z_true, z_hat, par)?;
    Ok(mcc_of(&c, hungarian_max))
}

/// Code MCC from a correlation matrix `[true latents, recovered latents]` (from
/// [`abs_correlation`] or a streamed [`super::CodeCorrelation`]).
pub fn mcc_of(c: &Matrix, hungarian_max: usize) -> (f64, Matching) {
    let m = max_weight_matching(c, hungarian_max);
    let sum: f64 = m.pairs.iter().map(|&(i, j)| c.get(i, j) as f64).sum();
    (sum / c.rows().max(1) as f64, m)
}

/// `|cos(d_i, d_hat_j)|` for every true atom `i` and recovered atom `j` (rows of each).
pub fn abs_cosine(d_true: &Matrix, d_hat: &Matrix, par: Parallelism) -> Result<Matrix> {
    if d_true.cols() != d_hat.cols() {
        return Err(Error::shape(
            "dictionary comparison",
            format!("atoms of width {}", d_true.cols()),
            format!("width {}", d_hat.cols()),
        ));
    }
    let (mut a, mut b) = (d_true.clone(), d_hat.clone());
    let w = a.cols();
    normalize_rows(a.as_mut_slice(), w);
    normalize_rows(b.as_mut_slice(), w);
    Ok(abs_inner_products(&a, &b, par))
}

/// Dictionary recovery against the true atoms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DictMetrics {
    /// Matched mean |cosine| over true atoms.
    pub dict_mcc: f64,
    /// Mean over true atoms of the best |cosine| with any recovered atom.
    pub mmcs: f64,
    /// Fraction of true atoms whose best |cosine| exceeds 0.9.
    pub recovered_090: f64,
    /// ... exceeds 0.99.
    pub recovered_099: f64,
}

/// Dictionary MCC, MMCS and recovered@0.9/0.99 of `d_hat` against `d_true` (atoms are rows).
pub fn dictionary_metrics(
    d_true: &Matrix,
    d_hat: &Matrix,
    hungarian_max: usize,
    par: Parallelism,
) -> Result<DictMetrics> {
    let c = abs_cosine(d_true, d_hat, par)?;
    let n = d_true.rows().max(1) as f64;
    let best: Vec<f32> = (0..c.rows())
        .map(|i| c.row(i).iter().copied().fold(0.0, f32::max))
        .collect();
    let m = max_weight_matching(&c, hungarian_max);
    Ok(DictMetrics {
        dict_mcc: m
            .pairs
            .iter()
            .map(|&(i, j)| c.get(i, j) as f64)
            .sum::<f64>()
            / n,
        mmcs: best.iter().map(|v| *v as f64).sum::<f64>() / n,
        recovered_090: best.iter().filter(|v| **v > 0.9).count() as f64 / n,
        recovered_099: best.iter().filter(|v| **v > 0.99).count() as f64 / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permuted_scaled_codes_have_mcc_one() {
        let z = Matrix::from_fn(50, 4, |r, c| {
            ((r * 7 + c * 13) % 11) as f32 * (c + 1) as f32
        });
        let perm = [2usize, 0, 3, 1];
        let zh = Matrix::from_fn(
            50,
            5,
            |r, c| if c < 4 { -3.0 * z.get(r, perm[c]) } else { 0.0 },
        );
        let (mcc, m) = code_mcc(&z, &zh, HUNGARIAN_MAX_TEST, Parallelism::Serial).unwrap();
        assert!((mcc - 1.0).abs() < 1e-5, "{mcc}");
        for (i, j) in m.pairs {
            assert_eq!(perm[j], i);
        }
        // Fewer recovered latents than true ones: unmatched true latents count as zero.
        let half = Matrix::from_fn(50, 2, |r, c| z.get(r, c));
        let (mcc, _) = code_mcc(&z, &half, HUNGARIAN_MAX_TEST, Parallelism::Serial).unwrap();
        assert!((mcc - 0.5).abs() < 1e-5, "{mcc}");
    }

    const HUNGARIAN_MAX_TEST: usize = 64;

    #[test]
    fn dictionary_metrics_on_known_cases() {
        let d = Matrix::from_vec(3, 3, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]).unwrap();
        // Sign flips and scaling do not matter; a rotated atom is partly recovered.
        let s = (0.5f32).sqrt();
        let dh = Matrix::from_vec(3, 3, vec![0.0, -2.0, 0.0, 5.0, 0.0, 0.0, 0.0, s, s]).unwrap();
        let m = dictionary_metrics(&d, &dh, HUNGARIAN_MAX_TEST, Parallelism::Serial).unwrap();
        assert!((m.recovered_090 - 2.0 / 3.0).abs() < 1e-9);
        assert!((m.mmcs - (2.0 + s as f64) / 3.0).abs() < 1e-5);
        assert!((m.dict_mcc - (2.0 + s as f64) / 3.0).abs() < 1e-5);
        assert!(abs_cosine(&d, &Matrix::zeros(2, 4), Parallelism::Serial).is_err());
    }
}
