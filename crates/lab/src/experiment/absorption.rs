//! Feature absorption on a planted hierarchy: TopK, BatchTopK and Matryoshka BatchTopK SAEs as
//! wide as the truth, trained on data where parents are implied by their children, at a few
//! sparsities and seeds; absorption (`sparsecode::eval::absorption`) and its cost in
//! reconstruction (held-out FVU) and dictionary recovery for each.
//!
//! Magnitudes are constant by default: a latent reading `d_c + d_p` then reconstructs a child
//! with its parent exactly, the setting in which an SAE short of active latents gains by
//! absorbing (arXiv 2409.14507's toy model).

use super::sae_runs::Recipe;
use super::{mean_sd, Report, Table};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sparsecode::data::{generate, Hierarchy, Magnitude, Support, SynthConfig, SynthData};
use sparsecode::eval::{
    dictionary_metrics, fvu, AbsorptionCounter, DEFAULT_ABSORPTION_COS, HUNGARIAN_MAX,
};
use sparsecode::sae::Sae;
use sparsecode::train::ArchConfig;
use sparsecode::{Error, Parallelism, Result};

/// Parameters of the absorption experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbsorptionParams {
    /// True latents N (parents, their children, then independent ones); the SAEs are as wide.
    pub latents: usize,
    /// Activation width M.
    pub dims: usize,
    /// Parents and children per parent.
    pub hierarchy: Hierarchy,
    /// Firing probability of each latent in the base draw.
    pub firing_prob: f64,
    /// Law of active values.
    pub magnitude: Magnitude,
    /// Training samples (a quarter as many held out).
    pub samples: usize,
    /// Active latents per sample of the SAEs (BatchTopK's and Matryoshka's batch mean).
    pub ks: Vec<usize>,
    /// Datasets and SAE seeds: `seed`, `seed + 1`, ...
    pub seeds: usize,
    /// Training steps.
    pub steps: u64,
    /// Rows per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Matryoshka's prefix sizes (the last the number of latents).
    pub prefixes: Vec<usize>,
    /// First seed.
    pub seed: u64,
}

impl AbsorptionParams {
    /// 4 parents with 4 children each among 64 latents in 32 dimensions, k = 2, 3, 4, five
    /// seeds.
    pub fn full() -> Self {
        AbsorptionParams {
            latents: 64,
            dims: 32,
            hierarchy: Hierarchy {
                parents: 4,
                children: 4,
            },
            firing_prob: 0.03,
            magnitude: Magnitude::Constant,
            samples: 20_000,
            ks: vec![2, 3, 4],
            seeds: 5,
            steps: 3000,
            batch_size: 512,
            lr: 2e-3,
            // The default of `train --arch matryoshka` at 64 latents.
            prefixes: vec![1, 4, 16, 64],
            seed: 0,
        }
    }

    /// Two seeds at k = 2, shorter training.
    pub fn quick() -> Self {
        AbsorptionParams {
            ks: vec![2],
            seeds: 2,
            samples: 10_000,
            steps: 1500,
            ..AbsorptionParams::full()
        }
    }
}

/// The architectures compared, by name.
const ARCHS: [&str; 3] = ["topk", "batchtopk", "matryoshka"];

fn arch(name: &str, k: usize, p: &AbsorptionParams) -> ArchConfig {
    let (aux_k, aux_coef) = ((p.dims / 2).max(1), 1.0 / 32.0);
    match name {
        "topk" => ArchConfig::TopK { k, aux_k, aux_coef },
        "batchtopk" => ArchConfig::BatchTopK { k, aux_k, aux_coef },
        _ => ArchConfig::Matryoshka {
            k,
            aux_k,
            aux_coef,
            prefixes: p.prefixes.clone(),
        },
    }
}

/// One trained SAE's measurements.
#[derive(Clone, Debug, Serialize)]
struct Measured {
    arch: &'static str,
    k: usize,
    seed: u64,
    absorption: f64,
    parent_silent: f64,
    fvu: f64,
    dict_mcc: f64,
}

fn data_of(p: &AbsorptionParams, seed: u64) -> Result<SynthData> {
    let cfg = SynthConfig {
        latents: p.latents,
        dims: p.dims,
        support: Support::Bernoulli { p: p.firing_prob },
        magnitude: p.magnitude,
        samples: p.samples,
        test_samples: (p.samples / 4).max(1),
        snr_db: None,
        seed,
        hierarchy: Some(p.hierarchy),
        correlation: None,
    };
    generate(&cfg, None)
}

/// Held-out absorption and silent rates over `pairs`, FVU and dictionary MCC.
fn measure(
    sae: &Sae,
    data: &SynthData,
    pairs: &[(usize, usize)],
    par: Parallelism,
) -> Result<(f64, f64, f64, f64)> {
    let test = data
        .test
        .as_ref()
        .ok_or_else(|| Error::param("samples", "no held-out samples"))?;
    let codes = sae.encode_dense(&test.activations, par);
    let mut counter =
        AbsorptionCounter::new(&data.dictionary, &sae.w_dec, pairs, DEFAULT_ABSORPTION_COS)?;
    counter.add(&test.codes, &codes)?;
    let a = counter.finish();
    let f = fvu(&test.activations, &sae.decode(&codes, par));
    let dm = dictionary_metrics(&data.dictionary, &sae.w_dec, HUNGARIAN_MAX, par)?;
    Ok((a.mean_rate, a.mean_silent_rate, f, dm.dict_mcc))
}

