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
//!
//! On a language model there is no planted truth: a linear probe for a feature (e.g. "the token
//! starts with L") stands in for it, and [`word_absorption`] scores one input as SAEBench does
//! (arXiv 2409.14507, Chanin et al.): with `u` the unit probe direction, `x` the activation and
//! `p_j = a_j (w_j . u)` the projection of latent `j`'s contribution onto it,
//! - absorption fraction: with `M` the main latents of the feature (the k-sparse probe's), the
//!   potential absorbers `j` outside `M` with `cos(w_j, u) >= 0.1` and `p_j > 0`, `T` the sum of
//!   the 3 largest of their `p_j` and `P = x . u`: 0 when `sum_M p >= P` or `T < 0.4 P`; 1 when
//!   `sum_M p <= 0`; else `min(T, P - sum_M p) / (min(T, P - sum_M p) + sum_M p)`;
//! - full absorption: every main latent silent, and the latent with the largest `p_j` has
//!   `cos(w_j, u) >= 0.025` and `p_j >= 0.4 P` (with `P >= 0`).
//!
//! (SAEBench writes `p_j = a_j cos(w_j, u)`, the same for unit decoder rows; an SAE whose input
//! scale was folded into its weights has rows of another norm, and the projection of the
//! contribution is what the fraction compares with `P`.)

use crate::linalg::{row_norms, simd};
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
            .map(|&(p, _)| alignment(decoder, truth_dict.row(p)).1)
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

/// `(w_j . u, cos(w_j, u))` for every row `w_j` of `m` and the unit vector `u` along `v` (both 0
/// for a zero `v`, the cosine 0 for a zero row).
fn alignment(m: &Matrix, v: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let nv = simd::dot(v, v).sqrt();
    let dots: Vec<f32> = (0..m.rows())
        .map(|j| {
            if nv > 0.0 {
                simd::dot(m.row(j), v) / nv
            } else {
                0.0
            }
        })
        .collect();
    let cos = dots
        .iter()
        .zip(row_norms(m))
        .map(|(d, n)| if n > 0.0 { d / n } else { 0.0 })
        .collect();
    (dots, cos)
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

/// SAEBench's thresholds of [`word_absorption`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WordAbsorptionParams {
    /// Smallest probe cosine of a potential absorber (absorption fraction).
    pub fraction_cos: f32,
    /// Smallest probe cosine of the top projecting latent (full absorption).
    pub full_cos: f32,
    /// Share of the activation's probe projection the absorbers must carry (both).
    pub projection_share: f32,
    /// Most latents that together absorb (absorption fraction).
    pub max_absorbers: usize,
}

impl Default for WordAbsorptionParams {
    fn default() -> Self {
        WordAbsorptionParams {
            fraction_cos: 0.1,
            full_cos: 0.025,
            projection_share: 0.4,
            max_absorbers: 3,
        }
    }
}

/// One input scored against a feature's probe.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WordAbsorption {
    /// `P = x . u`.
    pub probe_projection: f32,
    /// `sum_M p_j`.
    pub main_projection: f32,
    /// The absorption fraction in [0, 1].
    pub fraction: f32,
    /// Whether this is full absorption.
    pub full: bool,
    /// The latent with the largest projection, and its projection.
    pub top_latent: (usize, f32),
}

/// The per-latent quantities of [`word_absorption`] that do not depend on the input: `w_j . u`
/// and `cos(w_j, u)` of every decoder row with the unit probe direction `u`.
pub fn probe_alignment(decoder: &Matrix, probe: &[f32]) -> (Vec<f32>, Vec<f32>) {
    alignment(decoder, probe)
}

/// Scores one input: its activation's projection `probe_projection` onto the unit probe
/// direction, its codes `a`, the latents' `(w_j . u, cos(w_j, u))` from [`probe_alignment`]
/// and the feature's main latents (see the module docs).
pub fn word_absorption(
    probe_projection: f32,
    a: &[f32],
    (dots, cos): (&[f32], &[f32]),
    main: &[usize],
    p: &WordAbsorptionParams,
) -> WordAbsorption {
    let proj = |j: usize| a[j] * dots[j];
    let main_projection: f32 = main.iter().map(|&j| proj(j)).sum();
    let mut absorbers: Vec<f32> = (0..a.len())
        .filter(|j| !main.contains(j) && cos[*j] >= p.fraction_cos && proj(*j) > 0.0)
        .map(proj)
        .collect();
    absorbers.sort_by(|x, y| y.total_cmp(x));
    let t: f32 = absorbers.iter().take(p.max_absorbers).sum();
    let big = probe_projection;
    let fraction = if main_projection >= big || t < p.projection_share * big {
        0.0
    } else if main_projection <= 0.0 {
        1.0
    } else {
        let absorbed = t.min(big - main_projection);
        (absorbed / (absorbed + main_projection)).clamp(0.0, 1.0)
    };
    let top_latent = (0..a.len())
        .map(|j| (j, proj(j)))
        .fold((0, f32::NEG_INFINITY), |b, c| if c.1 > b.1 { c } else { b });
    let full = main.iter().all(|&j| a[j] < 1e-8)
        && cos[top_latent.0] >= p.full_cos
        && big >= 0.0
        && top_latent.1 >= p.projection_share * big;
    WordAbsorption {
        probe_projection: big,
        main_projection,
        fraction,
        full,
        top_latent,
    }
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

    /// Four orthonormal decoder rows in 4 dimensions; the probe reads axis 0.
    fn letter_case(a: [f32; 4]) -> WordAbsorption {
        let mut d = Matrix::zeros(4, 4);
        for j in 0..4 {
            d.row_mut(j)[j] = 1.0;
        }
        // Latent 3 reads the probe's axis and another: cosine 0.6 with the probe.
        d.row_mut(3).copy_from_slice(&[0.6, 0.8, 0.0, 0.0]);
        let (dots, cos) = probe_alignment(&d, &[2.0, 0.0, 0.0, 0.0]);
        let x: Vec<f32> = (0..4)
            .map(|i| (0..4).map(|j| a[j] * d.get(j, i)).sum())
            .collect();
        word_absorption(
            x[0],
            &a,
            (&dots, &cos),
            &[0],
            &WordAbsorptionParams::default(),
        )
    }

    #[test]
    fn word_absorption_follows_saebench_cases() {
        // The main latent carries the whole projection: no absorption.
        let clean = letter_case([1.0, 0.3, 0.0, 0.0]);
        assert_eq!((clean.fraction, clean.full), (0.0, false));
        // The main latent silent, latent 3 carries it: full absorption, fraction 1.
        let full = letter_case([0.0, 0.3, 0.0, 1.0]);
        assert_eq!(
            (full.fraction, full.full, full.top_latent.0),
            (1.0, true, 3)
        );
        // Shared: main 0.5, absorber 0.6 of a projection of 1.1 -> 0.6 / 1.1.
        let part = letter_case([0.5, 0.0, 0.0, 1.0]);
        assert!((part.fraction - 0.6 / 1.1).abs() < 1e-6, "{part:?}");
        assert!(!part.full);
        // An absorber too weak for 40% of the projection does not count.
        let weak = letter_case([0.8, 0.0, 0.0, 0.3]);
        assert_eq!(weak.fraction, 0.0, "{weak:?}");
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
