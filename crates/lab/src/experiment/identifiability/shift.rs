//! Distribution shift (the seed's open question 2): an SAE (the paper's ReLU + L1 recipe), the
//! same SAE with inference-time optimisation (ITO: FISTA from its codes with its decoder) and
//! dictionary learning + FISTA, all fitted on one planted distribution, then scored by code MCC
//! on held-out samples of shifted ones with the same dictionary: other supports (each latent
//! independently, same mean K), other magnitudes, twice the K, added noise, and a scale change.

use super::super::methods::{best_dictionary_learning, train_sae, MethodSettings};
use serde::{Deserialize, Serialize};
use sparsecode::coding::{fista, ito, learn_dictionary, FistaParams};
use sparsecode::data::{generate, Magnitude, Support, SynthConfig, SynthData};
use sparsecode::eval::{code_mcc, HUNGARIAN_MAX};
use sparsecode::{Error, Matrix, Parallelism, Result};

/// Parameters of the shift study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShiftParams {
    /// Latents N.
    pub latents: usize,
    /// Dimensions M.
    pub dims: usize,
    /// Active latents K of the training distribution.
    pub k: usize,
    /// Training samples.
    pub samples: usize,
    /// Held-out samples of each distribution.
    pub test_samples: usize,
    /// Full-batch steps of the SAE.
    pub sae_steps: u64,
}

impl ShiftParams {
    /// N = 32, M = 16, K = 3, 2048 samples, 10k SAE steps.
    pub fn full() -> Self {
        ShiftParams {
            latents: 32,
            dims: 16,
            k: 3,
            samples: 2048,
            test_samples: 1024,
            sae_steps: 10_000,
        }
    }

    /// 1024 samples, 3k SAE steps.
    pub fn quick() -> Self {
        ShiftParams {
            samples: 1024,
            test_samples: 512,
            sae_steps: 3000,
            ..Self::full()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.k == 0 || 2 * self.k >= self.latents || self.dims == 0 {
            return Err(Error::param(
                "shift",
                format!(
                    "N = {}, M = {}, K = {} (need 1 <= 2K < N and M >= 1)",
                    self.latents, self.dims, self.k
                ),
            ));
        }
        sparsecode::error::require_positive_count("samples", self.samples.min(self.test_samples))
    }

    fn base(&self, seed: u64) -> SynthConfig {
        SynthConfig {
            latents: self.latents,
            dims: self.dims,
            support: Support::Exact { k: self.k },
            magnitude: Magnitude::AbsNormal,
            samples: self.samples,
            test_samples: self.test_samples,
            snr_db: None,
            seed,
            hierarchy: None,
            correlation: None,
        }
    }

    /// The shifted distributions: `(name, config, scale of the samples)`.
    fn shifts(&self, seed: u64) -> Vec<(String, SynthConfig, f32)> {
        let b = SynthConfig {
            samples: 1,
            seed: seed + 1,
            ..self.base(seed)
        };
        let p = self.k as f64 / self.latents as f64;
        vec![
            ("none (held-out, same law)".into(), b.clone(), 1.0),
            (
                format!("supports: Bernoulli p = {p:.3}"),
                SynthConfig {
                    support: Support::Bernoulli { p },
                    ..b.clone()
                },
                1.0,
            ),
            (
                "magnitudes: Exp(1)".into(),
                SynthConfig {
                    magnitude: Magnitude::Exponential,
                    ..b.clone()
                },
                1.0,
            ),
            (
                "magnitudes: constant 1".into(),
                SynthConfig {
                    magnitude: Magnitude::Constant,
                    ..b.clone()
                },
                1.0,
            ),
            (
                format!("K = {}", 2 * self.k),
                SynthConfig {
                    support: Support::Exact { k: 2 * self.k },
                    ..b.clone()
                },
                1.0,
            ),
            (
                "noise: SNR 10 dB".into(),
                SynthConfig {
                    snr_db: Some(10.0),
                    ..b.clone()
                },
                1.0,
            ),
            ("scale x 3".into(), b, 3.0),
        ]
    }
}

/// Code MCC of each method on one shifted distribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShiftRow {
    /// The shift.
    pub shift: String,
    /// The SAE's encoder.
    pub sae: f64,
    /// SAE + ITO.
    pub sae_ito: f64,
    /// Dictionary learning + FISTA.
    pub dictionary_learning: f64,
}

fn nonneg(lambda: f32) -> FistaParams {
    FistaParams {
        lambda,
        nonneg: true,
        max_iter: 2000,
        tol: 1e-6,
        accelerated: true,
    }
}

/// Fits the three methods on the base distribution and scores them on every shift.
pub fn run(p: &ShiftParams, seed: u64, par: Parallelism) -> Result<Vec<ShiftRow>> {
    p.validate()?;
    let base: SynthData = generate(&p.base(seed), None)?;
    let s = MethodSettings {
        sae_steps: p.sae_steps,
        ..MethodSettings::default()
    };
    let sae = train_sae(&base, false, None, &s, seed, par.count())?;
    let dl = learn_dictionary(
        &base.train.activations,
        &best_dictionary_learning(p.latents, &s, seed),
        par,
    )?
    .dictionary;
    let mut rows = Vec::new();
    for (name, cfg, scale) in p.shifts(seed) {
        let shifted = generate(&cfg, Some(&base.dictionary))?;
        let test = shifted
            .test
            .ok_or_else(|| Error::param("test_samples", "needed"))?;
        let mut x = test.activations;
        x.as_mut_slice().iter_mut().for_each(|v| *v *= scale);
        let mcc = |codes: &Matrix| -> Result<f64> {
            Ok(code_mcc(&test.codes, codes, HUNGARIAN_MAX, par)?.0)
        };
        rows.push(ShiftRow {
            shift: name,
            sae: mcc(&sae.encode_dense(&x, par))?,
            sae_ito: mcc(&ito(&sae, &x, &nonneg(s.ito_lambda), par)?.codes)?,
            dictionary_learning: mcc(
                &fista(&x, &dl, None, &nonneg(s.dl_transform_lambda), par)?.codes
            )?,
        });
    }
    Ok(rows)
}
