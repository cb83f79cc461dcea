//! Dictionary learning by alternating minimisation of
//! `sum_s 1/2 ||y_s - z_s D||^2 + lambda ||z_s||_1` over codes `Z` and unit-norm atoms `D`:
//! sparse coding of all samples with the working-set FISTA (warm-started from the previous
//! codes), then one pass of block-coordinate descent over the atoms on the sufficient statistics
//! `A = Z^T Z`, `B = Z^T Y` (Mairal et al. 2009): `d_j <- d_j + (b_j - a_j D) / A_jj`, then
//! `d_j / ||d_j||`. An atom no sample uses (`A_jj = 0`), or one that duplicates an earlier atom
//! (|cosine| > 0.97), is re-seeded from the worst-reconstructed samples. Stops when the objective changes by less than `tol` (relative).

use super::fista::objective_per_sample;
use super::{fista, FistaParams};
use crate::error::{require_non_negative, require_positive_count};
use crate::linalg::{matmul, normalize_rows};
use crate::{Error, Matrix, Parallelism, Result};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Atoms closer than this (|cosine|) to an earlier atom are re-seeded.
const DUPLICATE_COSINE: f32 = 0.97;

/// Parameters of [`learn_dictionary`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DictLearnParams {
    /// Number of atoms N.
    pub atoms: usize,
    /// L1 weight while learning.
    pub lambda: f32,
    /// Non-negative codes.
    pub nonneg: bool,
    /// Most alternations (code, then update the atoms).
    pub max_iter: usize,
    /// Stop when the objective changes by less than this, relatively.
    pub tol: f64,
    /// Seed of the initial atoms.
    pub seed: u64,
    /// Independent starts (seeds `seed`, `seed + 1`, ...); the lowest final objective wins.
    /// Dictionary learning is non-convex: a few starts avoid most poor local minima.
    pub restarts: usize,
}

impl DictLearnParams {
    fn validate(&self, samples: usize) -> Result<()> {
        require_positive_count("atoms", self.atoms)?;
        if self.atoms > samples {
            return Err(Error::param(
                "atoms",
                format!(
                    "{} atoms need at least as many samples (got {samples}) to start from",
                    self.atoms
                ),
            ));
        }
        require_non_negative("lambda", self.lambda as f64)?;
        require_positive_count("max_iter", self.max_iter)?;
        require_positive_count("restarts", self.restarts)?;
        require_non_negative("tol", self.tol)?;
        Ok(())
    }
}

/// A learned dictionary with the codes of the training samples.
#[derive(Clone, Debug, PartialEq)]
pub struct DictLearnResult {
    /// `[atoms, d_in]`, unit-norm rows.
    pub dictionary: Matrix,
    /// `[samples, atoms]`.
    pub codes: Matrix,
    /// Objective after every alternation.
    pub objective: Vec<f64>,
}

/// Picks `n` samples far apart in angle (farthest-point seeding): the first at random, then
/// repeatedly the sample whose best |cosine| with the picks so far is smallest. Starting atoms
/// spread out this way rarely share a true atom, the usual local minimum of dictionary learning.
fn spread_samples(y: &Matrix, n: usize, seed: u64) -> Vec<usize> {
    let (s, m) = y.shape();
    let mut unit = y.clone();
    normalize_rows(unit.as_mut_slice(), m);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let first = sample(&mut rng, s, 1).index(0);
    let mut picks = vec![first];
    let mut best = vec![0.0f32; s]; // best |cos| of each sample with the picks
    let mut last = first;
    while picks.len() < n {
        for (i, b) in best.iter_mut().enumerate() {
            let c = crate::linalg::simd::dot(unit.row(i), unit.row(last)).abs();
            *b = b.max(c);
        }
        for &p in &picks {
            best[p] = f32::INFINITY;
        }
        last = (0..s)
            .min_by(|&i, &j| best[i].total_cmp(&best[j]).then(i.cmp(&j)))
            .unwrap_or(0);
        picks.push(last);
    }
    picks
}

/// Learns `p.atoms` unit-norm atoms from the rows of `y` (best of `p.restarts` starts).
pub fn learn_dictionary(
    y: &Matrix,
    p: &DictLearnParams,
    par: Parallelism,
) -> Result<DictLearnResult> {
    p.validate(y.rows())?;
    y.check_finite("data")?;
    let mut best: Option<DictLearnResult> = None;
    for r in 0..p.restarts {
        let run = learn_once(y, p, p.seed.wrapping_add(r as u64), par)?;
        let better = match &best {
            None => true,
            Some(b) => run.objective.last() < b.objective.last(),
        };
        if better {
            best = Some(run);
        }
    }
    Ok(best.expect("restarts >= 1 was validated"))
}

