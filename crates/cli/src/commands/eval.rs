//! `sparsecode eval`: reconstruction, sparsity and, against planted ground truth, code and
//! dictionary recovery (and feature absorption when the truth has a hierarchy), streamed over
//! the samples (memory does not grow with their number). Under mpirun/srun each rank evaluates
//! its share of the samples and rank 0 joins the sums (reconstruction and sparsity metrics).

use crate::Outcome;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sparsecode::data::RowSource;
use sparsecode::distributed::{part_of, reduce::gather_f64, Transport};
use sparsecode::eval::{
    dictionary_metrics, evaluate_streamed, mcc_of, reconstruction_of_rows, reconstructs,
    AbsorptionCounter, CodeSource, ReconMetrics, ReconStats, DEFAULT_ABSORPTION_COS, HUNGARIAN_MAX,
};
use sparsecode::Parallelism;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// SAE run folder (SAELens format).
    #[arg(long, conflicts_with = "codes", required_unless_present = "codes")]
    sae: Option<PathBuf>,
    /// Precomputed codes [samples, N] .npy.
    #[arg(long)]
    codes: Option<PathBuf>,
    /// With --sae and --data: refine the SAE's codes by inference-time optimisation on its
    /// decoder (non-negative FISTA from the encoder's output) with this L1 weight, and score
    /// those codes instead.
    #[arg(long, requires = "sae", requires = "data")]
    ito_lambda: Option<f32>,
    /// Dictionary [N, d_in] .npy for --codes (needed for MSE/FVU and dictionary recovery).
    #[arg(long, requires = "codes")]
    dictionary: Option<PathBuf>,
    /// Data [samples, d_in] .npy.
    #[arg(long, required_unless_present_any = ["model", "store"], conflicts_with_all = ["model", "store"])]
    data: Option<PathBuf>,
    /// An activation store (`sparsecode harvest`, `store create`) as the data, streamed.
    #[arg(long, conflicts_with = "model")]
    store: Option<PathBuf>,
    /// Do not check the store's chunk hashes as rows are read.
    #[arg(long, requires = "store")]
    no_verify: bool,
    #[command(flatten)]
    spliced: super::eval_spliced::SplicedArgs,
    /// Folder written by `sparsecode synth`: its dictionary.npy and the codes that made --data.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// The true codes of --data (default: found in --truth by the data file's name).
    #[arg(long, requires = "truth")]
    truth_codes: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Absorption (when --truth has a hierarchy.json): a latent that fires while the parent's
    /// latent is silent carries the parent when its decoder's cosine with the parent's atom is
    /// at least this.
    #[arg(long, default_value_t = DEFAULT_ABSORPTION_COS, requires = "truth")]
    absorption_cos: f32,
    /// Exit with status 1 when code MCC is below this.
    #[arg(long, requires = "truth")]
    min_mcc: Option<f64>,
    /// Above this many latents the matching is greedy instead of Hungarian.
    #[arg(long, default_value_t = HUNGARIAN_MAX)]
    hungarian_max: usize,
}

/// `DIR/test_activations.npy` -> `DIR/test_codes.npy`, `DIR/activations.npy` -> `DIR/codes.npy`.
fn truth_codes_path(truth: &Path, data: &Path) -> Result<PathBuf> {
    let name = data.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let same_dir = data.parent().and_then(|p| p.canonicalize().ok()) == truth.canonicalize().ok();
    match name.strip_suffix("activations.npy") {
        Some(prefix) if same_dir => Ok(truth.join(format!("{prefix}codes.npy"))),
        _ => bail!(
            "cannot tell which codes in {} produced {}: pass --truth-codes FILE",
            truth.display(),
            data.display()
        ),
    }
}

use super::open_npy as open;

