//! `sparsecode experiment NAME`: runs one of the paper's experiments (library `experiment`
//! module), prints its tables, and writes results.json, results.md and SVG figures to `--out`.

use crate::Outcome;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sparsecode::coding::{Basis, Coder};
use sparsecode::io::OutputDir;
use sparsecode::Parallelism;
use sparsecode_lab::experiment::methods::Method;
use sparsecode_lab::experiment::{
    self, additivity, amortisation, cs_bound, fashion, identifiability, natural_images, phase,
    sae_runs, scaling, scenes, stability, sweep, toy, Report,
};
use std::path::{Path, PathBuf};

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
    Scaling(Scaling),
    /// Is f("A and B") = f(A) + f(B) for MiniLM sentence embeddings? 123 built-in pairs vs a null.
    Additivity(Additivity),
    /// Is the width enough for the codes' sparsity? M / (K ln(N/K)) and the Donoho-Tanner limit.
    CsBound(CsBound),
    /// Train one architecture over sparsity settings; FVU against L0 with the knee.
    Sweep(Sweep),
    /// Train R seeds of one configuration; pairwise dictionary and code MCC.
    Stability(Stability),
    /// Toy Models of Superposition (REFERENCE E8), then an SAE on the toy's hidden layer.
    ToySuperposition(ToySuperposition),
    /// Feature absorption on a planted hierarchy: TopK, BatchTopK and Matryoshka BatchTopK.
    Absorption(AbsorptionExp),
    /// The amortisation gap: SAE, SAE + ITO and sparse coding, dictionary known and unknown
    /// (REFERENCE E2, E4).
    Amortisation(Amortisation),
    /// Donoho-Tanner phase transition of basis pursuit and OMP (REFERENCE E1).
    PhaseTransition(PhaseTransition),
    /// Does a classifier recover its data's latents up to a linear map, and does the chain
    /// latents -> classifier -> SAE lift them back out? (REFERENCE section 7)
    Identifiability(Identifiability),
    /// Olshausen & Field: whitened photograph patches, dictionary learning and TopK/ReLU SAEs,
    /// every atom fitted by a 2-D Gabor (REFERENCE E10).
    NaturalImages(NaturalImages),
    /// The identifiability chain on rendered scenes with known sparse factors (shapes with
    /// position, scale, orientation, colour): classifier trained vs untrained.
    Scenes(Scenes),
    /// An MLP trained on Fashion-MNIST, a TopK SAE on its penultimate activations, and sparse
    /// probing of the SAE's latents, the neurons and random directions.
    FashionMnist(FashionMnist),
}

#[derive(clap::Args)]
struct FashionMnist {
    #[command(flatten)]
    common: Common,
    /// The folder of the four IDX files. Default: the fetched ones (`scripts/fetch-assets
    /// fashion-mnist`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training steps of the classifier.
    #[arg(long)]
    steps: Option<usize>,
}

#[derive(clap::Args)]
struct Scenes {
    #[command(flatten)]
    common: Common,
    /// Image side in pixels.
    #[arg(long)]
    size: Option<usize>,
    /// Objects per scene.
    #[arg(long)]
    objects: Option<usize>,
    /// Training steps of the classifier.
    #[arg(long)]
    steps: Option<usize>,
}

#[derive(clap::Args)]
struct NaturalImages {
    #[command(flatten)]
    common: Common,
    /// A folder of photographs (.jpg, .jpeg, .png). Default: the fetched public-domain ones
    /// (`scripts/fetch-assets images`).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Patch side in pixels.
    #[arg(long)]
    patch: Option<usize>,
    /// Atoms as multiples of the patch's pixels, comma-separated (1: complete).
    #[arg(long, value_delimiter = ',')]
    overcomplete: Option<Vec<f64>>,
    /// Training steps of each SAE.
    #[arg(long)]
    steps: Option<u64>,
    /// Training patches.
    #[arg(long)]
    patches: Option<usize>,
}

