//! The sparse-coding methods the experiments compare, each run the way arXiv 2411.13117 runs it
//! (full-batch Adam on a bias-free linear+ReLU encoder, loss MSE + 0.01 mean|z|), and scored on
//! held-out samples against the planted codes and dictionary.

use serde::{Deserialize, Serialize};
use sparsecode::coding::{fista, learn_dictionary, DictLearnParams, FistaParams};
use sparsecode::data::SynthData;
use sparsecode::eval::{code_mcc, dictionary_metrics, HUNGARIAN_MAX};
use sparsecode::sae::{EncoderInit, Sae};
use sparsecode::train::{train, ArchConfig, NoObserver, TrainConfig};
use sparsecode::{Error, Matrix, Parallelism, Result};
use std::time::Instant;

/// A method of the amortisation and scaling experiments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Linear encoder (no bias) + ReLU, trained with MSE + L1.
    Sae,
    /// The SAE's codes refined by non-negative FISTA with the SAE's decoder.
    SaeIto,
    /// An MLP encoder (Linear-ReLU-Linear-ReLU, no biases) of this hidden width, same loss.
    Mlp(usize),
    /// Non-negative FISTA with the true dictionary (known setting) or dictionary learning's
    /// (unknown setting).
    SparseCoding,
}

impl Method {
    /// Parses a command-line name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "sae" => Ok(Method::Sae),
            "sae-ito" | "ito" => Ok(Method::SaeIto),
            "sc" | "sparse-coding" => Ok(Method::SparseCoding),
            other => match other.strip_prefix("mlp").map(str::parse::<usize>) {
                Some(Ok(h)) if h > 0 => Ok(Method::Mlp(h)),
                _ => Err(Error::param(
                    "methods",
                    format!("unknown method '{other}' (expected sae, sae-ito, mlpH such as mlp32, or sc)"),
                )),
            },
        }
    }

    /// Display name.
    pub fn label(self) -> String {
        match self {
            Method::Sae => "SAE".into(),
            Method::SaeIto => "SAE + ITO".into(),
            Method::Mlp(h) => format!("MLP h={h}"),
            Method::SparseCoding => "sparse coding".into(),
        }
    }
}

/// Training and inference settings shared by the methods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodSettings {
    /// Full-batch Adam steps of the SAE.
    pub sae_steps: u64,
    /// L1 weight of the paper's loss `MSE + l1_paper * mean|z|` (0.01); converted to this
    /// crate's per-sample sum convention as `l1_paper * M / N`.
    pub l1_paper: f32,
    /// L1 weight of inference-time optimisation and of sparse coding with a known dictionary.
    pub ito_lambda: f32,
    /// L1 weight while learning a dictionary (scikit-learn's `alpha`).
    pub dl_lambda: f32,
    /// L1 weight of the final codes of the learned dictionary (scikit-learn's `transform_alpha`).
    pub dl_transform_lambda: f32,
    /// Independent starts of dictionary learning.
    pub dl_restarts: usize,
}

impl Default for MethodSettings {
    fn default() -> Self {
        MethodSettings {
            sae_steps: 20_000,
            l1_paper: 0.01,
            ito_lambda: 0.001,
            dl_lambda: 0.05,
            dl_transform_lambda: 0.001,
            dl_restarts: 1,
        }
    }
}

/// sparsecode's best dictionary learner on these problems (measured in BENCHMARKS.md against
/// scikit-learn): L1 alternating minimisation with block-coordinate atom updates to a relative
/// change of 1e-4, then 10 debiasing alternations and up to 4 atom swaps.
pub fn best_dictionary_learning(atoms: usize, s: &MethodSettings, seed: u64) -> DictLearnParams {
    DictLearnParams {
        atoms,
        lambda: s.dl_lambda,
        nonneg: true,
        max_iter: 500,
        tol: 1e-4,
        seed,
        restarts: s.dl_restarts,
        polish: 10,
        swaps: 4,
        ..DictLearnParams::default()
    }
}

/// One method's scores on the test split.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Score {
    /// Code MCC against the planted test codes.
    pub code_mcc: f64,
    /// Dictionary MCC of the dictionary the codes use (1 for the true one).
    pub dict_mcc: f64,
    /// Inference FLOPs per sample (multiply-adds count two; FISTA at its iteration count).
    pub flops: f64,
    /// Seconds, training included.
    pub seconds: f64,
}