/// Runs the experiment; `progress` is told the fraction done.
pub fn run(
    p: &AbsorptionParams,
    par: Parallelism,
    progress: &mut dyn FnMut(f64),
) -> Result<Report> {
    check(p)?;
    let total = (p.seeds * p.ks.len() * ARCHS.len()) as f64;
    let pairs = p.hierarchy.pairs();
    // SAEs as wide as the truth, trained by the sweep's recipe.
    let recipe = Recipe {
        latents: p.latents,
        steps: p.steps,
        batch_size: p.batch_size,
        lr: p.lr,
    };
    let mut rows = Vec::new();
    for s in 0..p.seeds as u64 {
        let seed = p.seed + s;
        let data = data_of(p, seed)?;
        for &k in &p.ks {
            for name in ARCHS {
                let x = &data.train.activations;
                let sae = recipe.train_on(arch(name, k, p), x, 1.0, seed, par)?;
                let (absorption, parent_silent, fvu, dict_mcc) = measure(&sae, &data, &pairs, par)?;
                rows.push(Measured {
                    arch: name,
                    k,
                    seed,
                    absorption,
                    parent_silent,
                    fvu,
                    dict_mcc,
                });
                progress(rows.len() as f64 / total);
            }
        }
    }
    Ok(report(p, &rows))
}

fn check(p: &AbsorptionParams) -> Result<()> {
    if p.seeds == 0 || p.ks.is_empty() {
        return Err(Error::param("seeds", "need at least one seed and one k"));
    }
    if let Some(&k) = p.ks.iter().find(|&&k| k == 0 || k > p.latents) {
        return Err(Error::param(
            "ks",
            format!("k = {k} must be in 1..={}", p.latents),
        ));
    }
    Ok(())
}

fn report(p: &AbsorptionParams, rows: &[Measured]) -> Report {
    let title = format!(
        "{} parents x {} children among {} latents (M = {}), SAEs of {} latents; mean ± sd over {} seeds, held out",
        p.hierarchy.parents, p.hierarchy.children, p.latents, p.dims, p.latents, p.seeds
    );
    let mut table = Table::new(
        title,
        &[
            "arch",
            "k",
            "absorption",
            "parent silent",
            "FVU",
            "dict MCC",
        ],
    );
    let mut notes = Vec::new();
    for &k in &p.ks {
        let mut means = Vec::new();
        for name in ARCHS {
            let of = |f: &dyn Fn(&Measured) -> f64| {
                let v: Vec<f64> = rows
                    .iter()
                    .filter(|r| r.arch == name && r.k == k)
                    .map(f)
                    .collect();
                mean_sd(&v)
            };
            let cells = [
                of(&|r| r.absorption),
                of(&|r| r.parent_silent),
                of(&|r| r.fvu),
                of(&|r| r.dict_mcc),
            ];
            let mut row = vec![name.to_string(), k.to_string()];
            row.extend(cells.iter().map(|(m, s)| format!("{m:.3} ± {s:.3}")));
            table.push(row);
            means.push((name, cells[0].0, cells[2].0));
        }
        notes.push(verdict(k, &means));
    }
    notes.push(format!(
        "Absorption: on a child's held-out samples, the parent's latent (decoder closest to the parent's atom) is silent while another latent with cosine >= {DEFAULT_ABSORPTION_COS} to the parent's atom fires; parent silent counts every silence. Matryoshka prefixes {:?}.",
        p.prefixes
    ));
    Report {
        name: "absorption".into(),
        summary: format!(
            "Planted hierarchy (a child implies its parent), each latent firing with probability {} in the base draw, {:?} magnitudes, {} training samples; TopK, BatchTopK and Matryoshka BatchTopK trained {} steps at k = {:?}.",
            p.firing_prob, p.magnitude, p.samples, p.steps, p.ks
        ),
        tables: vec![table],
        notes,
        json: json!({"params": p, "runs": rows}),
        plots: Vec::new(),
        images: Vec::new(),
    }
}

/// The comparison at one k, read off the means: (arch, absorption, FVU).
fn verdict(k: usize, means: &[(&str, f64, f64)]) -> String {
    let get = |name: &str| means.iter().find(|m| m.0 == name).copied();
    let (Some(m), Some(t), Some(b)) = (get("matryoshka"), get("topk"), get("batchtopk")) else {
        return String::new();
    };
    let less = m.1 < t.1.min(b.1);
    format!(
        "k = {k}: Matryoshka absorbs {} ({:.3} vs TopK {:.3}, BatchTopK {:.3}) at held-out FVU {:.3} (vs {:.3}, {:.3}).",
        if less { "less" } else { "not less" },
        m.1,
        t.1,
        b.1,
        m.2,
        t.2,
        b.2
    )
}
