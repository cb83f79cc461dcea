//! `sparsecode demo`: the main job on an embedded default.

use crate::Outcome;
use anyhow::Result;
use sparsecode::data::Support;
use sparsecode_lab::demo::{run as run_demo, to_markdown, DemoConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Seed of the planted problem and of training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A smaller, faster problem (for smoke tests).
    #[arg(long)]
    quick: bool,
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let mut cfg = DemoConfig {
        threads,
        ..DemoConfig::default()
    };
    cfg.synth.seed = a.seed;
    if a.quick {
        cfg.synth.latents = 64;
        cfg.synth.dims = 32;
        cfg.synth.samples = 4000;
        cfg.synth.test_samples = 1000;
        cfg.steps = 800;
        cfg.batch_size = 256;
    }
    let started = std::time::Instant::now();
    let report = run_demo(&cfg, &mut |stage| {
        eprintln!("[{:6.1}s] {stage}", started.elapsed().as_secs_f64())
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let s = &cfg.synth;
        let active = match s.support {
            Support::Exact { k } => format!("{k} active per sample"),
            Support::Bernoulli { p } => format!("each active with probability {p}"),
        };
        println!(
            "Planted problem: {} latents in {} dims, {active}, {} train / {} test samples (seed {}).\n",
            s.latents, s.dims, s.samples, s.test_samples, s.seed
        );
        println!("{}", to_markdown(&report));
        println!("code MCC: matched |correlation| with the true codes (1 = every feature recovered); dict MCC: matched |cosine| of atoms.");
    }
    Ok(Outcome::Ok)
}
