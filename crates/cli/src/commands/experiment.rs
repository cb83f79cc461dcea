//! `sparsecode experiment NAME`: runs one of the paper's experiments (library `experiment`
//! module), prints its tables, and writes results.json, results.md and SVG figures to `--out`.

use crate::Outcome;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sparsecode::coding::{Basis, Coder};
use sparsecode::Parallelism;
use sparsecode_lab::experiment::methods::Method;
use sparsecode_lab::experiment::{
    additivity, amortisation, cs_bound, phase, sae_runs, scaling, stability, sweep, toy, Report,
};
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

/// Data and recipe flags of the SAE experiments (sweep, stability).
#[derive(clap::Args, Clone)]
pub struct SaeFlags {
    /// Activations [samples, d_in] .npy (default: a planted problem with known truth).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Share of the rows of --data held out for the metrics (the last ones).
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Architecture: topk or relu.
    #[arg(long, default_value = "topk")]
    arch: String,
    /// Latents.
    #[arg(long)]
    latents: Option<usize>,
    /// Training steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Batch size.
    #[arg(long)]
    batch: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f32>,
}

impl SaeFlags {
    fn apply(&self, r: &mut sae_runs::Recipe) {
        r.latents = self.latents.unwrap_or(r.latents);
        r.steps = self.steps.unwrap_or(r.steps);
        r.batch_size = self.batch.unwrap_or(r.batch_size);
        r.lr = self.lr.unwrap_or(r.lr);
    }

    fn data(&self, common: &Common) -> Result<sae_runs::ExperimentData> {
        Ok(match &self.data {
            Some(path) => sae_runs::ExperimentData::from_matrix(
                path.display().to_string(),
                super::read_data(path)?,
                self.test_fraction,
            )?,
            None if common.quick => sweep::SweepParams::quick_data(common.seed)?,
            None => sweep::SweepParams::full_data(common.seed)?,
        })
    }
}

#[derive(clap::Subcommand)]
enum Which {
    /// Code MCC over (N, M), over K and over training-set size, dictionary unknown (REFERENCE E5).
    Scaling {
        #[command(flatten)]
        common: Common,
        /// (N, M) pairs, comma-separated NxM (e.g. 16x16,32x16).
        #[arg(long, value_delimiter = ',')]
        grid: Option<Vec<String>>,
        /// K values of the K study, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ks: Option<Vec<usize>>,
        /// Training-set sizes of the data study, comma-separated.
        #[arg(long, value_delimiter = ',')]
        samples: Option<Vec<usize>>,
        /// Seeds per cell (grid and studies).
        #[arg(long)]
        seeds: Option<usize>,
        /// SAE steps.
        #[arg(long)]
        steps: Option<u64>,
        /// Methods: sae, sae-ito, sc (comma-separated).
        #[arg(long, value_delimiter = ',')]
        methods: Option<Vec<String>>,
    },
    /// Is f("A and B") = f(A) + f(B) for MiniLM sentence embeddings? 123 built-in pairs vs a null.
    Additivity {
        #[command(flatten)]
        common: Common,
    },
    /// Is the width enough for the codes' sparsity? M / (K ln(N/K)) and the Donoho-Tanner limit.
    CsBound {
        #[command(flatten)]
        common: Common,
        /// Activations [samples, d_in] .npy (without it: a planted demonstration).
        #[arg(long)]
        data: Option<PathBuf>,
        /// A trained SAE folder whose codes are checked.
        #[arg(long, conflicts_with = "dictionary")]
        sae: Option<PathBuf>,
        /// A dictionary [N, d_in] .npy, coded by FISTA.
        #[arg(long)]
        dictionary: Option<PathBuf>,
        /// L1 weight of the FISTA codes (with --dictionary).
        #[arg(long, default_value_t = 0.01)]
        lambda: f32,
        /// Signed FISTA codes (default: non-negative).
        #[arg(long)]
        signed: bool,
    },
    /// Train one architecture over sparsity settings; FVU against L0 with the knee.
    Sweep {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sae: SaeFlags,
        /// Sparsity settings, comma-separated: k values (topk) or L1 coefficients (relu).
        #[arg(long, value_delimiter = ',')]
        values: Option<Vec<f64>>,
    },
    /// Train R seeds of one configuration; pairwise dictionary and code MCC.
    Stability {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sae: SaeFlags,
        /// Sparsity setting: k (topk) or L1 coefficient (relu).
        #[arg(long)]
        value: Option<f64>,
        /// Seeds R.
        #[arg(long)]
        runs: Option<usize>,
    },
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

/// Parses `NxM`.
fn parse_pair(s: &str) -> Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("invalid --grid entry '{s}': expected NxM, e.g. 128x32");
    let (a, b) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    ))
}

impl Which {
    /// The experiment's name, whether `--quick` was given, and how long the full setting takes
    /// on 2 cores (measured by scripts/reproduce-experiments.sh).
    fn describe(&self) -> (&'static str, bool, &'static str) {
        match self {
            Which::Amortisation { common, .. } => {
                ("amortisation", common.quick, "about 15 minutes")
            }
            Which::Scaling { common, .. } => ("scaling", common.quick, "about an hour"),
            Which::PhaseTransition { common, .. } => {
                ("phase-transition", common.quick, "about 35 minutes")
            }
            Which::ToySuperposition { common, .. } => {
                ("toy-superposition", common.quick, "about a minute")
            }
            Which::Sweep { common, .. } => ("sweep", common.quick, "a few minutes"),
            Which::Stability { common, .. } => ("stability", common.quick, "a few minutes"),
            Which::CsBound { common, .. } => ("cs-bound", common.quick, "seconds"),
            Which::Additivity { common } => ("additivity", common.quick, "seconds"),
        }
    }
}

