//! Feature absorption against a planted hierarchy (parent -> child, the child implying the
//! parent; arXiv 2409.14507).
//!
//! For a pair (parent `p`, child `c`) with true atoms `d_p`, `d_c` and the SAE's decoder rows
//! `w_j`:
//! - the parent's latent is `l_p = argmax_j cos(w_j, d_p)` (signed: a latent that reads `-d_p` is
//!   not the parent's);
//! - on every sample where the child is active (so the parent is too), the parent's latent is
//!   **silent** when its code is 0, and the sample is **absorbed** when it is silent while some
//!   other latent `j` fires with `cos(w_j, d_p) >= tau`: that latent has taken over the parent's
//!   direction on the child's samples (fully absorbed, a child latent's decoder is about
//!   `(d_c + d_p) / |d_c + d_p|`, cosine ~0.7 with `d_p` for orthogonal atoms);
//! - the pair's absorption rate is absorbed / child samples; its silent rate silent / child
//!   samples (silence without a latent that carries the parent is a parent the SAE misses, not
//!   absorption).
//!
//! The threshold `tau` plays the role of SAEBench's projection threshold: without it any latent
//! that fires on the child's samples would count, and the rate would be overcounted.

use crate::{Error, Matrix, Result};

/// Default `tau`: the cosine with the parent's atom above which a firing latent carries it.
pub const DEFAULT_ABSORPTION_COS: f32 = 0.5;

/// What was measured for one (parent, child) pair.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PairAbsorption {
    /// The parent's true latent.
    pub parent: usize,
    /// The child's true latent.
    pub child: usize,
    /// The SAE latent whose decoder is closest to the parent's atom.
    pub parent_latent: usize,
    /// Its cosine with the parent's atom.
    pub parent_latent_cos: f32,
    /// Samples in which the child is active.
    pub child_samples: u64,
    /// Of those, samples in which the parent's latent is silent.
    pub parent_silent: u64,
    /// Of those, samples in which another latent carrying the parent's direction fires.
    pub absorbed: u64,
    /// The latent that absorbed most often, with its count and cosine with the parent's atom.
    pub main_absorber: Option<(usize, u64, f32)>,
}

impl PairAbsorption {
    /// Absorbed samples over child samples (0 when the child never fires).
    pub fn rate(&self) -> f64 {
        ratio(self.absorbed, self.child_samples)
    }