pub fn run(a: Args, threads: usize, ranks: Option<Box<dyn Transport>>) -> Result<Outcome> {
    let par = Parallelism::threads(threads);
    let samples = super::open_samples(a.data.as_deref(), a.store.as_deref(), !a.no_verify)?;
    let Some(data) = samples else {
        if ranks.is_some() {
            bail!("--model: evaluation in the model runs in one process; start it without mpirun/srun");
        }
        let sae = a.sae.as_deref().context("--model needs --sae RUN")?;
        return super::eval_spliced::run(sae, &a.spliced, a.json, threads);
    };
    let data = data.as_ref();
    let sae = a.sae.as_deref().map(sparsecode::sae::load).transpose()?;
    let codes = a.codes.as_deref().map(open).transpose()?;
    let dictionary = a.dictionary.as_deref().map(super::read_data).transpose()?;
    let source = match (&sae, &codes) {
        (Some(sae), _) => match a.ito_lambda {
            Some(lambda) => CodeSource::Ito(
                sae,
                sparsecode::coding::FistaParams {
                    lambda,
                    nonneg: true,
                    ..Default::default()
                },
            ),
            None => CodeSource::Sae(sae),
        },
        (None, Some(codes)) => CodeSource::File {
            codes,
            dictionary: dictionary.as_ref(),
        },
        (None, None) => bail!("give --sae RUN or --codes FILE"),
    };
    if let Some(mut t) = ranks {
        if a.truth.is_some() {
            bail!("--truth: evaluation against a planted truth runs in one process; start it without mpirun/srun");
        }
        return eval_part(data, &source, t.as_mut(), a.json, par);
    }
    let truth_codes = match (&a.truth, &a.truth_codes) {
        (None, _) => None,
        (Some(_), Some(p)) => Some(open(p)?),
        (Some(truth), None) => match &a.data {
            Some(data_path) => Some(open(&truth_codes_path(truth, data_path)?)?),
            None => bail!("--truth with --store: name the true codes with --truth-codes FILE"),
        },
    };
    let d_hat = sae.as_ref().map(|s| &s.w_dec).or(dictionary.as_ref());
    let d_true = match &a.truth {
        Some(truth) if d_hat.is_some() => Some(super::read_data(&truth.join("dictionary.npy"))?),
        _ => None,
    };
    let mut absorption = match (&a.truth, &d_true, d_hat) {
        (Some(truth), Some(d_true), Some(d_hat)) => {
            absorption_counter(truth, d_true, d_hat, a.absorption_cos)?
        }
        _ => None,
    };
    let r = evaluate_streamed(
        data,
        &source,
        truth_codes.as_ref(),
        absorption.as_mut(),
        par,
    )?;
    let mut out = recon_json(&r.recon, r.reconstructed, latents_of(&source)?);
    let mut gate = None;
    if let Some(c) = &r.correlation {
        let (mcc, matching) = mcc_of(c, a.hungarian_max);
        out["code_mcc"] = json!(mcc);
        out["matching"] = json!(matching.method);
        if let (Some(d_hat), Some(d_true)) = (d_hat, &d_true) {
            let dm = dictionary_metrics(d_true, d_hat, a.hungarian_max, par)?;
            out["dict_mcc"] = json!(dm.dict_mcc);
            out["mmcs"] = json!(dm.mmcs);
            out["dict_recovered_090"] = json!(dm.recovered_090);
            out["dict_recovered_099"] = json!(dm.recovered_099);
        }
        if let Some(counter) = absorption {
            let m = counter.finish();
            out["absorption_rate"] = json!(m.mean_rate);
            out["parent_silent_rate"] = json!(m.mean_silent_rate);
            out["absorption"] = serde_json::to_value(&m)?;
        }
        if let Some(min) = a.min_mcc {
            if mcc < min {
                gate = Some(format!("code MCC {mcc:.4} < --min-mcc {min}"));
            }
        }
    }
    print(&out, a.json)?;
    Ok(gate.map(Outcome::GateFailed).unwrap_or(Outcome::Ok))
}

