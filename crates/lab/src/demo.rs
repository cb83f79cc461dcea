//! The main job on an embedded default: plant features in superposition, recover them with every
//! method, and compare against the ground truth. `sparsecode demo` prints the resulting table.

use serde::{Deserialize, Serialize};
use sparsecode::coding::{fista, ito, omp, FistaParams, OmpParams};
use sparsecode::data::{generate, Magnitude, Support, SynthConfig};
use sparsecode::eval::{code_mcc, dictionary_metrics, evaluate, HUNGARIAN_MAX};
use sparsecode::linalg::synthesize;
use sparsecode::sae::Sae;
use sparsecode::train::{train, ArchConfig, NoObserver, TrainConfig};
use sparsecode::{Matrix, Parallelism, Result};
use std::time::Instant;

/// Size of the planted problem and of the training runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoConfig {
    /// The planted problem.
    pub synth: SynthConfig,
    /// Training steps of each SAE.
    pub steps: u64,
    /// Samples per training step.
    pub batch_size: usize,
    /// L1 coefficient of the ReLU SAE.
    pub l1: f32,
    /// L1 weight of FISTA and ITO.
    pub lambda: f32,
    /// Kernel threads.
    pub threads: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            synth: SynthConfig {
                latents: 256,
                dims: 64,
                support: Support::Exact { k: 4 },
                magnitude: Magnitude::AbsNormal,
                samples: 30_000,
                test_samples: 4_000,
                snr_db: None,
                seed: 0,
                hierarchy: None,
                correlation: None,
            },
            steps: 6_000,
            batch_size: 512,
            l1: 0.3,
            lambda: 0.1,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// One method's results on the held-out samples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoRow {
    /// Method name.
    pub method: String,
    /// Which dictionary the method used.
    pub dictionary: String,
    /// Code MCC against the true codes.
    pub code_mcc: f64,
    /// Dictionary MCC of the dictionary used (1 for the true one).
    pub dict_mcc: f64,
    /// Fraction of true atoms matched above cosine 0.9.
    pub dict_recovered_090: f64,
    /// Fraction of variance unexplained.
    pub fvu: f64,
    /// Mean non-zero codes per sample.
    pub l0: f64,
    /// Wall-clock seconds (training included).
    pub seconds: f64,
}

/// The demo's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoReport {
    /// The configuration that produced the rows.
    pub config: DemoConfig,
    /// One row per method.
    pub rows: Vec<DemoRow>,
}

/// What every row is scored against: the held-out samples and their true dictionary and codes.
struct Truth<'a> {
    x: &'a Matrix,
    dictionary: &'a Matrix,
    codes: &'a Matrix,
    par: Parallelism,
}

impl Truth<'_> {
    /// Scores one method's codes, made with `dictionary` (named `dictionary_name`), and their
    /// reconstruction.
    fn row(
        &self,
        (method, dictionary_name): (&str, &str),
        (dictionary, codes): (&Matrix, &Matrix),
        x_hat: &Matrix,
        seconds: f64,
    ) -> Result<DemoRow> {
        let (mcc, _) = code_mcc(self.codes, codes, HUNGARIAN_MAX, self.par)?;
        let dm = dictionary_metrics(self.dictionary, dictionary, HUNGARIAN_MAX, self.par)?;
        let rec = evaluate(self.x, x_hat, codes);
        Ok(DemoRow {
            method: method.into(),
            dictionary: dictionary_name.into(),
            code_mcc: mcc,
            dict_mcc: dm.dict_mcc,
            dict_recovered_090: dm.recovered_090,
            fvu: rec.fvu,
            l0: rec.l0,
            seconds,
        })
    }
}

/// Trains one SAE of the demo on `x`.
fn train_sae(cfg: &DemoConfig, arch: ArchConfig, x: &Matrix) -> Result<Sae> {
    let mut tc = TrainConfig::new(
        arch,
        cfg.synth.latents,
        cfg.steps,
        cfg.batch_size,
        1e-3,
        cfg.synth.seed,
    );
    tc.threads = cfg.threads;
    tc.lr_decay_steps = cfg.steps / 5;
    tc.dead_window = 100_000;
    Ok(train(&tc.check_for(x)?, x, None, None, &mut NoObserver)?
        .state
        .sae)
}

