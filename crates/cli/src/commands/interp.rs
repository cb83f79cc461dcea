//! `sparsecode interp`: word-intrusion scores with MiniLM embeddings for an SAE's features, the
//! model's raw neurons (residual dimensions) and random directions, on the same store.

use super::dashboard::{open_sae_on_store, row_bar, SaeOnStore};
use crate::Outcome;
use anyhow::Result;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use sparsecode::io::{write_atomic, write_json_atomic, OutputDir};
use sparsecode::linalg::{matmul, normalize_rows, MatRef};
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

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    if a.features < 2 {
        anyhow::bail!("invalid `--features`: {} (at least 2)", a.features);
    }
    if a.window == 0 {
        anyhow::bail!("invalid `--window`: at least 1 token");
    }
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
    // Random unit directions, as many as features are scored.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed ^ 0x5eed);
    let mut dirs: Vec<f32> = (0..a.features * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    normalize_rows(&mut dirs, d);
    let rows = a.io.max_rows.unwrap_or(u64::MAX).min(store.manifest().rows);
    let enc_sae = |x: &Matrix| Ok(sae.encode(x, par));
    let enc_neurons = |x: &Matrix| Ok(Codes::Dense(x.clone()));
    let enc_random = |x: &Matrix| {
        let mut out = vec![0.0f32; x.rows() * a.features];
        matmul(
            &mut out,
            x.view(),
            MatRef::new(&dirs, a.features, d).t(),
            0.0,
            par,
        );
        Ok(Codes::Dense(Matrix::from_vec(x.rows(), a.features, out)?))
    };
    type Enc<'a> = &'a (dyn Fn(&Matrix) -> sparsecode::Result<Codes> + Sync);
    let families: [(&str, usize, Enc); 3] = [
        ("sae", sae.d_sae(), &enc_sae),
        ("neurons", d, &enc_neurons),
        ("random", a.features, &enc_random),
    ];
    // Only rows with a full window of left context are items: every item then has the same
    // length, and the first positions of a context (whose residual norms are far larger) cannot
    // fill a neuron's top list with one-token texts that an embedder groups by length alone.
    if a.window > tokens.context {
        anyhow::bail!(
            "invalid `--window`: {} tokens is longer than the store's contexts ({})",
            a.window,
            tokens.context
        );
    }
    let (window, ctx) = (a.window, tokens.context as u64);
    let full_window = |r: u64| (r % ctx) as usize + 1 >= window;
    let out = OutputDir::create(&a.io.out, a.io.force)?;
    let mut results: Vec<(&str, FamilyScore)> = Vec::new();
    for (name, n, enc) in families {
        let bar = row_bar(rows, name);
        let scan = features::scan(
            &store,
            n,
            Some(rows),
            8192,
            ScanConfig {
                top_n: 32,
                reservoir: 1,
                seed: a.seed,
                par,
            },
            enc,
            Some(&full_window),
            &mut |done| bar.set_position(done),
        )?;
        bar.finish_and_clear();
        let tasks = interp::build_tasks(&scan, &tokens, &store, enc, &cfg)?;
        let mut embed = |texts: &[String]| -> sparsecode::Result<Vec<Vec<f32>>> {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            bert.embed(&refs).map_err(|e| sparsecode::Error::Empty {
                context: "MiniLM embedding".into(),
                reason: e.to_string(),
            })
        };
        let s = interp::score(&tasks, &tokens, &cfg, &mut embed)?;
        eprintln!(
            "{name}: {} features, intrusion {:.3} [{:.3}, {:.3}], DistRatio {:.3}",
            s.n, s.accuracy, s.accuracy_ci.0, s.accuracy_ci.1, s.dist_ratio
        );
        results.push((name, s));
    }
    let mut md = String::from(
        "# Word intrusion (MiniLM embeddings; chance = 1/6)\n\n| features | scored | intruder found (95% CI) | median DistRatio (95% CI) |\n|---|---|---|---|\n",
    );
    for (name, s) in &results {
        md.push_str(&format!(
            "| {name} | {} | {:.3} [{:.3}, {:.3}] | {:.3} [{:.3}, {:.3}] |\n",
            s.n,
            s.accuracy,
            s.accuracy_ci.0,
            s.accuracy_ci.1,
            s.dist_ratio,
            s.dist_ratio_ci.0,
            s.dist_ratio_ci.1
        ));
    }
    print!("{md}");
    let mut record = sparsecode::io::record::provenance("interp");
    record["config"] = serde_json::to_value(cfg)?;
    record["sae"] = serde_json::to_value(&results[0].1)?;
    record["neurons"] = serde_json::to_value(&results[1].1)?;
    record["random"] = serde_json::to_value(&results[2].1)?;
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
