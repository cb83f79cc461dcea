//! `sparsecode encode`: sparse codes from an SAE (its encoder, or ITO on its decoder) or from a
//! dictionary (FISTA, ISTA, OMP).

use crate::Outcome;
use anyhow::{bail, Result};
use serde_json::json;
use sparsecode::coding::{Basis, Coder, FistaParams, OmpParams};
use sparsecode::{Matrix, Parallelism};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// SAE run folder (SAELens format).
    #[arg(
        long,
        conflicts_with = "dictionary",
        required_unless_present = "dictionary"
    )]
    sae: Option<PathBuf>,
    /// Dictionary [N, d_in] .npy (atoms are rows).
    #[arg(long)]
    dictionary: Option<PathBuf>,
    /// sae, ito, fista, ista or omp. Default: sae with --sae, fista with --dictionary.
    #[arg(long)]
    method: Option<String>,
    /// Data [samples, d_in] .npy.
    #[arg(long)]
    data: PathBuf,
    /// L1 weight (fista, ista, ito).
    #[arg(long, default_value_t = 0.01)]
    lambda: f32,
    /// Non-negative codes (fista, ista; ito always is).
    #[arg(long)]
    nonneg: bool,
    #[arg(long, default_value_t = 1000)]
    max_iter: usize,
    /// Convergence tolerance (fista, ista, ito).
    #[arg(long, default_value_t = 1e-6)]
    tol: f32,
    /// Atoms per sample (omp).
    #[arg(long)]
    k: Option<usize>,
    /// Residual-norm tolerance (omp).
    #[arg(long)]
    residual_tol: Option<f32>,
    /// Output codes .npy [samples, N].
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    force: bool,
}

/// The coder the flags describe, for `basis`.
fn coder(a: &Args, basis: Basis<'_>) -> Result<Coder> {
    let fista = FistaParams {
        lambda: a.lambda,
        nonneg: a.nonneg,
        max_iter: a.max_iter,
        tol: a.tol,
        accelerated: true,
    };
    let omp = OmpParams {
        k: a.k,
        tol: a.residual_tol,
    };
    let name = a.method.as_deref().unwrap_or(Coder::default_name(basis));
    Ok(Coder::named(name, fista, omp)?)
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let par = Parallelism::threads(threads);
    // One writer of the codes file, held to the end; also removes a killed run's temp files.
    let _lock = sparsecode::io::OutputLock::acquire(&a.out)?;
    // The record beside it too: a killed run's `.CODES.json.tmp-*` goes with the next writer.
    let _record_lock = sparsecode::io::OutputLock::acquire(&a.out.with_extension("json"))?;
    if a.out.is_dir() {
        anyhow::bail!(
            "{}: is a folder; --out names the codes .npy file",
            a.out.display()
        );
    }
    if a.out.exists() && !a.force {
        return Err(sparsecode::Error::OutputExists {
            path: a.out.clone(),
        }
        .into());
    }
    let x = super::read_data(&a.data)?;
    let sae = a.sae.as_deref().map(sparsecode::sae::load).transpose()?;
    let dict = a.dictionary.as_deref().map(super::read_data).transpose()?;
    let basis = match (&sae, &dict) {
        (Some(s), _) => Basis::Sae(s),
        (None, Some(d)) => Basis::Dictionary(d),
        (None, None) => bail!("give --sae or --dictionary"),
    };
    let coder = coder(&a, basis)?;
    let started = std::time::Instant::now();
    let codes = coder.encode(basis, &x, par)?;
    let seconds = started.elapsed().as_secs_f64();
    write_codes(&a.out, &codes)?;
    // The record beside the codes: CODES.npy -> CODES.json.
    let mut record = sparsecode::io::record::provenance("encode");
    record["method"] = json!(coder.name());
    record["coder"] = serde_json::to_value(coder)?;
    record["inputs"] = json!({ "sae": a.sae, "dictionary": a.dictionary, "data": a.data });
    record["params"] = json!({ "lambda": a.lambda, "nonneg": a.nonneg, "max_iter": a.max_iter, "tol": a.tol, "k": a.k, "residual_tol": a.residual_tol, "threads": threads });
    record["codes"] = json!({ "path": a.out, "shape": [codes.rows(), codes.cols()], "l0": sparsecode::eval::l0(&codes) });
    record["seconds"] = json!(seconds);
    sparsecode::io::write_json_atomic(&a.out.with_extension("json"), &record)?;
    eprintln!(
        "wrote {}: codes [{}, {}], L0 {:.2}",
        a.out.display(),
        codes.rows(),
        codes.cols(),
        sparsecode::eval::l0(&codes)
    );
    Ok(Outcome::Ok)
}

fn write_codes(path: &Path, codes: &Matrix) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| sparsecode::Error::io(parent, e))?;
    }
    Ok(sparsecode::io::write_matrix(path, codes)?)
}
