//! `sparsecode synth`: synthetic superposition data with its ground truth.

use crate::Outcome;
use anyhow::Result;
use clap::ValueEnum;
use sparsecode::data::{generate, Correlation, Hierarchy, Magnitude, Support, SynthConfig};
use sparsecode::io::{write_json_atomic, write_matrix, OutputDir};
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum MagnitudeArg {
    AbsNormal,
    Uniform,
    Exponential,
    Constant,
    SignedNormal,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Preset {
    /// arXiv 2411.13117: N=16, M=8, K=3, |N(0,1)|, 1024 train + 1024 test.
    E2,
}

#[derive(clap::Args)]
pub struct Args {
    /// Start from a published setting; explicit flags override it.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Number of true latents N.
    #[arg(long)]
    latents: Option<usize>,
    /// Activation width M.
    #[arg(long)]
    dims: Option<usize>,
    /// Exactly K active latents per sample.
    #[arg(long, conflicts_with = "firing_prob")]
    active: Option<usize>,
    /// Instead of --active: each latent fires with this probability.
    #[arg(long)]
    firing_prob: Option<f64>,
    /// Training samples.
    #[arg(long)]
    samples: Option<usize>,
    /// Held-out samples (written as test_activations.npy / test_codes.npy).
    #[arg(long)]
    test_samples: Option<usize>,
    /// Distribution of active values.
    #[arg(long, value_enum)]
    magnitude: Option<MagnitudeArg>,
    /// Add Gaussian noise at this signal-to-noise ratio (dB).
    #[arg(long)]
    snr_db: Option<f64>,
    /// Parent latents 0..P, each with --children children that imply it (a child's samples also
    /// carry its parent); the pairs are written to hierarchy.json.
    #[arg(long, requires = "children")]
    parents: Option<usize>,
    /// Children per parent (after the parents in latent order).
    #[arg(long, requires = "parents")]
    children: Option<usize>,
    /// Correlation in [0, 1) of the Gaussians that choose the supports, within blocks of
    /// --correlation-block consecutive latents.
    #[arg(long)]
    correlation: Option<f64>,
    /// Latents per correlated block.
    #[arg(long, default_value_t = 4, requires = "correlation")]
    correlation_block: usize,
    /// Use this dictionary ([N, M] .npy; rows are scaled to unit norm) instead of a Gaussian one.
    #[arg(long)]
    dictionary: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    force: bool,
}

fn need<T>(v: Option<T>, flag: &str) -> Result<T> {
    v.ok_or_else(|| anyhow::anyhow!("missing `--{flag}` (or use --preset e2)"))
}

pub fn run(a: Args) -> Result<Outcome> {
    let base = a.preset.map(|Preset::E2| SynthConfig::e2(a.seed));
    let support = match (a.active, a.firing_prob) {
        (Some(k), _) => Support::Exact { k },
        (None, Some(p)) => Support::Bernoulli { p },
        (None, None) => need(base.as_ref().map(|b| b.support), "active")?,
    };
    let magnitude = match a.magnitude {
        Some(MagnitudeArg::AbsNormal) => Magnitude::AbsNormal,
        Some(MagnitudeArg::Uniform) => Magnitude::Uniform,
        Some(MagnitudeArg::Exponential) => Magnitude::Exponential,
        Some(MagnitudeArg::Constant) => Magnitude::Constant,
        Some(MagnitudeArg::SignedNormal) => Magnitude::SignedNormal,
        None => base
            .as_ref()
            .map(|b| b.magnitude)
            .unwrap_or(Magnitude::AbsNormal),
    };
    let cfg = SynthConfig {
        latents: need(a.latents.or(base.as_ref().map(|b| b.latents)), "latents")?,
        dims: need(a.dims.or(base.as_ref().map(|b| b.dims)), "dims")?,
        support,
        magnitude,
        samples: need(a.samples.or(base.as_ref().map(|b| b.samples)), "samples")?,
        test_samples: a
            .test_samples
            .or(base.as_ref().map(|b| b.test_samples))
            .unwrap_or(0),
        snr_db: a.snr_db,
        seed: a.seed,
        hierarchy: a
            .parents
            .zip(a.children)
            .map(|(parents, children)| Hierarchy { parents, children }),
        correlation: a.correlation.map(|rho| Correlation {
            rho,
            block: a.correlation_block,
        }),
    };
    let dict = a.dictionary.as_deref().map(super::read_data).transpose()?;
    cfg.validate(dict.as_ref())?;
    let out = OutputDir::create(&a.out, a.force)?;
    let data = generate(&cfg, dict.as_ref())?;
    write_matrix(&out.join("activations.npy"), &data.train.activations)?;
    write_matrix(&out.join("codes.npy"), &data.train.codes)?;
    write_matrix(&out.join("dictionary.npy"), &data.dictionary)?;
    if let Some(t) = &data.test {
        write_matrix(&out.join("test_activations.npy"), &t.activations)?;
        write_matrix(&out.join("test_codes.npy"), &t.codes)?;
    }
    if let Some(h) = cfg.hierarchy {
        let pairs = serde_json::json!({ "pairs": h.pairs() });
        write_json_atomic(&out.join("hierarchy.json"), &pairs)?;
    }
    let mut record = sparsecode::io::record::provenance("synth");
    record["config"] = serde_json::to_value(&cfg)?;
    record["dictionary_file"] = serde_json::json!(a.dictionary);
    record["noise_std"] = serde_json::json!(data.noise_std);
    write_json_atomic(&out.join("synth.json"), &record)?;
    let dest = out.commit()?;
    eprintln!(
        "wrote {}: {} x {} activations from {} latents ({} test samples)",
        dest.display(),
        cfg.samples,
        cfg.dims,
        cfg.latents,
        cfg.test_samples
    );
    Ok(Outcome::Ok)
}
