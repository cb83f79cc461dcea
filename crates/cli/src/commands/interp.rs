//! `sparsecode interp`: word-intrusion scores with MiniLM embeddings for an SAE's features, the
//! model's raw neurons (residual dimensions) and random directions, on the same store.

use super::dashboard::{open_sae_on_store, row_bar, SaeOnStore};
use crate::Outcome;
use anyhow::Result;
use sparsecode::data::store::Store;
use sparsecode::data::tokens::TokenTable;
use sparsecode::io::{write_atomic, write_json_atomic, OutputDir};
use sparsecode::linalg::matmul;
use sparsecode::sae::Codes;
use sparsecode::{Matrix, Parallelism};
use sparsecode_harvest::bert::Bert;
use sparsecode_lab::interp::{self, FamilyScore, IntrusionConfig};
use sparsecode_lab::report::features::{self, ScanConfig};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    io: SaeOnStore,
    /// Features scored per family.
    #[arg(long, default_value_t = 200)]
    features: usize,
    /// Tokens of left context per item (the activating token included).
    #[arg(long, default_value_t = 12)]
    window: usize,
    /// Seed of the feature, intruder and random-direction sampling and of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

type Encoder<'a> = &'a (dyn Fn(&Matrix) -> sparsecode::Result<Codes> + Sync);

fn check_flags(a: &Args) -> Result<()> {
    if a.features < 2 {
        anyhow::bail!("invalid `--features`: {} (at least 2)", a.features);
    }
    if a.window == 0 {
        anyhow::bail!("invalid `--window`: at least 1 token");
    }
    Ok(())
}

fn check_window(a: &Args, context: usize) -> Result<()> {
    if a.window > context {
        anyhow::bail!(
            "invalid `--window`: {} tokens is longer than the store's contexts ({context})",
            a.window
        );
    }
    Ok(())
}

/// What every family is scored with.
struct Scoring<'a> {
    store: &'a Store,
    tokens: &'a TokenTable,
    rows: u64,
    cfg: IntrusionConfig,
    bert: Bert,
    par: Parallelism,
}

impl Scoring<'_> {
    /// Scans the store for one family's top rows, builds its intrusion tasks and scores them.
    fn family(&self, name: &str, n: usize, enc: Encoder) -> Result<FamilyScore> {
        // Only rows with a full window of left context are items: every item then has the same
        // length, and the first positions of a context (whose residual norms are far larger)
        // cannot fill a neuron's top list with one-token texts that an embedder groups by length.
        let (window, ctx) = (self.cfg.window, self.tokens.context as u64);
        let full_window = |r: u64| (r % ctx) as usize + 1 >= window;
        let scan_cfg = ScanConfig {
            top_n: 32,
            reservoir: 1,
            seed: self.cfg.seed,
            par: self.par,
        };
        let bar = row_bar(self.rows, name);
        let scan = features::scan(
            self.store,
            n,
            Some(self.rows),
            8192,
            scan_cfg,
            enc,
            Some(&full_window),
            &mut |done| bar.set_position(done),
        )?;
        bar.finish_and_clear();
        let tasks = interp::build_tasks(&scan, self.tokens, self.store, enc, &self.cfg)?;
        let mut embed = |texts: &[String]| -> sparsecode::Result<Vec<Vec<f32>>> {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            self.bert
                .embed(&refs)
                .map_err(|e| sparsecode::Error::Empty {
                    context: "MiniLM embedding".into(),
                    reason: e.to_string(),
                })
        };
        let s = interp::score(&tasks, self.tokens, &self.cfg, &mut embed)?;
        eprintln!(
            "{name}: {} features, intrusion {:.3} [{:.3}, {:.3}], DistRatio {:.3}",
            s.n, s.accuracy, s.accuracy_ci.0, s.accuracy_ci.1, s.dist_ratio
        );
        Ok(s)
    }
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    check_flags(&a)?;
    let (sae, store, tokens) = open_sae_on_store(&a.io.sae, &a.io.store)?;
    let d = store.manifest().d_in;
    let bert = Bert::minilm()?;
    let par = Parallelism::Threads(threads);
    let cfg = IntrusionConfig {
        features: a.features,
        window: a.window,
        seed: a.seed,
        ..IntrusionConfig::default()
    };
    let dirs = interp::random_directions(a.features, d, a.seed)?;
    let enc_sae = |x: &Matrix| Ok(sae.encode(x, par));
    let enc_neurons = |x: &Matrix| Ok(Codes::Dense(x.clone()));
    let enc_random = |x: &Matrix| {
        let mut out = vec![0.0f32; x.rows() * a.features];
        matmul(&mut out, x.view(), dirs.view().t(), 0.0, par);
        Ok(Codes::Dense(Matrix::from_vec(x.rows(), a.features, out)?))
    };
    let families: [(&str, usize, Encoder); 3] = [
        ("sae", sae.d_sae(), &enc_sae),
        ("neurons", d, &enc_neurons),
        ("random", a.features, &enc_random),
    ];
    check_window(&a, tokens.context)?;
    let rows = a.io.max_rows.unwrap_or(u64::MAX).min(store.manifest().rows);
    let out = OutputDir::create(&a.io.out, a.io.force)?;
    let scoring = Scoring {
        store: &store,
        tokens: &tokens,
        rows,
        cfg,
        bert,
        par,
    };
    let mut results: Vec<(&str, FamilyScore)> = Vec::new();
    for (name, n, enc) in families {
        results.push((name, scoring.family(name, n, enc)?));
    }
    let md = interp::results_markdown(&results);
    print!("{md}");
    let mut record = sparsecode::io::record::provenance("interp");
    record["config"] = serde_json::to_value(cfg)?;
    for (name, score) in &results {
        record[*name] = serde_json::to_value(score)?;
    }
    record["inputs"] = serde_json::json!({
        "sae": a.io.sae, "store": a.io.store, "rows_scanned": rows,
        "model_name": store.manifest().metadata["model_name"],
        "hook_name": store.manifest().metadata["hook_name"],
    });
    write_json_atomic(&out.join("scores.json"), &record)?;
    write_atomic(&out.join("results.md"), md.as_bytes())?;
    let dest = out.commit()?;
    println!("wrote {}", dest.display());
    Ok(Outcome::Ok)
}
