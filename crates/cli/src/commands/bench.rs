//! `sparsecode bench`: time training steps and encoders on random data of a chosen shape.

use crate::Outcome;
use anyhow::{Context, Result};
use clap::Subcommand;
use sparsecode::coding::{Coder, FistaParams, OmpParams};
use sparsecode::data::store::{StoreDType, StoreWriter};
use sparsecode::distributed::reduce::Metered;
use sparsecode::distributed::{DataParallel, Transport};
use sparsecode::sae::EncoderPrecision;
use sparsecode::train::ArchConfig;
use sparsecode::train::{ArchKind, TrainRequest};
use sparsecode_lab::bench::{bench_encode, bench_encoder_product, bench_train_with, BenchResult};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Which {
    /// Median time of an SAE training step.
    Train {
        /// relu, topk, batchtopk, matryoshka (default prefixes), jumprelu, gated, mlp (hidden
        /// layer as wide as the input) or switch (--experts).
        #[arg(long)]
        arch: ArchKind,
        /// Input width M.
        #[arg(long)]
        dims: usize,
        /// Latents N.
        #[arg(long)]
        latents: usize,
        /// Active latents (topk).
        #[arg(long, default_value_t = 32)]
        k: usize,
        /// Experts of a Switch SAE (switch).
        #[arg(long)]
        experts: Option<usize>,
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 10)]
        steps: u64,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// TopK's encoder products: auto (bfloat16 where the CPU has AVX512_BF16, 16-bit integers
        /// on AVX2 without AVX-512), int16 or f32.
        #[arg(long, default_value = "auto")]
        encoder_precision: super::train::EncoderPrecisionArg,
        /// Also time the step's dense f32 encoder product alone (the same GEMM, same threads).
        #[arg(long)]
        encoder_product: bool,
        /// relu, gated, jumprelu, mlp: start with every latent firing on this fraction of the
        /// batch (the L0 of a trained SAE without training one; top-k kinds set L0 by --k).
        #[arg(long)]
        firing_rate: Option<f64>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Median time of a batched sparse encode.
    Encode {
        /// fista or omp.
        #[arg(long)]
        method: String,
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
    /// Write Gaussian rows to a .npy file or an activation store (data for benchmarks).
    RandomData(RandomData),
    /// Harvest throughput: a transformer forward to one layer on random token contexts, against
    /// the dense f32 product speed measured in the same run.
    Harvest {
        /// `smollm2`, `gemma3`, `minilm`, a .gguf file or a BERT folder.
        #[arg(long, default_value = "smollm2")]
        model: String,
        #[arg(long)]
        layer: usize,
        /// Tokens per context (BOS included).
        #[arg(long, default_value_t = 129)]
        context: usize,
        /// Contexts per forward pass.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `bench random-data`.
#[derive(clap::Args)]
pub struct RandomData {
    /// Rows to write.
    #[arg(long)]
    rows: u64,
    #[arg(long)]
    dims: usize,
    /// A `.npy` file (built in memory) or, for any other name, an f32 activation store
    /// (streamed, so it may be larger than RAM).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

fn report(r: &BenchResult, json: bool, what: String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        let l0 = r.l0.map(|l| format!(", L0 {l:.1}")).unwrap_or_default();
        let ranks = match (r.ranks, r.bytes_sent_per_step) {
            (Some(p), Some(b)) => format!(", {p} ranks sending {:.1} MB a step each", b / 1e6),
            _ => String::new(),
        };
        println!(
            "{what}: {:.0} samples/s, median {:.2} ms over {} runs{l0}, peak RSS {:.0} MiB{ranks}",
            r.samples_per_s,
            r.step_ms_median,
            r.step_ms.len(),
            r.peak_rss_mb
        );
    }
    Ok(())
}

/// `bench train` as one data-parallel rank of `t`'s job: the step times and the bytes this
/// rank sent per step.
fn bench_ranks(
    t: &mut dyn Transport,
    arch: ArchConfig,
    shape: (usize, usize, usize),
    (steps, warmup): (u64, u64),
    threads: usize,
    (precision, rate): (EncoderPrecision, Option<f64>),
) -> sparsecode::Result<BenchResult> {
    let size = t.size();
    let mut metered = Metered::new(t);
    let mut r = {
        let mut dp = DataParallel::new(&mut metered);
        let counts = (steps, warmup);
        bench_train_with(arch, shape, counts, threads, precision, rate, &mut dp)?
    };
    r.ranks = Some(size);
    r.bytes_sent_per_step = Some(metered.sent as f64 / (steps + warmup) as f64);
    Ok(r)
}

/// [`report`] of a training bench, with the encoder product's time and the step's ratio to it.
fn report_train(r: &BenchResult, product_ms: Option<f64>, json: bool, what: String) -> Result<()> {
    let Some(p) = product_ms else {
        return report(r, json, what);
    };
    if json {
        let mut v = serde_json::to_value(r)?;
        v["encoder_product_ms"] = serde_json::json!(p);
        v["step_over_product"] = serde_json::json!(r.step_ms_median / p);
        println!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    report(r, false, what)?;
    println!(
        "f32 encoder product alone: {p:.2} ms; step / product = {:.3}",
        r.step_ms_median / p
    );
    Ok(())
}

/// Runs a bench; under mpirun/srun (`ranks`) only `bench train`, data parallel, with rank 0
/// reporting.
pub fn run(a: Args, threads: usize, mut ranks: Option<Box<dyn Transport>>) -> Result<Outcome> {
    if ranks.is_some() && !matches!(a.which, Which::Train { .. }) {
        anyhow::bail!("only `bench train` runs across processes (data parallel)");
    }
    match a.which {
        Which::Train {
            arch,
            dims,
            latents,
            k,
            experts,
            batch,
            steps,
            warmup,
            encoder_precision,
            encoder_product,
            firing_rate,
            json,
        } => {
            let top_kind = matches!(
                arch,
                ArchKind::Topk | ArchKind::Batchtopk | ArchKind::Matryoshka | ArchKind::Switch
            );
            if firing_rate.is_some() && top_kind {
                anyhow::bail!("--firing-rate: {arch:?} sets its L0 by --k; give --k instead");
            }
            // Tiny penalties: the timing is of the step, not of a tuned run.
            let mut request = TrainRequest::new(arch, latents);
            request.k = Some(k);
            request.experts = experts;
            request.l1 = Some(1e-3);
            request.l0 = Some(1e-3);
            let arch = request.arch_config(dims)?;
            let (shape, counts) = ((dims, latents, batch), (steps, warmup.max(1)));
            let (precision, rate) = (encoder_precision.into(), firing_rate);
            let r = match ranks.as_deref_mut() {
                None => bench_train_with(
                    arch.clone(),
                    shape,
                    counts,
                    threads,
                    precision,
                    rate,
                    &mut sparsecode::sae::SingleProcess,
                ),
                Some(t) => bench_ranks(t, arch.clone(), shape, counts, threads, (precision, rate)),
            }
            .context("bench train")?;
            if ranks.as_ref().is_some_and(|t| t.rank() > 0) {
                return Ok(Outcome::Ok);
            }
            let product = encoder_product
                .then(|| {
                    bench_encoder_product(dims, latents, batch, steps.max(1) as usize, threads)
                })
                .transpose()
                .context("bench train --encoder-product")?;
            report_train(
                &r,
                product,
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
            let fista = FistaParams {
                lambda,
                nonneg: false,
                max_iter: iters,
                tol: 0.0,
                accelerated: true,
            };
            let omp = OmpParams {
                k: Some(k),
                tol: None,
            };
            let m = Coder::named(&method, fista, omp)?;
            let r = bench_encode(m, dims, atoms, samples, repeats.max(1), threads)
                .context("bench encode")?;
            report(
                &r,
                json,
                format!("encode {m:?} M={dims} N={atoms} samples={samples} threads={threads}"),
            )?;
        }
        Which::RandomData(r) => random_data(r)?,
        Which::Harvest {
            model,
            layer,
            context,
            batch,
            repeats,
            json,
        } => bench_harvest(&model, layer, context, batch, repeats, json, threads)?,
    }
    Ok(Outcome::Ok)
}

/// Times `residual` on `batch` random contexts (median of `repeats` after one warm-up) and a
/// dense product of the same row count and the model's width for the utilisation ratio.
fn bench_harvest(
    spec: &str,
    layer: usize,
    context: usize,
    batch: usize,
    repeats: usize,
    json: bool,
    threads: usize,
) -> Result<()> {
    use rand::{Rng, SeedableRng};
    use sparsecode_lab::bench::median;
    let (loaded, _) = sparsecode_harvest::models::Loaded::load(spec)?;
    let m = loaded.residual_model();
    sparsecode_harvest::check_layer(m, layer)?;
    if context == 0 || context > m.max_context() || batch == 0 || repeats == 0 {
        anyhow::bail!(
            "invalid bench shape: context 1..={}, batch and repeats at least 1",
            m.max_context()
        );
    }
    let vocab = loaded.tokenizer().vocab_size() as u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let tokens: Vec<Vec<u32>> = (0..batch)
        .map(|_| (0..context).map(|_| rng.random_range(0..vocab)).collect())
        .collect();
    let mut times = Vec::new();
    for i in 0..=repeats {
        let t = std::time::Instant::now();
        m.residual(&tokens, layer)?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let med = median(&times);
    let tok_s = (batch * context) as f64 / med;
    let model_gflops = tok_s * m.flops_per_token(layer, context) / 1e9;
    // The same-run baseline: f32 gemm of [rows, d] x [d, 4d] through the library kernel.
    let (rows, d) = (batch * context, m.d_model());
    let a = sparsecode_lab::bench::random_data(rows, d, 1)?;
    let b = sparsecode_lab::bench::random_data(d, 4 * d, 2)?;
    let mut c = vec![0.0f32; rows * 4 * d];
    let par = sparsecode::Parallelism::threads(threads);
    let mut gt = Vec::new();
    for i in 0..=repeats {
        let t = std::time::Instant::now();
        sparsecode::linalg::matmul(&mut c, a.view(), b.view(), 0.0, par);
        if i > 0 {
            gt.push(t.elapsed().as_secs_f64());
        }
    }
    let gemm_gflops = 2.0 * (rows * d * 4 * d) as f64 / median(&gt) / 1e9;
    if json {
        let v = serde_json::json!({
            "model": m.name(), "layer": layer, "context": context, "batch": batch,
            "tokens_per_s": tok_s, "forward_ms": times.iter().map(|t| t * 1e3).collect::<Vec<_>>(),
            "model_gflops": model_gflops, "gemm_gflops": gemm_gflops,
            "utilisation": model_gflops / gemm_gflops,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "harvest {} to layer {layer}, {batch} x {context} tokens, threads={threads}: {tok_s:.0} tokens/s (median of {repeats}); {model_gflops:.1} GFLOP/s = {:.2} x the same-run f32 gemm ({gemm_gflops:.1} GFLOP/s)",
            m.name(),
            model_gflops / gemm_gflops
        );
    }
    Ok(())
}

fn random_data(a: RandomData) -> Result<()> {
    const CHUNK: u64 = 16_384;
    if a.out.extension().is_some_and(|e| e == "npy") {
        if a.out.exists() && !a.force {
            return Err(sparsecode::Error::OutputExists { path: a.out }.into());
        }
        let m = sparsecode_lab::bench::random_data(usize::try_from(a.rows)?, a.dims, a.seed)?;
        sparsecode::io::write_matrix(&a.out, &m)?;
    } else {
        let mut w = StoreWriter::create(
            &a.out,
            a.dims,
            StoreDType::F32,
            ((256usize << 20) / (4 * a.dims.max(1))).max(1),
            a.force,
        )?;
        let mut done = 0;
        while done < a.rows {
            let n = CHUNK.min(a.rows - done);
            let m =
                sparsecode_lab::bench::random_data(n as usize, a.dims, a.seed.wrapping_add(done))?;
            w.push(m.as_slice(), "random rows")?;
            done += n;
        }
        w.finish(serde_json::json!({ "source": "sparsecode bench random-data", "seed": a.seed }))?;
    }
    eprintln!(
        "wrote {}: {} random rows of width {}",
        a.out.display(),
        a.rows,
        a.dims
    );
    Ok(())
}