#[derive(clap::Args)]
struct Identifiability {
    #[command(flatten)]
    common: Common,
    /// Representation widths M of the sparse chain, comma-separated.
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<usize>>,
    /// Classes C (the theorem's setting and the sparse chain).
    #[arg(long)]
    classes: Option<usize>,
    /// Latents N of the sparse chain.
    #[arg(long)]
    latents: Option<usize>,
    /// Active latents K of the sparse chain.
    #[arg(long)]
    k: Option<usize>,
    /// Generator gains of the theorem's setting, comma-separated.
    #[arg(long, value_delimiter = ',')]
    gains: Option<Vec<f32>>,
    /// Initial temperature of the normalised head (learned from there).
    #[arg(long, allow_hyphen_values = true)]
    temperature: Option<f32>,
    /// Training steps of the classifiers.
    #[arg(long)]
    steps: Option<usize>,
}

#[derive(clap::Args)]
struct Scaling {
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
}

#[derive(clap::Args)]
struct Additivity {
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
struct CsBound {
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
}

#[derive(clap::Args)]
struct Sweep {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    sae: SaeFlags,
    /// Sparsity settings, comma-separated: k values (topk) or L1 coefficients (relu).
    #[arg(long, value_delimiter = ',')]
    values: Option<Vec<f64>>,
}

#[derive(clap::Args)]
struct Stability {
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
}

#[derive(clap::Args)]
struct AbsorptionExp {
    #[command(flatten)]
    common: Common,
    /// Active latents per sample of the SAEs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    ks: Option<Vec<usize>>,
    /// Seeds (datasets and SAEs).
    #[arg(long)]
    seeds: Option<usize>,
    /// Training steps of each SAE.
    #[arg(long)]
    steps: Option<u64>,
}

#[derive(clap::Args)]
struct ToySuperposition {
    #[command(flatten)]
    common: Common,
    /// Feature sparsities S (probability a feature is zero), comma-separated.
    #[arg(long, value_delimiter = ',')]
    sparsities: Option<Vec<f64>>,
    /// Toy model steps.
    #[arg(long)]
    steps: Option<u64>,
}

#[derive(clap::Args)]
struct Amortisation {
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
}

#[derive(clap::Args)]
struct PhaseTransition {
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
    out: OutputDir,
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
    let dest = report.write_into(out, record)?;
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

fn parse_methods(names: &[String]) -> sparsecode::Result<Vec<Method>> {
    names.iter().map(|s| Method::parse(s)).collect()
}

/// The quick or the full preset of an experiment's parameters.
fn preset<P>(common: &Common, quick: fn() -> P, full: fn() -> P) -> P {
    if common.quick {
        quick()
    } else {
        full()
    }
}

/// An experiment's report and the parameters it ran with (for the run record).
type Done = (Report, serde_json::Value);
type Progress<'a> = &'a mut dyn FnMut(f64);

impl Which {
    /// The experiment's name (as on the command line) and its common flags.
    fn describe(&self) -> (&'static str, &Common) {
        match self {
            Which::Amortisation(a) => ("amortisation", &a.common),
            Which::Scaling(a) => ("scaling", &a.common),
            Which::PhaseTransition(a) => ("phase-transition", &a.common),
            Which::Identifiability(a) => ("identifiability", &a.common),
            Which::NaturalImages(a) => ("natural-images", &a.common),
            Which::Scenes(a) => ("scenes", &a.common),
            Which::FashionMnist(a) => ("fashion-mnist", &a.common),
            Which::ToySuperposition(a) => ("toy-superposition", &a.common),
            Which::Sweep(a) => ("sweep", &a.common),
            Which::Stability(a) => ("stability", &a.common),
            Which::Absorption(a) => ("absorption", &a.common),
            Which::CsBound(a) => ("cs-bound", &a.common),
            Which::Additivity(a) => ("additivity", &a.common),
        }
    }