/// This rank's samples `⌊rS/P⌋..⌊(r+1)S/P⌋`; rank 0 joins every rank's sums (in rank order)
/// and reports.
fn eval_part(
    data: &dyn RowSource,
    source: &CodeSource,
    t: &mut dyn Transport,
    json: bool,
    par: Parallelism,
) -> Result<Outcome> {
    let (samples, d_in) = (usize::try_from(data.rows())?, data.cols());
    let latents = latents_of(source)?;
    let rows = part_of(samples, t.rank(), t.size());
    let part = reconstruction_of_rows(data, source, rows, par)?;
    let all = gather_f64(t, &part.to_values());
    if t.rank() > 0 {
        return Ok(Outcome::Ok);
    }
    let mut sum = ReconStats::new(d_in, latents);
    for (r, values) in all.iter().enumerate() {
        let stats = ReconStats::from_values(d_in, latents, values)
            .with_context(|| format!("rank {r} sent sums of another shape"))?;
        sum.merge(&stats);
    }
    let mut out = recon_json(&sum.metrics(), reconstructs(source), latents);
    out["ranks"] = json!(t.size());
    print(&out, json)?;
    Ok(Outcome::Ok)
}

/// Latents of the codes `source` gives.
fn latents_of(source: &CodeSource) -> Result<usize> {
    Ok(match source {
        CodeSource::Sae(sae) | CodeSource::Ito(sae, _) => sae.d_sae(),
        CodeSource::File { codes, .. } => codes.matrix_shape()?.1,
    })
}

/// The reconstruction and sparsity metrics as reported (error metrics only with a decoder).
fn recon_json(rec: &ReconMetrics, reconstructed: bool, latents: usize) -> Value {
    json!({
        "samples": rec.samples,
        "latents": latents,
        "mse": reconstructed.then_some(rec.mse),
        "fvu": reconstructed.then_some(rec.fvu),
        "l0": rec.l0,
        "dead_fraction": rec.dead_fraction,
        "l1": rec.l1,
        "cosine": reconstructed.then_some(rec.cosine),
        "l2_ratio": reconstructed.then_some(rec.l2_ratio),
        "density_histogram": rec.density,
    })
}

fn print(out: &Value, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(out)?);
    } else {
        print_table(out);
    }
    Ok(())
}

/// An absorption counter for the pairs of `TRUTH/hierarchy.json`, when the truth has one.
fn absorption_counter(
    truth: &Path,
    d_true: &sparsecode::Matrix,
    d_hat: &sparsecode::Matrix,
    tau: f32,
) -> Result<Option<AbsorptionCounter>> {
    let path = truth.join("hierarchy.json");
    if !path.exists() {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    struct Pairs {
        pairs: Vec<(usize, usize)>,
    }
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let pairs: Pairs = serde_json::from_str(&text).map_err(|e| {
        sparsecode::Error::format(
            &path,
            format!("expected {{\"pairs\": [[parent, child], ...]}}: {e}"),
        )
    })?;
    let counter = AbsorptionCounter::new(d_true, d_hat, &pairs.pairs, tau)
        .with_context(|| format!("absorption against {}", path.display()))?;
    Ok(Some(counter))
}

fn print_table(v: &Value) {
    for key in [
        "samples",
        "latents",
        "mse",
        "fvu",
        "l0",
        "dead_fraction",
        "l1",
        "cosine",
        "l2_ratio",
        "code_mcc",
        "dict_mcc",
        "mmcs",
        "dict_recovered_090",
        "dict_recovered_099",
        "absorption_rate",
        "parent_silent_rate",
    ] {
        match &v[key] {
            Value::Null => {}
            Value::Number(n) if n.is_f64() => {
                println!("{key:>20}  {:.6}", n.as_f64().unwrap_or(f64::NAN))
            }
            other => println!("{key:>20}  {other}"),
        }
    }
}
