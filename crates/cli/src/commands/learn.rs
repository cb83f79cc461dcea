//! `sparsecode learn`: classical dictionary learning (alternating sparse coding and atom updates).

use crate::Outcome;
use anyhow::Result;
use serde_json::json;
use sparsecode::coding::{
    fista, learn_dictionary, learn_dictionary_from, DictLearnParams, FistaParams,
};
use sparsecode::io::{write_json_atomic, write_matrix, OutputDir};
use sparsecode::Parallelism;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Data [samples, d_in] .npy.
    #[arg(long)]
    data: PathBuf,
    /// Number of atoms.
    #[arg(long)]
    atoms: usize,
    /// L1 weight while learning.
    #[arg(long, default_value_t = 0.05)]
    lambda: f32,
    /// L1 weight of the final codes written to codes.npy (default: --lambda).
    #[arg(long)]
    transform_lambda: Option<f32>,
    /// Non-negative codes.
    #[arg(long)]
    nonneg: bool,
    /// Most alternations.
    #[arg(long, default_value_t = 500)]
    max_iter: usize,
    /// Relative objective change that stops learning.
    #[arg(long, default_value_t = 1e-6)]
    tol: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Independent starts; the lowest objective wins.
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// Inner sparse coder: fista (L1 at --lambda), omp:K or threshold:K.
    #[arg(long, default_value = "fista")]
    coder: String,
    /// Atom update: bcd (block-coordinate, Mairal et al.), mod (optimal directions) or ksvd.
    #[arg(long, default_value = "bcd")]
    update: String,
    /// Mini-batch size for online learning (default: every alternation sees all samples).
    #[arg(long)]
    batch: Option<usize>,
    /// Debiasing alternations after convergence (least-squares codes on the chosen atoms, then
    /// the least-squares dictionary).
    #[arg(long, default_value_t = 0)]
    polish: usize,
    /// Tries of moving the least-used atom onto the worst-reconstructed sample after learning.
    #[arg(long, default_value_t = 0)]
    swaps: usize,
    /// Start from this SAE's decoder (SAE-initialised dictionary learning).
    #[arg(long, conflicts_with = "init_dictionary")]
    init_sae: Option<PathBuf>,
    /// Start from this dictionary ([atoms, d_in] .npy).
    #[arg(long)]
    init_dictionary: Option<PathBuf>,
    /// Output folder: dictionary.npy, codes.npy, learn.json.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let par = Parallelism::threads(threads);
    let y = super::read_data(&a.data)?;
    let out = OutputDir::create(&a.out, a.force)?;
    let p = DictLearnParams {
        atoms: a.atoms,
        lambda: a.lambda,
        nonneg: a.nonneg,
        max_iter: a.max_iter,
        tol: a.tol,
        seed: a.seed,
        restarts: a.restarts,
        coder: a.coder.parse()?,
        update: a.update.parse()?,
        batch_size: a.batch,
        polish: a.polish,
        swaps: a.swaps,
    };
    let started = std::time::Instant::now();
    let init = match (&a.init_sae, &a.init_dictionary) {
        (Some(dir), _) => Some(sparsecode::sae::load(dir)?.w_dec),
        (None, Some(file)) => Some(super::read_data(file)?),
        (None, None) => None,
    };
    let r = match &init {
        Some(d) => learn_dictionary_from(&y, d, &p, par)?,
        None => learn_dictionary(&y, &p, par)?,
    };
    let t_lambda = a.transform_lambda.unwrap_or(a.lambda);
    let codes = if t_lambda == a.lambda {
        r.codes
    } else {
        let fp = FistaParams {
            lambda: t_lambda,
            nonneg: a.nonneg,
            max_iter: 5000,
            tol: 1e-6,
            accelerated: true,
        };
        fista(&y, &r.dictionary, Some(&r.codes), &fp, par)?.codes
    };
    let seconds = started.elapsed().as_secs_f64();
    write_matrix(&out.join("dictionary.npy"), &r.dictionary)?;
    write_matrix(&out.join("codes.npy"), &codes)?;
    let mut record = sparsecode::io::record::provenance("learn");
    record["params"] = serde_json::to_value(p)?;
    record["transform_lambda"] = json!(t_lambda);
    record["data"] = json!(a.data);
    record["init"] = json!(a.init_sae.as_ref().or(a.init_dictionary.as_ref()));
    record["iterations"] = json!(r.objective.len());
    record["objective"] = json!(r.objective.last());
    record["seconds"] = json!(seconds);
    write_json_atomic(&out.join("learn.json"), &record)?;
    let dest = out.commit()?;
    eprintln!(
        "wrote {}: {} atoms after {} alternations ({seconds:.2}s)",
        dest.display(),
        a.atoms,
        r.objective.len()
    );
    Ok(Outcome::Ok)
}
