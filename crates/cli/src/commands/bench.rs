//! `sparsecode bench`: time training steps and encoders on random data of a chosen shape.

use crate::Outcome;
use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use sparsecode::bench::{bench_encode, bench_train, BenchResult, EncodeMethod};
use sparsecode::train::ArchConfig;

#[derive(Clone, Copy, ValueEnum)]
pub enum Arch {
    Relu,
    Topk,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Method {
    Fista,
    Omp,
}

#[derive(Subcommand)]
pub enum Which {
    /// Median time of an SAE training step.
    Train {
        #[arg(long, value_enum)]
        arch: Arch,
        /// Input width M.
        #[arg(long)]
        dims: usize,
        /// Latents N.
        #[arg(long)]
        latents: usize,
        /// Active latents (topk).
        #[arg(long, default_value_t = 32)]
        k: usize,
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 10)]
        steps: u64,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Median time of a batched sparse encode.
    Encode {
        #[arg(long, value_enum)]
        method: Method,
        #[arg(long)]
        dims: usize,
        /// Dictionary atoms N.
        #[arg(long)]
        atoms: usize,
        #[arg(long, default_value_t = 4096)]
        samples: usize,
        /// Atoms per sample (omp).
        #[arg(long, default_value_t = 8)]
        k: usize,
        /// L1 weight (fista).
        #[arg(long, default_value_t = 0.1)]
        lambda: f32,
        /// Iterations (fista; no early stop so that every run does the same work).
        #[arg(long, default_value_t = 100)]
        iters: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

fn report(r: &BenchResult, json: bool, what: String) -> Result<()> {
    if json {
        let v = serde_json::json!({ "samples_per_s": r.samples_per_s, "step_ms_median": r.step_ms_median, "peak_rss_mb": r.peak_rss_mb, "step_ms": r.step_ms });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "{what}: {:.0} samples/s, median {:.2} ms over {} runs, peak RSS {:.0} MiB",
            r.samples_per_s,
            r.step_ms_median,
            r.step_ms.len(),
            r.peak_rss_mb
        );
    }
    Ok(())
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    match a.which {
        Which::Train {
            arch,
            dims,
            latents,
            k,
            batch,
            steps,
            warmup,
            json,
        } => {
            let arch = match arch {
                Arch::Topk => ArchConfig::TopK {
                    k,
                    aux_k: (dims / 2).clamp(1, 256).min(latents),
                    aux_coef: 1.0 / 32.0,
                },
                Arch::Relu => ArchConfig::Relu {
                    l1: 1e-3,
                    l1_warmup_steps: 0,
                },
            };
            let r = bench_train(arch, dims, latents, batch, steps, warmup.max(1), threads)
                .context("bench train")?;
            report(
                &r,
                json,
                format!("train {arch:?} M={dims} N={latents} batch={batch} threads={threads}"),
            )?;
        }
        Which::Encode {
            method,
            dims,
            atoms,
            samples,
            k,
            lambda,
            iters,
            repeats,
            json,
        } => {
            let m = match method {
                Method::Fista => EncodeMethod::Fista {
                    lambda,
                    max_iter: iters,
                },
                Method::Omp => EncodeMethod::Omp { k },
            };
            let r = bench_encode(m, dims, atoms, samples, repeats.max(1), threads)
                .context("bench encode")?;
            report(
                &r,
                json,
                format!("encode {m:?} M={dims} N={atoms} samples={samples} threads={threads}"),
            )?;
        }
    }
    Ok(Outcome::Ok)
}