/// Trains the paper's SAE on the training split: against the fixed true dictionary when
/// `known`, else with a learned unit-norm decoder; with `hidden`, an MLP encoder of that width.
pub fn train_sae(
    data: &SynthData,
    known: bool,
    hidden: Option<usize>,
    s: &MethodSettings,
    seed: u64,
    threads: usize,
) -> Result<Sae> {
    let (n, m) = data.dictionary.shape();
    let x = &data.train.activations;
    let l1 = s.l1_paper * m as f32 / n as f32;
    let arch = match hidden {
        None => ArchConfig::Relu {
            l1,
            l1_warmup_steps: 0,
        },
        Some(hidden) => ArchConfig::Mlp {
            l1,
            hidden,
            l1_warmup_steps: 0,
        },
    };
    let mut tc = TrainConfig::new(
        arch,
        n,
        s.sae_steps,
        // Full batch at the paper's 1024 samples; mini-batches of 1024 on larger sets.
        x.rows().min(1024),
        1e-3,
        seed,
    );
    tc.encoder_init = EncoderInit::FanInUniform;
    tc.biases = false;
    tc.train_decoder = !known;
    tc.threads = threads;
    tc.log_every = s.sae_steps.max(1);
    let fixed = known.then_some(&data.dictionary);
    Ok(train(&tc.check_for(x)?, x, fixed, None, &mut NoObserver)?
        .state
        .sae)
}

fn nonneg_fista(lambda: f32) -> FistaParams {
    FistaParams {
        lambda,
        nonneg: true,
        max_iter: 5000,
        tol: 1e-7,
        accelerated: true,
    }
}

fn test_split(data: &SynthData) -> Result<(&Matrix, &Matrix)> {
    let t = data
        .test
        .as_ref()
        .ok_or_else(|| Error::param("test_samples", "the experiment needs held-out samples"))?;
    Ok((&t.activations, &t.codes))
}

fn score(
    data: &SynthData,
    codes: &Matrix,
    dict: &Matrix,
    flops: f64,
    started: Instant,
    par: Parallelism,
) -> Result<Score> {
    let (_, z) = test_split(data)?;
    Ok(Score {
        code_mcc: code_mcc(z, codes, HUNGARIAN_MAX, par)?.0,
        dict_mcc: dictionary_metrics(&data.dictionary, dict, HUNGARIAN_MAX, par)?.dict_mcc,
        flops,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs `methods` on one dataset (train on the training split, score on the test split). The SAE
/// is trained once and shared by SAE and SAE + ITO.
pub fn run_methods(
    data: &SynthData,
    known: bool,
    methods: &[Method],
    s: &MethodSettings,
    seed: u64,
    par: Parallelism,
) -> Result<Vec<(Method, Score)>> {
    let (n, m) = data.dictionary.shape();
    let (x_test, _) = test_split(data)?;
    let mut out = Vec::new();
    let mut sae: Option<(Sae, f64)> = None;
    let dense = 2.0 * (n * m) as f64;
    for &method in methods {
        if matches!(method, Method::Sae | Method::SaeIto) && sae.is_none() {
            let t = Instant::now();
            let model = train_sae(data, known, None, s, seed, par.count())?;
            sae = Some((model, t.elapsed().as_secs_f64()));
        }
        // SAE rows add the (shared) training time to their own.
        let started = Instant::now();
        let score = match method {
            Method::Sae => {
                let (model, secs) = sae.as_ref().expect("trained above");
                let codes = model.encode_dense(x_test, par);
                let mut sc = score(data, &codes, &model.w_dec, dense, started, par)?;
                sc.seconds += secs;
                sc
            }
            Method::Mlp(h) => {
                let model = train_sae(data, known, Some(h), s, seed, par.count())?;
                let codes = model.encode_dense(x_test, par);
                let flops = 2.0 * ((m * h) + (h * n)) as f64;
                score(data, &codes, &model.w_dec, flops, started, par)?
            }
            Method::SaeIto => {
                let (model, secs) = sae.as_ref().expect("trained above");
                let r = sparsecode::coding::ito(model, x_test, &nonneg_fista(s.ito_lambda), par)?;
                let flops = dense + 2.0 * dense * r.iterations as f64;
                let mut sc = score(data, &r.codes, &model.w_dec, flops, started, par)?;
                sc.seconds += secs;
                sc
            }
            Method::SparseCoding if known => {
                let r = fista(
                    x_test,
                    &data.dictionary,
                    None,
                    &nonneg_fista(s.ito_lambda),
                    par,
                )?;
                score(
                    data,
                    &r.codes,
                    &data.dictionary,
                    2.0 * dense * r.iterations as f64,
                    started,
                    par,
                )?
            }
            Method::SparseCoding => {
                let p = best_dictionary_learning(n, s, seed);
                let learned = learn_dictionary(&data.train.activations, &p, par)?;
                let r = fista(
                    x_test,
                    &learned.dictionary,
                    None,
                    &nonneg_fista(s.dl_transform_lambda),
                    par,
                )?;
                score(
                    data,
                    &r.codes,
                    &learned.dictionary,
                    2.0 * dense * r.iterations as f64,
                    started,
                    par,
                )?
            }
        };
        out.push((method, score));
    }
    Ok(out)
}