/// Trains the SAE and scores its own codes.
fn sae_row(
    cfg: &DemoConfig,
    (name, arch): (&str, ArchConfig),
    train_x: &Matrix,
    truth: &Truth,
) -> Result<(Sae, DemoRow)> {
    let t0 = Instant::now();
    let sae = train_sae(cfg, arch, train_x)?;
    let codes = sae.encode_dense(truth.x, truth.par);
    let x_hat = sae.decode(&codes, truth.par);
    let seconds = t0.elapsed().as_secs_f64();
    let row = truth.row((name, "learned"), (&sae.w_dec, &codes), &x_hat, seconds)?;
    Ok((sae, row))
}

/// FISTA and OMP with the true dictionary (OMP stops at the true K).
fn oracle_rows(fp: &FistaParams, k: usize, truth: &Truth) -> Result<Vec<DemoRow>> {
    let (x, d, par) = (truth.x, truth.dictionary, truth.par);
    let t0 = Instant::now();
    let f = fista(x, d, None, fp, par)?;
    let x_hat = synthesize(&f.codes, d, None, par);
    let seconds = t0.elapsed().as_secs_f64();
    let fista_row = truth.row(("FISTA (oracle)", "true"), (d, &f.codes), &x_hat, seconds)?;
    let t0 = Instant::now();
    let o = omp(
        x,
        d,
        &OmpParams {
            k: Some(k),
            tol: None,
        },
        par,
    )?;
    let x_hat = synthesize(&o, d, None, par);
    let seconds = t0.elapsed().as_secs_f64();
    let omp_row = truth.row(("OMP (oracle)", "true"), (d, &o), &x_hat, seconds)?;
    Ok(vec![fista_row, omp_row])
}

/// Runs the demo; `stage` is told what is happening (for a progress display).
pub fn run(cfg: &DemoConfig, stage: &mut dyn FnMut(&str)) -> Result<DemoReport> {
    let par = Parallelism::threads(cfg.threads);
    stage("generating superposition data");
    let data = generate(&cfg.synth, None)?;
    let test = data.test.as_ref().ok_or_else(|| {
        sparsecode::Error::param("test_samples", "the demo needs held-out samples")
    })?;
    let truth = Truth {
        x: &test.activations,
        dictionary: &data.dictionary,
        codes: &test.codes,
        par,
    };
    let k = match cfg.synth.support {
        Support::Exact { k } => k,
        Support::Bernoulli { p } => ((p * cfg.synth.latents as f64).round() as usize).max(1),
    };
    let train_x = &data.train.activations;
    stage("training TopK SAE");
    let topk = ArchConfig::TopK {
        k,
        aux_k: cfg.synth.dims / 2,
        aux_coef: 1.0 / 32.0,
    };
    let (sae, topk_row) = sae_row(cfg, ("TopK SAE", topk), train_x, &truth)?;
    stage("training ReLU-L1 SAE");
    let relu = ArchConfig::Relu {
        l1: cfg.l1,
        l1_warmup_steps: cfg.steps / 20,
    };
    let (_, relu_row) = sae_row(cfg, ("ReLU-L1 SAE", relu), train_x, &truth)?;
    let fp = FistaParams {
        lambda: cfg.lambda,
        nonneg: true,
        max_iter: 500,
        tol: 1e-5,
        accelerated: true,
    };
    stage("inference-time optimisation on the TopK SAE");
    let t0 = Instant::now();
    let refined = ito(&sae, truth.x, &fp, par)?;
    let x_hat = synthesize(&refined.codes, &sae.w_dec, Some(&sae.b_dec), par);
    let ito_row = truth.row(
        ("SAE + ITO (FISTA)", "TopK SAE decoder"),
        (&sae.w_dec, &refined.codes),
        &x_hat,
        t0.elapsed().as_secs_f64(),
    )?;
    stage("FISTA and OMP with the true dictionary");
    let mut rows = vec![topk_row, relu_row, ito_row];
    rows.extend(oracle_rows(&fp, k, &truth)?);
    Ok(DemoReport {
        config: cfg.clone(),
        rows,
    })
}

/// The report as a Markdown table.
pub fn to_markdown(r: &DemoReport) -> String {
    let mut s = String::from("| method | dictionary | code MCC | dict MCC | atoms recovered @0.9 | FVU | L0 | seconds |\n|---|---|---|---|---|---|---|---|\n");
    for x in &r.rows {
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {:.1}% | {:.4} | {:.2} | {:.1} |\n",
            x.method,
            x.dictionary,
            x.code_mcc,
            x.dict_mcc,
            100.0 * x.dict_recovered_090,
            x.fvu,
            x.l0,
            x.seconds
        ));
    }
    s
}
