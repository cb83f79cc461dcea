//! `sparsecode encode`: sparse codes from an SAE (its encoder, or ITO on its decoder) or from a
//! dictionary (FISTA, ISTA, OMP).

use crate::Outcome;
use anyhow::{bail, Result};
use clap::ValueEnum;
use serde_json::json;
use sparsecode::coding::{fista, ito, omp, FistaParams, OmpParams};
use sparsecode::sae::Sae;
use sparsecode::{Matrix, Parallelism};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// The SAE's encoder.
    Sae,
    /// FISTA started from the SAE's codes with its decoder (non-negative).
    Ito,
    Fista,
    Ista,
    Omp,
}

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
    /// Default: sae with --sae, fista with --dictionary.
    #[arg(long, value_enum)]
    method: Option<Method>,
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

/// Codes of `x` by the chosen method.
pub fn codes_for(
    a: &Args,
    sae: Option<&Sae>,
    dict: Option<&Matrix>,
    x: &Matrix,
    par: Parallelism,
) -> Result<Matrix> {
    let method = a.method.unwrap_or(if sae.is_some() {
        Method::Sae
    } else {
        Method::Fista
    });
    let fp = FistaParams {
        lambda: a.lambda,
        nonneg: a.nonneg,
        max_iter: a.max_iter,
        tol: a.tol,
        accelerated: method != Method::Ista,
    };
    // With an SAE, the classical methods code x - b_dec against its decoder.
    let (y, d) = match (sae, dict) {
        (Some(s), _) => {
            s.check_input(x, &a.data.display().to_string())?;
            let mut y = x.clone();
            y.add_to_rows(&s.b_dec, -1.0);
            (y, &s.w_dec)
        }
        (None, Some(d)) => (x.clone(), d),
        (None, None) => bail!("give --sae or --dictionary"),
    };
    Ok(match (method, sae) {
        (Method::Sae, Some(s)) => s.encode_dense(x, par),
        (Method::Ito, Some(s)) => ito(s, x, &fp, par)?.codes,
        (Method::Sae | Method::Ito, None) => {
            bail!("`--method sae` and `--method ito` need `--sae RUN`")
        }
        (Method::Fista | Method::Ista, _) => fista(&y, d, None, &fp, par)?.codes,
        (Method::Omp, _) => omp(
            &y,
            d,
            &OmpParams {
                k: a.k,
                tol: a.residual_tol,
            },
            par,
        )?,
    })
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let par = Parallelism::threads(threads);
    if a.out.exists() && !a.force {
        return Err(sparsecode::Error::OutputExists {
            path: a.out.clone(),
        }
        .into());
    }
    let x = super::read_data(&a.data)?;
    let sae = a.sae.as_deref().map(sparsecode::sae::load).transpose()?;
    let dict = a.dictionary.as_deref().map(super::read_data).transpose()?;
    let started = std::time::Instant::now();
    let codes = codes_for(&a, sae.as_ref(), dict.as_ref(), &x, par)?;
    let seconds = started.elapsed().as_secs_f64();
    write_codes(&a.out, &codes)?;
    // The record beside the codes: CODES.npy -> CODES.json.
    let mut record = sparsecode::io::record::provenance("encode");
    record["method"] = json!(a
        .method
        .map(|m| m
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default())
        .unwrap_or_else(|| if a.sae.is_some() {
            "sae".into()
        } else {
            "fista".into()
        }));
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
