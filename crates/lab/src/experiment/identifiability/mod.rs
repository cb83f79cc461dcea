//! The seed's first step (issue 13, REFERENCE section 7): does a network trained for
//! classification recover its data's latent factors up to a linear map, and does the whole
//! chain (latents -> observations -> classifier -> SAE / dictionary learning -> latents) work
//! with ground truth at both ends? Six parts, each its own module:
//!
//! - [`theorem`]: the theorem's vMF setting, R^2 of the latents from the features;
//! - [`chain`]: K-sparse latents, the representation width `M` swept below and above `N`, with
//!   controls; the same code runs the break conditions ([`breaks`]);
//! - [`circular`]: circular latent factors and what the SAE makes of them;
//! - [`shift`]: SAE, SAE + ITO and dictionary learning under distribution shift;
//! - [`calibration`]: the true K against the knee of the SAE's L0/FVU curve on `h`.

pub mod breaks;
pub mod calibration;
pub mod chain;
pub mod circular;
pub mod nets;
mod report;
pub mod score;
pub mod shift;
pub mod theorem;

use serde::{Deserialize, Serialize};
use sparsecode::data::clusters::ClusterConfig;
use sparsecode::data::prototypes::PrototypeConfig;
use sparsecode::{Error, Parallelism, Result};

pub use report::report;

/// Parameters of the whole experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentifiabilityParams {
    /// The theorem's setting.
    pub theorem: theorem::TheoremParams,
    /// The sparse chain.
    pub chain: chain::ChainParams,
    /// Width of the break conditions' networks.
    pub break_width: usize,
    /// True K values of the calibration (run at `M = N`).
    pub calibration_ks: Vec<usize>,
    /// Distribution shift.
    pub shift: shift::ShiftParams,
    /// Circular factors.
    pub circular: circular::CircularParams,
    /// First seed.
    pub seed: u64,
}

fn nets(hidden: usize, steps: usize) -> nets::NetSettings {
    nets::NetSettings {
        hidden: vec![hidden, hidden],
        steps,
        batch: 256,
        lr: 3e-3,
        temperature: 10.0,
    }
}

impl IdentifiabilityParams {
    /// The full setting (about 15 minutes on 2 cores).
    pub fn full() -> Self {
        IdentifiabilityParams {
            theorem: theorem::TheoremParams {
                process: ClusterConfig {
                    dim: 5,
                    classes: 100,
                    kappa: 20.0,
                    obs_dim: 20,
                    depth: 3,
                    gain: 2.0,
                },
                gains: vec![1.0, 2.0, 3.0, 4.0, 6.0],
                samples: 50_000,
                test_samples: 5_000,
                net: nets(128, 6000),
            },
            chain: chain::ChainParams {
                process: PrototypeConfig {
                    latents: 32,
                    k: 3,
                    classes: 100,
                    contrast: 20.0,
                    obs_dim: 64,
                    depth: 2,
                    gain: 2.0,
                },
                widths: vec![8, 12, 16, 24, 32, 48, 64],
                samples: 20_000,
                test_samples: 4_000,
                net: nets(128, 6000),
                coders: score::CoderSettings {
                    sae_steps: 4000,
                    dl_rows: 4000,
                    dl_lambda: 0.05,
                },
                regression_outputs: 32,
            },
            break_width: 16,
            calibration_ks: vec![1, 2, 3, 4, 6, 8],
            shift: shift::ShiftParams::full(),
            circular: circular::CircularParams::full(),
            seed: 0,
        }
    }

    /// Minutes on 2 cores: fewer gains, widths, samples and steps.
    pub fn quick() -> Self {
        let mut p = Self::full();
        p.theorem.gains = vec![2.0, 4.0];
        p.theorem.samples = 10_000;
        p.theorem.test_samples = 2_000;
        p.theorem.net = nets(64, 3000);
        p.chain.widths = vec![8, 32];
        p.chain.samples = 8_000;
        p.chain.test_samples = 2_000;
        p.chain.net = nets(64, 2500);
        p.chain.coders = score::CoderSettings {
            sae_steps: 1500,
            dl_rows: 1500,
            dl_lambda: 0.05,
        };
        p.calibration_ks = vec![2, 6];
        p.shift = shift::ShiftParams::quick();
        p.circular = circular::CircularParams::quick();
        p
    }

