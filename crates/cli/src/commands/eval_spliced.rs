//! `sparsecode eval --sae RUN --model smollm2 --corpus TEXT`: the SAE spliced into the language
//! model at its hook (library `sparsecode_harvest::splice`): CE loss and KL of the clean, spliced
//! and zero-ablated model on the same contexts, and the reconstruction metrics there.

use crate::Outcome;
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use sparsecode::Parallelism;
use sparsecode_harvest::corpus::{self, InvalidUtf8};
use sparsecode_harvest::splice::{self, SpliceConfig};
use std::path::{Path, PathBuf};

/// Flags of the spliced evaluation.
#[derive(clap::Args)]
pub struct SplicedArgs {
    /// Splice the SAE into this causal language model and score it there (`smollm2`, `gemma3` or a .gguf
    /// file), instead of reading --data.
    #[arg(long)]
    model: Option<String>,
    /// Text file or folder the contexts come from (default: the fetched State of the Union texts).
    #[arg(long, requires = "model")]
    corpus: Option<PathBuf>,
    /// Tokens evaluated (whole contexts, drawn at random from the corpus with --seed).
    #[arg(long, default_value_t = 16_384, requires = "model")]
    tokens: u64,
    /// The hook: the residual stream after this block (default: the layer the SAE names in its
    /// metadata, `hook_layer` or `hook_name`).
    #[arg(long, requires = "model")]
    layer: Option<usize>,
    /// Tokens per context (BOS on top).
    #[arg(long, default_value_t = 128, requires = "model")]
    context: usize,
    /// Contexts per forward pass.
    #[arg(long, default_value_t = 4, requires = "model")]
    batch: usize,
    /// Tokens after BOS whose activations are left as they are (neither spliced nor scored).
    #[arg(long, default_value_t = 0, requires = "model")]
    exclude_positions: usize,
    /// Seed of the context draw.
    #[arg(long, default_value_t = 0, requires = "model")]
    seed: u64,
    /// Instead of splicing: SAEBench's first-letter absorption task (probes for "the token
    /// starts with L" at the SAE's layer, the latents carrying each letter, the absorption rate,
    /// an ablation check).
    #[arg(long, requires = "model", conflicts_with = "data")]
    first_letter: bool,
    /// First-letter task: words used (default: every alphabetic token of the vocabulary).
    #[arg(long, requires = "first_letter")]
    words: Option<usize>,
}

pub fn run(sae_path: &Path, a: &SplicedArgs, as_json: bool, threads: usize) -> Result<Outcome> {
    let Some(spec) = a.model.as_deref() else {
        bail!("give --data FILE, or --model to splice the SAE into a model");
    };
    let (sae, layer, model) = super::sae_in_model(sae_path, a.layer, spec, "a spliced evaluation")?;
    let model = model.as_ref();
    if a.first_letter {
        return first_letter(sae_path, (&sae, layer, model), a, as_json, threads);
    }
    let corpus_path = super::corpus_or_default(&a.corpus)?;
    let (docs, invalid_utf8) = corpus::read_corpus(&corpus_path, InvalidUtf8::default())?;
    let contexts = corpus::shuffled_contexts(
        (&corpus_path, &docs),
        model.tokenizer(),
        a.context,
        Some(a.tokens),
        a.seed,
    )?;
    let cfg = SpliceConfig {
        layer,
        skip: a.exclude_positions,
        batch: a.batch,
    };
    let bar = ProgressBar::new(contexts.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} contexts (eta {eta})")
            .expect("the template is valid"),
    );
    let par = Parallelism::threads(threads);
    let result = splice::evaluate(model, &sae, &contexts, &cfg, par, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let out = json!({
        "sae": sae_path,
        "model": spec,
        "corpus": corpus_path,
        "config": cfg,
        "context": a.context,
        "contexts": contexts.len(),
        "seed": a.seed,
        "invalid_utf8": invalid_utf8,
        "splice": result.splice,
        "reconstruction": result.reconstruction,
        "explained_variance": 1.0 - result.reconstruction.fvu,
    });
    if as_json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_table(&out);
    }
    Ok(Outcome::Ok)
}

/// `eval --model M --first-letter`: the absorption task at the SAE's layer.
fn first_letter(
    sae_path: &Path,
    (sae, layer, model): (
        &sparsecode::sae::Sae,
        usize,
        &dyn sparsecode_harvest::CausalLm,
    ),
    a: &SplicedArgs,
    as_json: bool,
    threads: usize,
) -> Result<Outcome> {
    use sparsecode_harvest::first_letter::{evaluate, FirstLetterConfig};
    let mut cfg = FirstLetterConfig::new(layer);
    cfg.max_words = a.words.unwrap_or(usize::MAX);
    cfg.seed = a.seed;
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} (eta {eta})")
            .expect("the template is valid"),
    );
    let par = Parallelism::threads(threads);
    let r = evaluate(model, sae, &cfg, par, &mut |stage, done, total| {
        bar.set_message(stage.to_string());
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let mut out = serde_json::to_value(&r)?;
    out["sae"] = json!(sae_path);
    out["model"] = json!(a.model);
    if as_json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(Outcome::Ok);
    }
    println!("letter  probe F1  main latents  true pos  absorption  full  confirmed");
    for l in &r.letters {
        println!(
            "{:>6}  {:>8.3}  {:>12}  {:>8}  {:>10.3}  {:>4}  {:>4}/{}{}",
            l.letter,
            l.probe_f1,
            l.main_latents.len(),
            l.probe_true_positives,
            l.mean_absorption_fraction,
            l.full_absorptions,
            l.ablation_confirmed.0,
            l.ablation_confirmed.1,
            if l.counted { "" } else { "  (not counted)" }
        );
    }
    println!(
        "{} words ({} prompts dropped), {} letters counted: mean absorption fraction {:.4}, full absorption {:.4} ({:.4} ablation-confirmed), split features {:.2}",
        r.words,
        r.dropped,
        r.counted_letters,
        r.mean_absorption_fraction,
        r.mean_full_absorption,
        r.confirmed_full_absorption,
        r.mean_split_features
    );
    if !r.enough_letters {
        println!(
            "fewer than {} letters have a ground-truth probe above F1 {}: SAEBench would not score this model",
            r.config.min_letters, r.config.min_probe_f1
        );
    }
    Ok(Outcome::Ok)
}

fn print_table(v: &Value) {
    let s = &v["splice"];
    let r = &v["reconstruction"];
    let rows = [
        ("tokens scored", &s["tokens"]),
        ("CE clean", &s["ce_clean"]),
        ("CE spliced", &s["ce_sae"]),
        ("CE zero-ablated", &s["ce_ablated"]),
        ("CE loss score", &s["ce_loss_score"]),
        ("delta LM loss", &s["delta_lm_loss"]),
        ("KL spliced", &s["kl_sae"]),
        ("KL zero-ablated", &s["kl_ablated"]),
        ("KL score", &s["kl_score"]),
        ("explained variance", &v["explained_variance"]),
        ("L0", &r["l0"]),
        ("L1", &r["l1"]),
        ("cosine", &r["cosine"]),
        ("L2 ratio", &r["l2_ratio"]),
        ("dead fraction", &r["dead_fraction"]),
    ];
    for (name, value) in rows {
        match value {
            Value::Number(n) if n.is_f64() => {
                println!("{name:>20}  {:.4}", n.as_f64().unwrap_or(f64::NAN))
            }
            other => println!("{name:>20}  {other}"),
        }
    }
}