fn learn_once(
    y: &Matrix,
    p: &DictLearnParams,
    seed: u64,
    par: Parallelism,
) -> Result<DictLearnResult> {
    let (s, m) = y.shape();
    let n = p.atoms;
    let mut d = y.select_rows(&spread_samples(y, n, seed));
    if normalize_rows(d.as_mut_slice(), m) > 0 {
        // Zero rows picked: replace them by unit basis vectors so every atom has a direction.
        for j in 0..n {
            if d.row(j).iter().all(|v| *v == 0.0) {
                d.row_mut(j)[j % m] = 1.0;
            }
        }
    }
    let coder = FistaParams {
        lambda: p.lambda,
        nonneg: p.nonneg,
        max_iter: 2000,
        tol: 1e-4,
        accelerated: true,
    };
    let mut z: Option<Matrix> = None;
    let mut history = Vec::new();
    let mut a = Matrix::zeros(n, n);
    let mut b = Matrix::zeros(n, m);
    for _ in 0..p.max_iter {
        let codes = fista(y, &d, z.as_ref(), &coder, par)?.codes;
        // Sufficient statistics: A = Z^T Z, B = Z^T Y.
        matmul(a.as_mut_slice(), codes.view().t(), codes.view(), 0.0, par);
        matmul(b.as_mut_slice(), codes.view().t(), y.view(), 0.0, par);
        let (_, per_sample) = objective_per_sample(y, &d, &codes, p.lambda, par);
        let mut worst: Vec<usize> = (0..s).collect();
        worst.sort_by(|&i, &j| per_sample[j].total_cmp(&per_sample[i]).then(i.cmp(&j)));
        let mut next_worst = worst.into_iter();
        // One block-coordinate pass over the atoms.
        let mut ad = vec![0.0f32; m];
        for j in 0..n {
            let ajj = a.get(j, j);
            if ajj <= 1e-10 {
                let src = next_worst.next().unwrap_or(0);
                d.row_mut(j).copy_from_slice(y.row(src));
            } else {
                // (A D)_j = sum_k A_jk d_k, with the atoms as updated so far.
                ad.iter_mut().for_each(|v| *v = 0.0);
                for k in 0..n {
                    let ajk = a.get(j, k);
                    if ajk != 0.0 {
                        crate::linalg::simd::axpy(&mut ad, ajk, d.row(k));
                    }
                }
                let bj = b.row(j).to_vec();
                let row = d.row_mut(j);
                for i in 0..m {
                    row[i] += (bj[i] - ad[i]) / ajj;
                }
            }
            let norm = d
                .row(j)
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            if norm > 1e-12 {
                d.row_mut(j)
                    .iter_mut()
                    .for_each(|v| *v = (*v as f64 / norm) as f32);
            }
        }
        // Two atoms that converged to the same direction waste one: re-seed the later one.
        let mut gram = Matrix::zeros(n, n);
        matmul(gram.as_mut_slice(), d.view(), d.view().t(), 0.0, par);
        for j in 1..n {
            if (0..j).any(|k| gram.get(j, k).abs() > DUPLICATE_COSINE) {
                let src = next_worst.next().unwrap_or(0);
                d.row_mut(j).copy_from_slice(y.row(src));
                normalize_rows(d.row_mut(j), m);
            }
        }
        let (obj, _) = objective_per_sample(y, &d, &codes, p.lambda, par);
        z = Some(codes);
        let done = history
            .last()
            .is_some_and(|prev: &f64| (prev - obj).abs() <= p.tol * prev.abs());
        history.push(obj);
        if done {
            break;
        }
    }
    let codes = fista(y, &d, z.as_ref(), &coder, par)?.codes;
    Ok(DictLearnResult {
        dictionary: d,
        codes,
        objective: history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{generate, SynthConfig};
    use crate::eval::{code_mcc, dictionary_metrics};

    #[test]
    fn recovers_a_planted_dictionary() {
        let data = generate(
            &SynthConfig {
                latents: 16,
                dims: 8,
                samples: 1024,
                test_samples: 0,
                ..SynthConfig::e2(1)
            },
            None,
        )
        .unwrap();
        let y = &data.train.activations;
        let p = DictLearnParams {
            atoms: 16,
            lambda: 0.05,
            nonneg: true,
            max_iter: 300,
            tol: 1e-7,
            seed: 0,
            restarts: 2,
        };
        let r = learn_dictionary(y, &p, Parallelism::Serial).unwrap();
        let w = r
            .objective
            .windows(2)
            .filter(|w| w[1] > w[0] * (1.0 + 1e-3))
            .count();
        assert_eq!(w, 0, "the objective must not rise: {:?}", r.objective);
        let dm =
            dictionary_metrics(&data.dictionary, &r.dictionary, 64, Parallelism::Serial).unwrap();
        assert!(dm.dict_mcc > 0.98, "{dm:?}");
        let codes = fista(
            y,
            &r.dictionary,
            None,
            &FistaParams {
                lambda: 0.01,
                nonneg: true,
                max_iter: 2000,
                tol: 1e-6,
                accelerated: true,
            },
            Parallelism::Serial,
        )
        .unwrap()
        .codes;
        let (mcc, _) = code_mcc(&data.train.codes, &codes, 64, Parallelism::Serial).unwrap();
        assert!(mcc > 0.95, "{mcc}");
    }

    #[test]
    fn rejects_impossible_parameters() {
        let y = Matrix::zeros(4, 3);
        let p = DictLearnParams {
            atoms: 5,
            lambda: 0.1,
            nonneg: false,
            max_iter: 3,
            tol: 0.0,
            seed: 0,
            restarts: 1,
        };
        assert!(learn_dictionary(&y, &p, Parallelism::Serial)
            .unwrap_err()
            .to_string()
            .contains("`atoms`"));
    }
}
