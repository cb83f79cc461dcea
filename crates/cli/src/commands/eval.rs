//! `sparsecode eval`: reconstruction, sparsity and, against planted ground truth, code and
//! dictionary recovery.

use crate::Outcome;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use sparsecode::eval::{code_mcc, dictionary_metrics, evaluate, HUNGARIAN_MAX};
use sparsecode::{Matrix, Parallelism};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// SAE run folder (SAELens format).
    #[arg(long, conflicts_with = "codes", required_unless_present = "codes")]
    sae: Option<PathBuf>,
    /// Precomputed codes [samples, N] .npy.
    #[arg(long)]
    codes: Option<PathBuf>,
    /// Dictionary [N, d_in] .npy for --codes (needed for MSE/FVU and dictionary recovery).
    #[arg(long, requires = "codes")]
    dictionary: Option<PathBuf>,
    /// Data [samples, d_in] .npy.
    #[arg(long)]
    data: PathBuf,
    /// Folder written by `sparsecode synth`: its dictionary.npy and the codes that made --data.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// The true codes of --data (default: found in --truth by the data file's name).
    #[arg(long, requires = "truth")]
    truth_codes: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
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

fn shape_check(what: &str, m: &Matrix, rows: usize, cols: Option<usize>) -> Result<()> {
    if m.rows() != rows || cols.is_some_and(|c| m.cols() != c) {
        return Err(sparsecode::Error::shape(
            what,
            format!(
                "[{rows}, {}]",
                cols.map(|c| c.to_string()).unwrap_or("N".into())
            ),
            format!("[{}, {}]", m.rows(), m.cols()),
        )
        .into());
    }
    Ok(())
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let par = Parallelism::threads(threads);
    let x = super::read_data(&a.data)?;
    // Codes, the dictionary they decode with, and the reconstruction (None without a dictionary).
    let (codes, dict, x_hat) = match (&a.sae, &a.codes) {
        (Some(run), _) => {
            let sae = sparsecode::sae::load(run)?;
            sae.check_input(&x, &a.data.display().to_string())?;
            let z = sae.encode_dense(&x, par);
            let xh = sae.decode(&z, par);
            (z, Some(sae.w_dec), Some(xh))
        }
        (None, Some(cpath)) => {
            let z = super::read_data(cpath)?;
            shape_check(&cpath.display().to_string(), &z, x.rows(), None)?;
            let d = a.dictionary.as_deref().map(super::read_data).transpose()?;
            let xh = match &d {
                Some(d) => {
                    shape_check(
                        &format!(
                            "{} (dictionary)",
                            a.dictionary
                                .as_ref()
                                .map(|p| p.display().to_string())
                                .unwrap_or_default()
                        ),
                        d,
                        z.cols(),
                        Some(x.cols()),
                    )?;
                    Some(sparsecode::linalg::synthesize(&z, d, None, par))
                }
                None => None,
            };
            (z, d, xh)
        }
        (None, None) => bail!("give --sae RUN or --codes FILE"),
    };
    let rec = evaluate(&x, x_hat.as_ref().unwrap_or(&x), &codes);
    let mut out = json!({
        "samples": x.rows(),
        "latents": codes.cols(),
        "mse": x_hat.as_ref().map(|_| rec.mse),
        "fvu": x_hat.as_ref().map(|_| rec.fvu),
        "l0": rec.l0,
        "dead_fraction": rec.dead_fraction,
        "density_histogram": rec.density,
    });
    let mut gate = None;
    if let Some(truth) = &a.truth {
        let tc_path = match &a.truth_codes {
            Some(p) => p.clone(),
            None => truth_codes_path(truth, &a.data)?,
        };
        let z_true = super::read_data(&tc_path)?;
        shape_check(&tc_path.display().to_string(), &z_true, x.rows(), None)?;
        let (mcc, matching) = code_mcc(&z_true, &codes, a.hungarian_max, par)?;
        out["code_mcc"] = json!(mcc);
        out["matching"] = json!(matching.method);
        if let Some(d_hat) = &dict {
            let d_true = super::read_data(&truth.join("dictionary.npy"))?;
            let dm = dictionary_metrics(&d_true, d_hat, a.hungarian_max, par)?;
            out["dict_mcc"] = json!(dm.dict_mcc);
            out["mmcs"] = json!(dm.mmcs);
            out["dict_recovered_090"] = json!(dm.recovered_090);
            out["dict_recovered_099"] = json!(dm.recovered_099);
        }
        if let Some(min) = a.min_mcc {
            if mcc < min {
                gate = Some(format!("code MCC {mcc:.4} < --min-mcc {min}"));
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_table(&out);
    }
    Ok(gate.map(Outcome::GateFailed).unwrap_or(Outcome::Ok))
}

fn print_table(v: &Value) {
    for key in [
        "samples",
        "latents",
        "mse",
        "fvu",
        "l0",
        "dead_fraction",
        "code_mcc",
        "dict_mcc",
        "mmcs",
        "dict_recovered_090",
        "dict_recovered_099",
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