    /// Runs the experiment; `run_dir` is the (temporary) output folder, for the experiments that
    /// write files of their own there.
    fn run(self, par: Parallelism, progress: Progress, run_dir: &Path) -> Result<Done> {
        match self {
            Which::Scaling(a) => a.run(par, progress),
            Which::Additivity(a) => a.run(),
            Which::CsBound(a) => a.run(par),
            Which::Sweep(a) => a.run(par, progress),
            Which::Stability(a) => a.run(par, progress),
            Which::Absorption(a) => a.run(par, progress),
            Which::ToySuperposition(a) => a.run(par, progress),
            Which::Amortisation(a) => a.run(par, progress),
            Which::PhaseTransition(a) => a.run(par, progress),
            Which::Identifiability(a) => a.run(par, progress),
            Which::NaturalImages(a) => a.run(par, progress),
            Which::Scenes(a) => a.run(par, run_dir),
            Which::FashionMnist(a) => a.run(par, run_dir),
        }
    }
}

impl Scaling {
    fn run(self, par: Parallelism, progress: Progress) -> Result<Done> {
        let common = &self.common;
        let mut p = preset(
            common,
            scaling::ScalingParams::quick,
            scaling::ScalingParams::full,
        );
        p.seed = common.seed;
        if let Some(g) = self.grid {
            p.grid = g.iter().map(|s| parse_pair(s)).collect::<Result<_>>()?;
        }
        p.ks = self.ks.unwrap_or(p.ks);
        p.sample_sizes = self.samples.unwrap_or(p.sample_sizes);
        p.seeds = self.seeds.unwrap_or(p.seeds);
        p.study_seeds = self.seeds.unwrap_or(p.study_seeds);
        p.steps = self.steps.unwrap_or(p.steps);
        if let Some(m) = self.methods {
            p.methods = parse_methods(&m)?;
            p.study_methods = p.methods.clone();
        }
        Ok((scaling::run(&p, par, progress)?, serde_json::to_value(&p)?))
    }
}

impl Additivity {
    /// The experiment is small: --quick and the full setting are the same.
    fn run(self) -> Result<Done> {
        let bert = sparsecode_harvest::bert::Bert::minilm()?;
        let mut embed = |texts: &[String]| -> sparsecode::Result<Vec<Vec<f32>>> {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            bert.embed(&refs).map_err(|e| sparsecode::Error::Empty {
                context: "MiniLM embedding".into(),
                reason: e.to_string(),
            })
        };
        let r = additivity::run(additivity::PAIRS, self.common.seed, &mut embed)?;
        let config = json!({"model": "all-MiniLM-L6-v2", "pairs": additivity::PAIRS.len()});
        Ok((r, config))
    }
}

impl CsBound {
    fn run(self, par: Parallelism) -> Result<Done> {
        let r = match (&self.data, &self.sae, &self.dictionary) {
            (None, None, None) => cs_bound::quick(par)?,
            (Some(d), Some(s), None) => {
                let x = super::read_data(d)?;
                let model = sparsecode::sae::load(s)?;
                let basis = (Basis::Sae(&model), Coder::Sae);
                cs_bound::report(&[cs_bound::check(&d.display().to_string(), &x, basis, par)?])
            }
            (Some(d), None, Some(dict)) => {
                let x = super::read_data(d)?;
                let dm = super::read_data(dict)?;
                let coder = cs_bound::fista_codes(self.lambda, !self.signed);
                let basis = (Basis::Dictionary(&dm), coder);
                cs_bound::report(&[cs_bound::check(&d.display().to_string(), &x, basis, par)?])
            }
            _ => anyhow::bail!("give --data with --sae or --dictionary (or none of them for the planted demonstration)"),
        };
        let config = json!({"data": self.data, "sae": self.sae, "dictionary": self.dictionary,
            "lambda": self.lambda, "signed": self.signed});
        Ok((r, config))
    }
}

impl Sweep {
    fn run(self, par: Parallelism, progress: Progress) -> Result<Done> {
        let common = &self.common;
        let kind = sae_runs::SaeKind::parse(&self.sae.arch)?;
        let mut p =
            preset(common, sweep::SweepParams::quick, sweep::SweepParams::full).with_kind(kind);
        p.seed = common.seed;
        p.values = self.values.unwrap_or(p.values);
        self.sae.apply(&mut p.recipe);
        let data = self.sae.data(common)?;
        Ok((
            sweep::run(&p, &data, par, progress)?,
            serde_json::to_value(&p)?,
        ))
    }
}

impl Stability {
    fn run(self, par: Parallelism, progress: Progress) -> Result<Done> {
        let common = &self.common;
        let kind = sae_runs::SaeKind::parse(&self.sae.arch)?;
        let (quick, full) = (
            stability::StabilityParams::quick,
            stability::StabilityParams::full,
        );
        let mut p = preset(common, quick, full).with_kind(kind);
        p.seed = common.seed;
        p.value = self.value.unwrap_or(p.value);
        p.runs = self.runs.unwrap_or(p.runs);
        self.sae.apply(&mut p.recipe);
        let data = self.sae.data(common)?;
        Ok((
            stability::run(&p, &data, par, progress)?,
            serde_json::to_value(&p)?,
        ))
    }
}

impl Identifiability {
    fn run(self, par: Parallelism, progress: Progress) -> Result<Done> {
        let (quick, full) = (
            identifiability::IdentifiabilityParams::quick,
            identifiability::IdentifiabilityParams::full,
        );
        let mut p = preset(&self.common, quick, full);
        p.seed = self.common.seed;
        p.chain.widths = self.widths.unwrap_or(p.chain.widths);
        if let Some(c) = self.classes {
            p.theorem.process.classes = c;
            p.chain.process.classes = c;
        }
        p.chain.process.latents = self.latents.unwrap_or(p.chain.process.latents);
        p.chain.process.k = self.k.unwrap_or(p.chain.process.k);
        p.theorem.gains = self.gains.unwrap_or(p.theorem.gains);
        for net in [&mut p.theorem.net, &mut p.chain.net] {
            net.temperature = self.temperature.unwrap_or(net.temperature);
            net.steps = self.steps.unwrap_or(net.steps);
        }
        let results = identifiability::run(&p, par, progress)?;
        let report = identifiability::report(&p, &results);
        Ok((report, serde_json::to_value(&p)?))
    }
}

impl FashionMnist {
    fn run(self, par: Parallelism, run_dir: &Path) -> Result<Done> {
        let mut p = preset(
            &self.common,
            fashion::FashionParams::quick,
            fashion::FashionParams::full,
        );
        p.seed = self.common.seed;
        p.net.steps = self.steps.unwrap_or(p.net.steps);
        let dir = match self.data {
            Some(d) => d,
            None => sparsecode_harvest::assets::require(
                sparsecode_harvest::assets::Asset::FashionMnist,
            )?,
        };
        let results = fashion::run(&dir, run_dir, &p, par)?;
        Ok((fashion::report(&p, &results), serde_json::to_value(&p)?))
    }
}

impl Scenes {
    fn run(self, par: Parallelism, run_dir: &Path) -> Result<Done> {
        let mut p = preset(
            &self.common,
            scenes::ScenesParams::quick,
            scenes::ScenesParams::full,
        );
        p.seed = self.common.seed;
        p.scene.size = self.size.unwrap_or(p.scene.size);
        p.scene.objects = self.objects.unwrap_or(p.scene.objects);
        p.net.steps = self.steps.unwrap_or(p.net.steps);
        let results = scenes::run(&p, run_dir, par)?;
        Ok((scenes::report(&p, &results), serde_json::to_value(&p)?))
    }
}

impl NaturalImages {
    fn run(self, par: Parallelism, progress: Progress) -> Result<Done> {
        let (quick, full) = (
            natural_images::NaturalImagesParams::quick,
            natural_images::NaturalImagesParams::full,
        );
        let mut p = preset(&self.common, quick, full);
        p.seed = self.common.seed;
        p.patch = self.patch.unwrap_or(p.patch);
        p.overcomplete = self.overcomplete.unwrap_or(p.overcomplete);
        p.sae_steps = self.steps.unwrap_or(p.sae_steps);
        p.train_patches = self.patches.unwrap_or(p.train_patches);
        let dir = match self.images {
            Some(d) => d,
            None => sparsecode_harvest::assets::require(sparsecode_harvest::assets::Asset::Images)?,
        };
        let photos = photographs(&dir)?;
        let results = natural_images::run(&photos, &p, par, progress)?;
        let report = natural_images::report(&p, &results);
        Ok((report, serde_json::to_value(&p)?))
    }
}

/// The photographs in `dir` (by extension), sorted by name.
fn photographs(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| sparsecode::Error::io(dir, e))?;
    let mut photos: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    photos.sort();
    if photos.is_empty() {
        return Err(sparsecode::Error::param(
            "images",
            format!("no photographs (.jpg, .jpeg, .png) in {}", dir.display()),
        )
        .into());
    }
    Ok(photos)
}

impl AbsorptionExp {
    fn run(self, par: Parallelism, progress: Progress) -> Result<Done> {
        use sparsecode_lab::experiment::absorption::{run, AbsorptionParams};
        let mut p = preset(
            &self.common,
            AbsorptionParams::quick,
            AbsorptionParams::full,
        );
        p.seed = self.common.seed;
        p.ks = self.ks.unwrap_or(p.ks);
        p.seeds = self.seeds.unwrap_or(p.seeds);
        p.steps = self.steps.unwrap_or(p.steps);
        Ok((run(&p, par, progress)?, serde_json::to_value(&p)?))
    }
}

impl ToySuperposition {
    fn run(self, par: Parallelism, progress: Progress) -> Result<Done> {
        let mut p = preset(&self.common, toy::ToyParams::quick, toy::ToyParams::full);
        p.seed = self.common.seed;
        p.sparsities = self.sparsities.unwrap_or(p.sparsities);
        p.steps = self.steps.unwrap_or(p.steps);
        Ok((toy::run(&p, par, progress)?, serde_json::to_value(&p)?))
    }
}

impl Amortisation {
    fn run(self, par: Parallelism, progress: Progress) -> Result<Done> {
        let (quick, full) = (
            amortisation::AmortisationParams::quick,
            amortisation::AmortisationParams::full,
        );
        let mut p = preset(&self.common, quick, full);
        p.seed = self.common.seed;
        p.seeds = self.seeds.unwrap_or(p.seeds);
        p.latents = self.latents.unwrap_or(p.latents);
        p.dims = self.dims.unwrap_or(p.dims);
        p.k = self.k.unwrap_or(p.k);
        if let Some(m) = self.methods {
            p.methods = parse_methods(&m)?;
        }
        Ok((
            amortisation::run(&p, par, progress)?,
            serde_json::to_value(&p)?,
        ))
    }
}

impl PhaseTransition {
    fn run(self, par: Parallelism, progress: Progress) -> Result<Done> {
        let mut p = preset(
            &self.common,
            phase::PhaseParams::quick,
            phase::PhaseParams::full,
        );
        p.seed = self.common.seed;
        p.atoms = self.atoms.unwrap_or(p.atoms);
        p.deltas = self.deltas.unwrap_or(p.deltas);
        p.rhos = self.rhos.unwrap_or(p.rhos);
        p.trials = self.trials.unwrap_or(p.trials);
        if let Some(m) = self.methods {
            let parse = |s: &String| phase::PhaseMethod::parse(s);
            p.methods = m.iter().map(parse).collect::<sparsecode::Result<_>>()?;
        }
        p.nonneg &= !self.signed_only;
        Ok((phase::run(&p, par, progress)?, serde_json::to_value(&p)?))
    }
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let (name, common) = a.which.describe();
    let common = common.clone();
    if let Some(full) = experiment::full_duration(name).filter(|_| !common.quick) {
        eprintln!(
            "{name}: the full (published-size) setting takes {full} on 2 cores; --quick runs a small version in under two minutes"
        );
    }
    // Taken before the work: an existing folder (without --force) or another writer is refused
    // at once, and the folder stays locked while the experiment writes into it.
    let out = OutputDir::create(&common.out, common.force)?;
    let pb = bar();
    let mut progress = |f: f64| pb.set_position((f * 1000.0) as u64);
    let (report, config) = a
        .which
        .run(Parallelism::threads(threads), &mut progress, out.path())?;
    pb.finish_and_clear();
    finish(report, out, &common, config, threads)
}