    /// Refuses what has no meaning, naming the parameter.
    pub fn validate(&self) -> Result<()> {
        let t = &self.theorem;
        t.process.check()?;
        super::require_grid("gains", &t.gains)?;
        for &g in &t.gains {
            ClusterConfig {
                gain: g,
                ..t.process.clone()
            }
            .check()?;
        }
        let c = &self.chain;
        c.process.check()?;
        super::require_grid("widths", &c.widths)?;
        for &m in c.widths.iter().chain([&self.break_width]) {
            if m == 0 {
                return Err(Error::param("widths", "a width M of 0 (M must be >= 1)"));
            }
        }
        for net in [&t.net, &c.net] {
            if !(net.temperature > 0.0 && net.temperature.is_finite()) {
                return Err(Error::param(
                    "temperature",
                    format!("{} (must be positive and finite)", net.temperature),
                ));
            }
            sparsecode::error::require_positive_count("steps", net.steps)?;
        }
        for (name, n) in [
            ("samples", t.samples.min(c.samples)),
            ("test_samples", t.test_samples.min(c.test_samples)),
            ("regression_outputs", c.regression_outputs),
        ] {
            sparsecode::error::require_positive_count(name, n)?;
        }
        for &k in &self.calibration_ks {
            PrototypeConfig {
                k,
                ..c.process.clone()
            }
            .check()
            .map_err(|_| {
                Error::param(
                    "calibration_ks",
                    format!("K = {k} (need 1 <= K < N = {})", c.process.latents),
                )
            })?;
        }
        self.shift.validate()?;
        self.circular.validate()
    }
}

/// Everything the experiment measured.
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// The theorem's setting.
    pub theorem: Vec<theorem::TheoremRow>,
    /// The chain over widths.
    pub chain: Vec<chain::ChainResult>,
    /// The break conditions.
    pub breaks: Vec<chain::ChainResult>,
    /// Circular factors.
    pub circular: Vec<circular::CircularRow>,
    /// Distribution shift.
    pub shift: Vec<shift::ShiftRow>,
    /// Sparsity calibration.
    pub calibration: Vec<calibration::CalibrationRow>,
}

/// Runs every part; `progress` is told the fraction done.
pub fn run(
    p: &IdentifiabilityParams,
    par: Parallelism,
    progress: &mut dyn FnMut(f64),
) -> Result<Results> {
    p.validate()?;
    let parts = 6.0;
    let theorem = theorem::run(&p.theorem, p.seed, par)?;
    progress(1.0 / parts);
    let mut chain = Vec::new();
    for (i, &m) in p.chain.widths.iter().enumerate() {
        let v = chain::Variation {
            label: format!("M = {m}"),
            process: p.chain.process.clone(),
            width: m,
            label_noise: 0.0,
            shortcut_dims: 0,
            steps: p.chain.net.steps,
            controls: true,
        };
        chain.push(chain::run_variation(&v, &p.chain, p.seed + 1000, par)?);
        progress((1.0 + (i + 1) as f64 / p.chain.widths.len() as f64) / parts);
    }
    let breaks = breaks::run(&p.chain, p.break_width, p.seed + 2000, par)?;
    progress(3.0 / parts);
    let circular = circular::run(&p.circular, &p.chain, p.seed + 3000, par)?;
    progress(4.0 / parts);
    let shift = shift::run(&p.shift, p.seed + 4000, par)?;
    progress(5.0 / parts);
    let n = p.chain.process.latents;
    let calibration = calibration::run(&p.chain, n, &p.calibration_ks, p.seed + 5000, par)?;
    progress(1.0);
    Ok(Results {
        theorem,
        chain,
        breaks,
        circular,
        shift,
        calibration,
    })
}
