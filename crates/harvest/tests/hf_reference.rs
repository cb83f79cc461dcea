//! An independent check of the SmolLM2 and Gemma 3 forwards and tokenizers: Hugging Face
//! transformers loaded the same GGUF files (dequantised by PyPI's `gguf`) and ran its own Llama
//! and Gemma 3 implementations; their token ids, residual streams and last-position logits are
//! committed as fixtures (`scripts/hf-reference.py` writes them), so these tests need no PyTorch.
//! Skipped without the fetched models unless `SPARSECODE_REQUIRE_ASSETS` is set (CI).

use serde_json::Value;
use sparsecode_harvest::assets::{self, Asset};
use sparsecode_harvest::gemma::Gemma;
use sparsecode_harvest::llama::Llama;
use sparsecode_harvest::tokenizer::TextTokenizer;
use sparsecode_harvest::{CausalLm, ResidualModel};

fn reference(file: &str) -> Value {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The asset's path, or None (skipped, said) when it is absent outside CI.
fn asset(a: Asset, name: &str) -> Option<std::path::PathBuf> {
    let p = assets::path(a);
    if !p.exists() {
        if std::env::var_os("SPARSECODE_REQUIRE_ASSETS").is_some() {
            panic!(
                "{} is missing: run scripts/fetch-assets {name}",
                p.display()
            );
        }
        eprintln!(
            "skipped: {} absent (scripts/fetch-assets {name})",
            p.display()
        );
        return None;
    }
    Some(p)
}

fn model() -> Option<Llama> {
    Some(Llama::load(&asset(Asset::SmolLm2, "smollm2")?).unwrap())
}

fn gemma() -> Option<Gemma> {
    Some(Gemma::load(&asset(Asset::Gemma3, "gemma3")?).unwrap())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as u32)
        .collect()
}

fn check_tokens(tok: &TextTokenizer, r: &Value) {
    assert_eq!(tok.bos(), r["bos"].as_u64().map(|b| b as u32));
    for t in r["texts"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        assert_eq!(tok.encode_plain(text).unwrap(), ids(&t["ids"]), "{text:?}");
    }
}

#[test]
fn tokenizer_gives_the_token_ids_transformers_gives() {
    let Some(m) = model() else { return };
    check_tokens(m.tokenizer(), &reference("smollm2_hf_reference.json"));
}

#[test]
fn gemma3_tokenizer_gives_the_token_ids_transformers_gives() {
    let Some(m) = gemma() else { return };
    check_tokens(m.tokenizer(), &reference("gemma3_hf_reference.json"));
}

#[test]
fn residual_stream_matches_transformers_after_every_recorded_block() {
    let Some(m) = model() else { return };
    check_residuals(&m, &reference("smollm2_hf_reference.json"));
}

#[test]
fn gemma3_residual_stream_matches_transformers_after_every_recorded_block() {
    let Some(m) = gemma() else { return };
    check_residuals(&m, &reference("gemma3_hf_reference.json"));
}

/// The residual after every recorded block, within 1e-3 of a row's norm (float32 sums in
/// another order).
fn check_residuals(m: &dyn ResidualModel, r: &Value) {
    let prompt = ids(&r["prompt_ids"]);
    let layers: Vec<usize> = r["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["layer"].as_u64().unwrap() as usize)
        .collect();
    let ours = m.residuals(std::slice::from_ref(&prompt), &layers).unwrap();
    let d = m.d_model();
    let mut worst: f64 = 0.0;
    for (l, got) in r["layers"].as_array().unwrap().iter().zip(&ours) {
        let norms = l["norms"].as_array().unwrap();
        let dims = l["first_dims"].as_array().unwrap();
        assert_eq!(got.len(), prompt.len() * d);
        for (p, row) in got.chunks_exact(d).enumerate() {
            let want = norms[p].as_f64().unwrap();
            let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            // Relative to the row's norm: float32 sums in another order, 30 blocks deep at most.
            let rel = |x: f64| x / want.max(1e-6);
            worst = worst.max(rel((norm - want).abs()));
            for (i, hf) in dims[p].as_array().unwrap().iter().enumerate() {
                worst = worst.max(rel((row[i] as f64 - hf.as_f64().unwrap()).abs()));
            }
        }
    }
    eprintln!("largest difference from transformers: {worst:e} of a row's norm");
    assert!(worst < 1e-3, "largest difference {worst:e} of a row's norm");
}

#[test]
fn next_token_logits_rank_the_same_tokens_as_transformers() {
    let Some(m) = model() else { return };
    let r = reference("smollm2_hf_reference.json");
    let logits = m.last_logits(&[ids(&r["prompt_ids"])]).unwrap().remove(0);
    check_top5(&logits, &r);
}

#[test]
fn gemma3_next_token_logits_rank_the_same_tokens_as_transformers() {
    let Some(m) = gemma() else { return };
    let r = reference("gemma3_hf_reference.json");
    let logits = m.last_logits(&[ids(&r["prompt_ids"])]).unwrap().remove(0);
    check_top5(&logits, &r);
}

fn check_top5(logits: &[f32], r: &Value) {
    let want = ids(&r["last_logits_top5"]["ids"]);
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
    assert_eq!(&order[..5], want.as_slice());
    for (id, v) in want
        .iter()
        .zip(r["last_logits_top5"]["values"].as_array().unwrap())
    {
        let diff = (logits[*id as usize] as f64 - v.as_f64().unwrap()).abs();
        assert!(diff < 2e-2, "logit of token {id}: off by {diff}");
    }
}
