//! `sparsecode encode`: sparse codes from an SAE (its encoder, or ITO on its decoder) or from a
//! dictionary (FISTA, ISTA, OMP). Under mpirun/srun each rank encodes its share of the rows
//! (every coder codes rows independently) into one shared output file.

use crate::Outcome;
use anyhow::{bail, Context, Result};
use serde_json::json;
use sparsecode::coding::{Basis, Coder, FistaParams, OmpParams};
use sparsecode::data::{rows_of, RowSource};
use sparsecode::distributed::{part_of, reduce::gather_f64, Transport};
use sparsecode::io::npy::SharedNpy;
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
    #[arg(long, required_unless_present = "store", conflicts_with = "store")]
    data: Option<PathBuf>,
    /// An activation store (`sparsecode harvest`, `store create`) as the data.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Do not check the store's chunk hashes as rows are read.
    #[arg(long, requires = "store")]
    no_verify: bool,
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

/// The output's locks: one writer of the codes file and of the record beside it, held to the
/// end (they also remove a killed run's temporary files).
type Locks = (sparsecode::io::OutputLock, sparsecode::io::OutputLock);

/// Locks `--out` and its record and checks that they may be written.
fn claim_output(a: &Args) -> Result<Locks> {
    let locks = (
        sparsecode::io::OutputLock::acquire(&a.out)?,
        sparsecode::io::OutputLock::acquire(&a.out.with_extension("json"))?,
    );
    if a.out.is_dir() {
        bail!(
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
    Ok(locks)
}

/// What the codes came out as, for the record and the closing line.
struct Coded {
    rows: usize,
    latents: usize,
    /// Non-zero codes over all rows.
    nonzero: f64,
    seconds: f64,
    ranks: usize,
}

/// Encodes in this process, or with `ranks` as one rank of a job that splits the rows.
pub fn run(a: Args, threads: usize, ranks: Option<Box<dyn Transport>>) -> Result<Outcome> {
    let par = Parallelism::threads(threads);
    let locks = match ranks.as_ref().map_or(0, |t| t.rank()) {
        0 => Some(claim_output(&a)?),
        _ => None,
    };
    let sae = a.sae.as_deref().map(sparsecode::sae::load).transpose()?;
    let dict = a.dictionary.as_deref().map(super::read_data).transpose()?;
    let basis = match (&sae, &dict) {
        (Some(s), _) => Basis::Sae(s),
        (None, Some(d)) => Basis::Dictionary(d),
        (None, None) => bail!("give --sae or --dictionary"),
    };
    let coder = coder(&a, basis)?;
    let data = super::open_samples(a.data.as_deref(), a.store.as_deref(), !a.no_verify)?
        .context("give --data or --store")?;
    let coded = match ranks {
        None => encode_whole(&a, &coder, basis, data.as_ref(), par)?,
        Some(mut t) => encode_part(&a, &coder, basis, data.as_ref(), t.as_mut(), par)?,
    };
    if locks.is_some() {
        write_record(&a, &coder, &coded, threads)?;
    }
    Ok(Outcome::Ok)
}

/// Every row in this process.
fn encode_whole(
    a: &Args,
    coder: &Coder,
    basis: Basis<'_>,
    data: &dyn RowSource,
    par: Parallelism,
) -> Result<Coded> {
    let x = rows_of(data, 0..data.rows())?;
    let started = std::time::Instant::now();
    let codes = coder.encode(basis, &x, par)?;
    let seconds = started.elapsed().as_secs_f64();
    write_codes(&a.out, &codes)?;
    Ok(Coded {
        rows: codes.rows(),
        latents: codes.cols(),
        nonzero: nonzero(&codes),
        seconds,
        ranks: 1,
    })
}

/// This rank's rows `⌊rS/P⌋..⌊(r+1)S/P⌋`, written into the file rank 0 made at full size
/// beside `--out` and moves there once every rank has written.
fn encode_part(
    a: &Args,
    coder: &Coder,
    basis: Basis<'_>,
    data: &dyn RowSource,
    t: &mut dyn Transport,
    par: Parallelism,
) -> Result<Coded> {
    let samples = usize::try_from(data.rows())?;
    let latents = match basis {
        Basis::Sae(s) => s.d_sae(),
        Basis::Dictionary(d) => d.rows(),
    };
    let rows = part_of(samples, t.rank(), t.size());
    let x = rows_of(data, rows.start as u64..rows.end as u64)?;
    let started = std::time::Instant::now();
    let codes = coder.encode(basis, &x, par)?;
    let seconds = started.elapsed().as_secs_f64();
    let made = match t.rank() {
        0 => Some(SharedNpy::create(&a.out, samples, latents)?),
        _ => None,
    };
    let name = made
        .as_ref()
        .map_or(Vec::new(), |f| path_bytes(f.temp_path()));
    let names = t.all_gather_bytes(&name);
    let file = SharedNpy::open(bytes_path(&names[0]), samples, latents);
    file.write_rows(rows.start, &codes)?;
    // After this gather every rank has written (and synced) its rows.
    let all = gather_f64(t, &[nonzero(&codes), seconds]);
    if let Some(made) = made {
        made.commit(&a.out)?;
    }
    Ok(Coded {
        rows: samples,
        latents,
        nonzero: all.iter().map(|v| v[0]).sum(),
        seconds: all.iter().map(|v| v[1]).fold(0.0, f64::max),
        ranks: t.size(),
    })
}

fn path_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

fn bytes_path(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

fn nonzero(codes: &Matrix) -> f64 {
    codes.as_slice().iter().filter(|v| **v != 0.0).count() as f64
}

/// The record beside the codes (CODES.npy -> CODES.json) and the closing line.
fn write_record(a: &Args, coder: &Coder, c: &Coded, threads: usize) -> Result<()> {
    let l0 = match c.rows {
        0 => f64::NAN,
        rows => c.nonzero / rows as f64,
    };
    let mut record = sparsecode::io::record::provenance("encode");
    record["method"] = json!(coder.name());
    record["coder"] = serde_json::to_value(coder)?;
    record["inputs"] =
        json!({ "sae": a.sae, "dictionary": a.dictionary, "data": a.data, "store": a.store });
    record["params"] = json!({ "lambda": a.lambda, "nonneg": a.nonneg, "max_iter": a.max_iter, "tol": a.tol, "k": a.k, "residual_tol": a.residual_tol, "threads": threads });
    record["codes"] = json!({ "path": a.out, "shape": [c.rows, c.latents], "l0": l0 });
    record["seconds"] = json!(c.seconds);
    record["ranks"] = json!(c.ranks);
    sparsecode::io::write_json_atomic(&a.out.with_extension("json"), &record)?;
    eprintln!(
        "wrote {}: codes [{}, {}], L0 {l0:.2}",
        a.out.display(),
        c.rows,
        c.latents,
    );
    Ok(())
}

fn write_codes(path: &Path, codes: &Matrix) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| sparsecode::Error::io(parent, e))?;
    }
    Ok(sparsecode::io::write_matrix(path, codes)?)
}