fn parse_methods(names: &[String]) -> sparsecode::Result<Vec<Method>> {
    names.iter().map(|s| Method::parse(s)).collect()
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let par = Parallelism::threads(threads);
    let pb = bar();
    let mut progress = |f: f64| pb.set_position((f * 1000.0) as u64);
    let (name, quick, full) = a.which.describe();
    // (Experiments that take seconds either way need no warning.)
    if !quick && full != "seconds" {
        eprintln!(
            "{name}: the full (published-size) setting takes {full} on 2 cores; --quick runs a small version in under two minutes"
        );
    }
    match a.which {
        Which::Scaling {
            common,
            grid,
            ks,
            samples,
            seeds,
            steps,
            methods,
        } => {
            let mut p = if common.quick {
                scaling::ScalingParams::quick()
            } else {
                scaling::ScalingParams::full()
            };
            p.seed = common.seed;
            if let Some(g) = grid {
                p.grid = g.iter().map(|s| parse_pair(s)).collect::<Result<_>>()?;
            }
            p.ks = ks.unwrap_or(p.ks);
            p.sample_sizes = samples.unwrap_or(p.sample_sizes);
            p.seeds = seeds.unwrap_or(p.seeds);
            p.study_seeds = seeds.unwrap_or(p.study_seeds);
            p.steps = steps.unwrap_or(p.steps);
            if let Some(m) = methods {
                p.methods = parse_methods(&m)?;
                p.study_methods = p.methods.clone();
            }
            let r = scaling::run(&p, par, &mut progress)?;
            pb.finish_and_clear();
            finish(r, &common, serde_json::to_value(&p)?, threads)
        }
        Which::Additivity { common } => {
            // The experiment is small: --quick and the full setting are the same.
            let bert = sparsecode_harvest::bert::Bert::minilm()?;
            let mut embed = |texts: &[String]| -> sparsecode::Result<Vec<Vec<f32>>> {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                bert.embed(&refs).map_err(|e| sparsecode::Error::Empty {
                    context: "MiniLM embedding".into(),
                    reason: e.to_string(),
                })
            };
            let r = additivity::run(additivity::PAIRS, common.seed, &mut embed)?;
            pb.finish_and_clear();
            finish(
                r,
                &common,
                json!({"model": "all-MiniLM-L6-v2", "pairs": additivity::PAIRS.len()}),
                threads,
            )
        }
        Which::CsBound {
            common,
            data,
            sae,
            dictionary,
            lambda,
            signed,
        } => {
            let r = match (&data, &sae, &dictionary) {
                (None, None, None) => cs_bound::quick(par)?,
                (Some(d), Some(s), None) => {
                    let x = super::read_data(d)?;
                    let model = sparsecode::sae::load(s)?;
                    let c = cs_bound::check(&d.display().to_string(), &x, (Basis::Sae(&model), Coder::Sae), par)?;
                    cs_bound::report(&[c])
                }
                (Some(d), None, Some(dict)) => {
                    let x = super::read_data(d)?;
                    let dm = super::read_data(dict)?;
                    let c = cs_bound::check(
                        &d.display().to_string(),
                        &x,
                        (Basis::Dictionary(&dm), cs_bound::fista_codes(lambda, !signed)),
                        par,
                    )?;
                    cs_bound::report(&[c])
                }
                _ => anyhow::bail!("give --data with --sae or --dictionary (or none of them for the planted demonstration)"),
            };
            pb.finish_and_clear();
            finish(
                r,
                &common,
                json!({"data": data, "sae": sae, "dictionary": dictionary, "lambda": lambda, "signed": signed}),
                threads,
            )
        }
        Which::Sweep {
            common,
            sae,
            values,
        } => {
            let mut p = if common.quick {
                sweep::SweepParams::quick()
            } else {
                sweep::SweepParams::full()
            };
            p.seed = common.seed;
            p.kind = sae_runs::SaeKind::parse(&sae.arch)?;
            if p.kind == sae_runs::SaeKind::Relu && values.is_none() {
                p.values = vec![0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0];
            }
            p.values = values.unwrap_or(p.values);
            sae.apply(&mut p.recipe);
            let data = sae.data(&common)?;
            let r = sweep::run(&p, &data, par, &mut progress)?;
            pb.finish_and_clear();
            finish(r, &common, serde_json::to_value(&p)?, threads)
        }
        Which::Stability {
            common,
            sae,
            value,
            runs,
        } => {
            let mut p = if common.quick {
                stability::StabilityParams::quick()
            } else {
                stability::StabilityParams::full()
            };
            p.seed = common.seed;
            p.kind = sae_runs::SaeKind::parse(&sae.arch)?;
            if p.kind == sae_runs::SaeKind::Relu && value.is_none() {
                p.value = 0.2;
            }
            p.value = value.unwrap_or(p.value);
            p.runs = runs.unwrap_or(p.runs);
            sae.apply(&mut p.recipe);
            let data = sae.data(&common)?;
            let r = stability::run(&p, &data, par, &mut progress)?;
            pb.finish_and_clear();
            finish(r, &common, serde_json::to_value(&p)?, threads)
        }
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
