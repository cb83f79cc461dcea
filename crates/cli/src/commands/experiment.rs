//! `sparsecode experiment NAME`: runs one of the paper's experiments (library `experiment`
//! module), prints its tables, and writes results.json, results.md and SVG figures to `--out`.

use crate::Outcome;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sparsecode::experiment::methods::Method;
use sparsecode::experiment::{amortisation, phase, toy, Report};
use sparsecode::Parallelism;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

/// Flags every experiment takes.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// The small setting (under two minutes on 2 cores); the default is the published size.
    #[arg(long)]
    quick: bool,
    /// Output folder: results.json, results.md, *.svg.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    force: bool,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Subcommand)]
enum Which {
    /// Toy Models of Superposition (REFERENCE E8), then an SAE on the toy's hidden layer.
    ToySuperposition {
        #[command(flatten)]
        common: Common,
        /// Feature sparsities S (probability a feature is zero), comma-separated.
        #[arg(long, value_delimiter = ',')]
        sparsities: Option<Vec<f64>>,
        /// Toy model steps.
        #[arg(long)]
        steps: Option<u64>,
    },
    /// The amortisation gap: SAE, SAE + ITO and sparse coding, dictionary known and unknown
    /// (REFERENCE E2, E4).
    Amortisation {
        #[command(flatten)]
        common: Common,
        /// Seeds (each a new dataset).
        #[arg(long)]
        seeds: Option<usize>,
        /// Latents N.
        #[arg(long)]
        latents: Option<usize>,
        /// Dimensions M.
        #[arg(long)]
        dims: Option<usize>,
        /// Active latents K.
        #[arg(long)]
        k: Option<usize>,
        /// Methods: sae, sae-ito, sc (comma-separated).
        #[arg(long, value_delimiter = ',')]
        methods: Option<Vec<String>>,
    },
    /// Donoho-Tanner phase transition of basis pursuit and OMP (REFERENCE E1).
    PhaseTransition {
        #[command(flatten)]
        common: Common,
        /// Number of atoms N.
        #[arg(long)]
        atoms: Option<usize>,
        /// delta = M/N values, comma-separated.
        #[arg(long, value_delimiter = ',')]
        deltas: Option<Vec<f64>>,
        /// rho = K/M values, comma-separated.
        #[arg(long, value_delimiter = ',')]
        rhos: Option<Vec<f64>>,
        /// Trials per cell.
        #[arg(long)]
        trials: Option<usize>,
        /// Methods: bp, omp (comma-separated).
        #[arg(long, value_delimiter = ',')]
        methods: Option<Vec<String>>,
        /// Signed codes only (skip non-negative ones).
        #[arg(long)]
        signed_only: bool,
    },
}

fn bar() -> ProgressBar {
    let b = ProgressBar::new(1000);
    b.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {percent}% (eta {eta}) {msg}",
        )
        .expect("the template is valid"),
    );
    b
}

fn finish(
    report: Report,
    common: &Common,
    config: serde_json::Value,
    threads: usize,
) -> Result<Outcome> {
    for t in &report.tables {
        println!("{}", t.to_markdown());
    }
    for n in &report.notes {
        println!("- {n}");
    }
    let mut record = sparsecode::io::record::provenance("experiment");
    record["config"] = config;
    record["seed"] = json!(common.seed);
    record["quick"] = json!(common.quick);
    record["threads"] = json!(threads);
    let dest = report.write(&common.out, common.force, record)?;
    eprintln!("wrote {}", dest.display());
    Ok(Outcome::Ok)
}

fn parse_methods(names: &[String]) -> sparsecode::Result<Vec<Method>> {
    names.iter().map(|s| Method::parse(s)).collect()
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let par = Parallelism::threads(threads);
    let pb = bar();
    let mut progress = |f: f64| pb.set_position((f * 1000.0) as u64);
    match a.which {
        Which::ToySuperposition {
            common,
            sparsities,
            steps,
        } => {
            let mut p = if common.quick {
                toy::ToyParams::quick()
            } else {
                toy::ToyParams::full()
            };
            p.seed = common.seed;
            p.sparsities = sparsities.unwrap_or(p.sparsities);
            p.steps = steps.unwrap_or(p.steps);
            let r = toy::run(&p, par, &mut progress)?;
            pb.finish_and_clear();
            finish(r, &common, serde_json::to_value(&p)?, threads)
        }
        Which::Amortisation {
            common,
            seeds,
            latents,
            dims,
            k,
            methods,
        } => {
            let mut p = if common.quick {
                amortisation::AmortisationParams::quick()
            } else {
                amortisation::AmortisationParams::full()
            };
            p.seed = common.seed;
            p.seeds = seeds.unwrap_or(p.seeds);
            p.latents = latents.unwrap_or(p.latents);
            p.dims = dims.unwrap_or(p.dims);
            p.k = k.unwrap_or(p.k);
            if let Some(m) = methods {
                p.methods = parse_methods(&m)?;
            }
            let r = amortisation::run(&p, par, &mut progress)?;
            pb.finish_and_clear();
            finish(r, &common, serde_json::to_value(&p)?, threads)
        }
        Which::PhaseTransition {
            common,
            atoms,
            deltas,
            rhos,
            trials,
            methods,
            signed_only,
        } => {
            let mut p = if common.quick {
                phase::PhaseParams::quick()
            } else {
                phase::PhaseParams::full()
            };
            p.seed = common.seed;
            p.atoms = atoms.unwrap_or(p.atoms);
            p.deltas = deltas.unwrap_or(p.deltas);
            p.rhos = rhos.unwrap_or(p.rhos);
            p.trials = trials.unwrap_or(p.trials);
            if let Some(m) = methods {
                p.methods = m
                    .iter()
                    .map(|s| phase::PhaseMethod::parse(s))
                    .collect::<sparsecode::Result<_>>()?;
            }
            p.nonneg &= !signed_only;
            let r = phase::run(&p, par, &mut progress)?;
            pb.finish_and_clear();
            finish(r, &common, serde_json::to_value(&p)?, threads)
        }
    }
}