    /// Samples with the parent's latent silent over child samples.
    pub fn silent_rate(&self) -> f64 {
        ratio(self.parent_silent, self.child_samples)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Absorption over every pair.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Absorption {
    /// The threshold `tau` used.
    pub cos_threshold: f32,
    /// Mean absorption rate over pairs whose child fired.
    pub mean_rate: f64,
    /// Mean silent rate over those pairs.
    pub mean_silent_rate: f64,
    /// Per pair.
    pub pairs: Vec<PairAbsorption>,
}

/// Counts absorption chunk by chunk of samples (true codes and the SAE's dense codes).
pub struct AbsorptionCounter {
    tau: f32,
    /// Per pair: its counts so far.
    pairs: Vec<PairAbsorption>,
    /// Per pair: how often each latent absorbed.
    absorbers: Vec<std::collections::BTreeMap<usize, u64>>,
    /// Per parent in `pairs` order: the cosine of every latent's decoder with the parent's atom.
    cos_to_parent: Vec<Vec<f32>>,
    d_sae: usize,
}

impl AbsorptionCounter {
    /// A counter for `pairs` of true latents (rows of `truth_dict`, `[N, d_in]`) against the
    /// SAE decoder `decoder` (`[d_sae, d_in]`).
    pub fn new(
        truth_dict: &Matrix,
        decoder: &Matrix,
        pairs: &[(usize, usize)],
        tau: f32,
    ) -> Result<Self> {
        let (n, d_in) = truth_dict.shape();
        if decoder.cols() != d_in {
            return Err(Error::shape(
                "the SAE's decoder",
                format!("{d_in} columns (the true dictionary's width)"),
                decoder.cols().to_string(),
            ));
        }
        if let Some(&(p, c)) = pairs.iter().find(|(p, c)| *p >= n || *c >= n || p == c) {
            return Err(Error::param(
                "hierarchy",
                format!("pair ({p}, {c}) is not two distinct latents of the {n} true ones"),
            ));
        }
        if !(tau.is_finite() && tau > 0.0 && tau <= 1.0) {
            return Err(Error::param(
                "absorption_cos",
                format!("{tau} must be in (0, 1]"),
            ));
        }
        let cos_to_parent: Vec<Vec<f32>> = pairs
            .iter()
            .map(|&(p, _)| cosines(decoder, truth_dict.row(p)))
            .collect();
        let pairs = pairs
            .iter()
            .zip(&cos_to_parent)
            .map(|(&(parent, child), cos)| {
                let (parent_latent, parent_latent_cos) = argmax(cos);
                PairAbsorption {
                    parent,
                    child,
                    parent_latent,
                    parent_latent_cos,
                    child_samples: 0,
                    parent_silent: 0,
                    absorbed: 0,
                    main_absorber: None,
                }
            })
            .collect::<Vec<_>>();
        Ok(AbsorptionCounter {
            tau,
            absorbers: vec![Default::default(); pairs.len()],
            pairs,
            cos_to_parent,
            d_sae: decoder.rows(),
        })
    }

    /// Adds the samples of one chunk: their true codes `[rows, N]` and SAE codes `[rows, d_sae]`.
    pub fn add(&mut self, truth: &Matrix, codes: &Matrix) -> Result<()> {
        if truth.rows() != codes.rows() || codes.cols() != self.d_sae {
            return Err(Error::shape(
                "the SAE's codes",
                format!("[{}, {}]", truth.rows(), self.d_sae),
                format!("{:?}", codes.shape()),
            ));
        }
        for r in 0..truth.rows() {
            let z = codes.row(r);
            for ((pair, cos), absorbers) in self
                .pairs
                .iter_mut()
                .zip(&self.cos_to_parent)
                .zip(&mut self.absorbers)
            {
                if pair.child >= truth.cols() || truth.get(r, pair.child) == 0.0 {
                    continue;
                }
                pair.child_samples += 1;
                if z[pair.parent_latent] > 0.0 {
                    continue;
                }
                pair.parent_silent += 1;
                let carrier = (0..z.len())
                    .filter(|&j| j != pair.parent_latent && z[j] > 0.0 && cos[j] >= self.tau)
                    .max_by(|&a, &b| cos[a].total_cmp(&cos[b]));
                if let Some(j) = carrier {
                    pair.absorbed += 1;
                    *absorbers.entry(j).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    /// The rates over everything added.
    pub fn finish(mut self) -> Absorption {
        for ((pair, absorbers), cos) in self
            .pairs
            .iter_mut()
            .zip(&self.absorbers)
            .zip(&self.cos_to_parent)
        {
            pair.main_absorber = absorbers
                .iter()
                .max_by_key(|(j, n)| (**n, std::cmp::Reverse(**j)))
                .map(|(&j, &n)| (j, n, cos[j]));
        }
        let fired: Vec<&PairAbsorption> =
            self.pairs.iter().filter(|p| p.child_samples > 0).collect();
        let mean = |f: &dyn Fn(&PairAbsorption) -> f64| {
            fired.iter().map(|p| f(p)).sum::<f64>() / fired.len().max(1) as f64
        };
        Absorption {
            cos_threshold: self.tau,
            mean_rate: mean(&PairAbsorption::rate),
            mean_silent_rate: mean(&PairAbsorption::silent_rate),
            pairs: self.pairs,
        }
    }
}

/// Cosine of every row of `m` with `v` (0 for a zero row).
fn cosines(m: &Matrix, v: &[f32]) -> Vec<f32> {
    let nv = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (0..m.rows())
        .map(|j| {
            let r = m.row(j);
            let dot: f32 = r.iter().zip(v).map(|(a, b)| a * b).sum();
            let nr = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            if nr > 0.0 && nv > 0.0 {
                dot / (nr * nv)
            } else {
                0.0
            }
        })
        .collect()
}

/// The first index of the largest value, and the value.
fn argmax(v: &[f32]) -> (usize, f32) {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (j, &x)| {
            if x > best.1 {
                (j, x)
            } else {
                best
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{generate, Hierarchy, Support, SynthConfig};
    use crate::linalg::normalize_rows;

    /// Planted data with 3 parents of 3 children each among 40 latents in 64 dimensions.
    fn planted() -> (crate::data::SynthData, Vec<(usize, usize)>) {
        let h = Hierarchy {
            parents: 3,
            children: 3,
        };
        let cfg = SynthConfig {
            latents: 40,
            dims: 64,
            support: Support::Bernoulli { p: 0.05 },
            samples: 3000,
            hierarchy: Some(h),
            ..SynthConfig::e2(8)
        };
        (generate(&cfg, None).unwrap(), h.pairs())
    }

    /// An "SAE" that found the hierarchy absorbed: each child's latent reads `d_c + d_p`, and
    /// the parent's latent fires only where no child does.
    fn absorbing(data: &crate::data::SynthData, pairs: &[(usize, usize)]) -> (Matrix, Matrix) {
        let d = &data.dictionary;
        let mut dec = d.clone();
        for &(p, c) in pairs {
            let row: Vec<f32> = d.row(c).iter().zip(d.row(p)).map(|(a, b)| a + b).collect();
            dec.row_mut(c).copy_from_slice(&row);
        }
        normalize_rows(dec.as_mut_slice(), d.cols());
        let mut codes = data.train.codes.clone();
        for r in 0..codes.rows() {
            for &(p, c) in pairs {
                if data.train.codes.get(r, c) != 0.0 {
                    codes.row_mut(r)[p] = 0.0;
                }
            }
        }
        (dec, codes)
    }

    fn measure(
        data: &crate::data::SynthData,
        pairs: &[(usize, usize)],
        dec: &Matrix,
        codes: &Matrix,
    ) -> Absorption {
        let mut counter =
            AbsorptionCounter::new(&data.dictionary, dec, pairs, DEFAULT_ABSORPTION_COS).unwrap();
        // Two chunks, as the streamed evaluation feeds it.
        let half = codes.rows() / 2;
        let (t, z) = (&data.train.codes, codes);
        counter
            .add(&t.slice_rows(0, half), &z.slice_rows(0, half))
            .unwrap();
        counter
            .add(&t.slice_rows(half, t.rows()), &z.slice_rows(half, z.rows()))
            .unwrap();
        counter.finish()
    }

    #[test]
    fn a_planted_absorbing_solution_scores_one_and_the_clean_one_zero() {
        let (data, pairs) = planted();
        let clean = measure(&data, &pairs, &data.dictionary, &data.train.codes);
        assert_eq!(clean.mean_rate, 0.0, "{clean:?}");
        assert_eq!(clean.mean_silent_rate, 0.0);
        let (dec, codes) = absorbing(&data, &pairs);
        let abs = measure(&data, &pairs, &dec, &codes);
        assert_eq!(abs.mean_rate, 1.0, "{abs:?}");
        for pair in &abs.pairs {
            assert!(pair.child_samples > 50, "{pair:?}");
            assert_eq!(pair.parent_latent, pair.parent);
            let (j, n, cos) = pair.main_absorber.unwrap();
            // With two children active the closer one wins; the pair's own child mostly.
            assert_eq!(j, pair.child, "{pair:?}");
            assert!(n * 10 >= pair.absorbed * 9 && cos > 0.6, "{pair:?}");
        }
    }

    #[test]
    fn a_missing_parent_is_silent_but_not_absorbed() {
        let (data, pairs) = planted();
        // The parents' latents never fire and no other latent carries their direction.
        let mut codes = data.train.codes.clone();
        for r in 0..codes.rows() {
            for p in 0..3 {
                codes.row_mut(r)[p] = 0.0;
            }
        }
        let m = measure(&data, &pairs, &data.dictionary, &codes);
        assert_eq!(m.mean_silent_rate, 1.0);
        assert_eq!(m.mean_rate, 0.0);
    }

    #[test]
    fn half_absorbed_children_score_half() {
        let (data, pairs) = planted();
        let (dec, absorbed) = absorbing(&data, &pairs);
        // Samples of even rows absorbed, odd rows clean (the parent's latent fires).
        let mut codes = absorbed.clone();
        for r in (1..codes.rows()).step_by(2) {
            codes.row_mut(r).copy_from_slice(data.train.codes.row(r));
        }
        let m = measure(&data, &pairs, &dec, &codes);
        assert!((m.mean_rate - 0.5).abs() < 0.1, "{}", m.mean_rate);
    }

    #[test]
    fn refuses_bad_pairs_thresholds_and_shapes() {
        let (data, _) = planted();
        let d = &data.dictionary;
        let bad = |pairs: &[(usize, usize)], tau: f32| {
            AbsorptionCounter::new(d, d, pairs, tau)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(bad(&[(0, 40)], 0.5).contains("hierarchy"));
        assert!(bad(&[(2, 2)], 0.5).contains("hierarchy"));
        assert!(bad(&[(0, 3)], 0.0).contains("absorption_cos"));
        assert!(bad(&[(0, 3)], f32::NAN).contains("absorption_cos"));
        let narrow = Matrix::zeros(5, 3);
        assert!(AbsorptionCounter::new(d, &narrow, &[(0, 3)], 0.5).is_err());
        let mut c = AbsorptionCounter::new(d, d, &[(0, 3)], 0.5).unwrap();
        assert!(c.add(&data.train.codes, &Matrix::zeros(2, 40)).is_err());
    }
}
