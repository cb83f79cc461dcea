//! `sparsecode inspect --sae RUN --prompt TEXT`: the SAE's latents on each token of a prompt, and
//! with `--steer LATENT=VALUE` the model steered along those latents' decoder directions (library
//! `sparsecode_harvest::steer`): greedy continuations and next-token probabilities, clean against
//! steered.

use crate::Outcome;
use anyhow::Result;
use serde_json::{json, Value};
use sparsecode::Parallelism;
use sparsecode_harvest::steer::{self, Steer, SteerMode, Steered};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// SAE folder (trained on the model's residual stream).
    #[arg(long)]
    sae: PathBuf,
    /// `smollm2`, `gemma3` or a .gguf file.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// The text whose tokens are shown.
    #[arg(long)]
    prompt: String,
    /// The hook: the residual stream after this block (default: the layer the SAE names).
    #[arg(long)]
    layer: Option<usize>,
    /// Latents shown per token (largest first).
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Steer: LATENT=VALUE adds VALUE times the latent's decoder direction at every position
    /// after BOS (repeat for several latents).
    #[arg(long, value_parser = parse_steer)]
    steer: Vec<Steer>,
    /// With --steer: set each latent's code to VALUE instead of adding.
    #[arg(long, requires = "steer")]
    clamp: bool,
    /// Tokens of greedy continuation, clean and steered.
    #[arg(long, default_value_t = 20)]
    continue_tokens: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_steer(s: &str) -> std::result::Result<Steer, String> {
    let bad = || format!("'{s}': expected LATENT=VALUE, e.g. 123=8.5");
    let (l, v) = s.split_once('=').ok_or_else(bad)?;
    Ok(Steer {
        latent: l.trim().parse().map_err(|_| bad())?,
        value: v.trim().parse().map_err(|_| bad())?,
    })
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let par = Parallelism::threads(threads);
    let (sae, layer, model) = super::sae_in_model(&a.sae, a.layer, &a.model, "inspect")?;
    let model = model.as_ref();
    steer::check(model, &sae, layer, &a.steer)?;
    let ids = steer::prompt_ids(model, &a.prompt)?;
    let tokens = steer::latents_per_token(model, &sae, &ids, layer, a.top, par)?;
    let mut out = json!({"sae": a.sae, "model": a.model, "layer": layer, "tokens": tokens});
    if !a.steer.is_empty() {
        let mode = if a.clamp {
            SteerMode::Clamp
        } else {
            SteerMode::Add
        };
        let how = (layer, a.steer.as_slice(), mode);
        out["steering"] = steering(model, &sae, how, &ids, a.continue_tokens, par)?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_text(&out);
    }
    Ok(Outcome::Ok)
}

/// Continuations and the largest probability changes, clean against steered.
fn steering(
    model: &dyn sparsecode_harvest::CausalLm,
    sae: &sparsecode::sae::Sae,
    (layer, steers, mode): (usize, &[Steer], SteerMode),
    ids: &[u32],
    n: usize,
    par: Parallelism,
) -> Result<Value> {
    let run = |steers| Steered {
        model,
        sae,
        layer,
        steers,
        mode,
        par,
    };
    let (clean, steered) = (run(&[]), run(steers));
    let text = |ids: &[u32]| model.tokenizer().decode(ids);
    let before = steer::probabilities(&clean.next_logits(ids)?);
    let after = steer::probabilities(&steered.next_logits(ids)?);
    let [up, down] = steer::largest_changes(&before, &after, 10);
    let rows = |v: Vec<(u32, f64, f64)>| -> Vec<Value> {
        v.into_iter()
            .map(|(t, b, a)| json!({"token": t, "text": model.tokenizer().token_text(t), "before": b, "after": a}))
            .collect()
    };
    Ok(json!({
        "mode": mode,
        "steer": steers,
        "clean_continuation": text(&clean.greedy(ids, n)?)?,
        "steered_continuation": text(&steered.greedy(ids, n)?)?,
        "rose": rows(up),
        "fell": rows(down),
    }))
}

fn print_text(v: &Value) {
    println!("layer {}", v["layer"]);
    for t in v["tokens"].as_array().into_iter().flatten() {
        let latents: Vec<String> = t["latents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| format!("{}:{:.2}", l[0], l[1].as_f64().unwrap_or(f64::NAN)))
            .collect();
        println!(
            "{:>4} {:<16} {}",
            t["pos"],
            format!("{:?}", t["text"].as_str().unwrap_or("")),
            latents.join("  ")
        );
    }
    let s = &v["steering"];
    if s.is_null() {
        return;
    }
    println!(
        "\nclean:   {:?}",
        s["clean_continuation"].as_str().unwrap_or("")
    );
    println!(
        "steered: {:?}",
        s["steered_continuation"].as_str().unwrap_or("")
    );
    for key in ["rose", "fell"] {
        println!("\nnext-token probability that {key} most:");
        for r in s[key].as_array().into_iter().flatten().take(5) {
            println!(
                "  {:<16} {:.4} -> {:.4}",
                format!("{:?}", r["text"].as_str().unwrap_or("")),
                r["before"].as_f64().unwrap_or(f64::NAN),
                r["after"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
}
