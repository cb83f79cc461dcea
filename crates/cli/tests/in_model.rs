//! SAEs at work inside SmolLM2, with SAEs whose answers are known: one that reconstructs exactly
//! (spliced in: CE loss score 1, KL 0) and one that outputs zeros (the ablation itself: scores
//! 0). `sparsecode eval --model` on a small slice of Moby-Dick, `sparsecode inspect` with and
//! without steering, and the bad inputs of both.

mod common;
use common::{asset, fails, ok};
use serde_json::{json, Value};
use sparsecode::sae::{Activation, Sae};
use sparsecode::Matrix;
use std::path::{Path, PathBuf};

const D: usize = 576;

/// `relu(x) - relu(-x) = x`: 2d ReLU latents `[I; -I]` that reconstruct every vector exactly.
/// Without `encoder` every code is 0; without `decoder` nothing is reconstructed (with neither,
/// an SAE of zeros: the ablation itself).
fn known_sae(dir: &Path, encoder: bool, decoder: bool, meta: Value) -> PathBuf {
    let mut sae = Sae::zeros(D, 2 * D, Activation::Relu, None);
    let sign = |i: usize| if i < D { 1.0 } else { -1.0 };
    let rows = Matrix::from_fn(2 * D, D, |i, j| if i % D == j { sign(i) } else { 0.0 });
    if encoder {
        sae.w_enc = rows.clone();
    }
    if decoder {
        sae.w_dec = rows;
    }
    std::fs::create_dir_all(dir).unwrap();
    sparsecode::sae::saelens::save(dir, &sae, meta).unwrap();
    dir.to_path_buf()
}

fn assets() -> Option<(PathBuf, PathBuf)> {
    Some((
        asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?,
        asset("text/moby-dick")?,
    ))
}

fn spliced(sae: &Path, gguf: &Path, corpus: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "eval",
        "--sae",
        sae.to_str().unwrap(),
        "--model",
        gguf.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--tokens",
        "64",
        "--context",
        "32",
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

#[test]
fn an_exact_reconstruction_scores_one_and_a_zero_sae_scores_zero() {
    let Some((gguf, moby)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    // The layer comes from the SAE's metadata, as a harvested store names it.
    let meta = json!({"hook_name": "blocks.3.hook_resid_post"});
    let exact = known_sae(&t.path().join("exact"), true, true, meta.clone());
    let v = spliced(&exact, &gguf, &moby, &[]);
    let s = &v["splice"];
    let f = |k: &str| s[k].as_f64().unwrap();
    assert_eq!(v["config"]["layer"], 3);
    // 2 contexts of 32 tokens after BOS: 31 scored positions each.
    assert_eq!(s["tokens"], 62);
    assert_eq!(f("ce_sae"), f("ce_clean"), "{s}");
    assert_eq!(
        (f("ce_loss_score"), f("kl_sae"), f("kl_score")),
        (1.0, 0.0, 1.0)
    );
    assert!(
        f("ce_ablated") > f("ce_clean") + 0.5,
        "ablation must hurt: {s}"
    );
    assert!(f("kl_ablated") > 0.5, "{s}");
    let r = &v["reconstruction"];
    assert_eq!(v["explained_variance"].as_f64(), Some(1.0));
    assert!((r["cosine"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{r}");
    assert!((r["l2_ratio"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{r}");

    let zero = known_sae(&t.path().join("zero"), false, false, meta);
    let z = spliced(&zero, &gguf, &moby, &[]);
    let s = &z["splice"];
    assert_eq!(s["ce_sae"], s["ce_ablated"], "{s}");
    assert_eq!(
        (s["ce_loss_score"].as_f64(), s["kl_score"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    assert_eq!(z["reconstruction"]["l2_ratio"].as_f64(), Some(0.0));
}

#[test]
fn excluded_positions_are_neither_spliced_nor_scored() {
    let Some((gguf, moby)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let zero = known_sae(&t.path().join("zero"), false, false, json!({}));
    let v = spliced(
        &zero,
        &gguf,
        &moby,
        &["--layer", "2", "--exclude-positions", "4"],
    );
    assert_eq!(v["splice"]["tokens"], 2 * (32 - 4 - 1));
    assert_eq!(v["reconstruction"]["samples"], 2 * (32 - 4));
}

/// The spliced evaluation reads text as the harvest does: a file that is not UTF-8 is read with
/// U+FFFD in place of its bad bytes and named in the record.
#[test]
fn spliced_evaluation_reads_a_corpus_with_a_latin1_file_and_names_it() {
    let Some((gguf, moby)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let corpus = t.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    for f in std::fs::read_dir(&moby).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, corpus.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(corpus.join("zz-latin1.txt"), b"caf\xe9 au lait").unwrap();
    let zero = known_sae(&t.path().join("zero"), false, false, json!({}));
    let v = spliced(&zero, &gguf, &corpus, &["--layer", "2"]);
    assert_eq!(v["invalid_utf8"]["replaced"], json!(["zz-latin1.txt"]));
}

#[test]
fn spliced_evaluation_refuses_what_it_cannot_run() {
    let Some((gguf, moby)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let base = |sae: &Path| {
        vec![
            "eval".to_string(),
            "--sae".into(),
            s(sae),
            "--model".into(),
            s(&gguf),
            "--corpus".into(),
            s(&moby),
            "--tokens".into(),
            "64".into(),
            "--context".into(),
            "32".into(),
        ]
    };
    let check = |args: Vec<String>, needle: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args);
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in:\n{err}"
        );
    };
    // No layer in the metadata and none given.
    let bare = known_sae(&t.path().join("bare"), false, false, json!({}));
    check(base(&bare), "--layer");
    // A layer past the model's 30 blocks.
    let mut a = base(&bare);
    a.extend(["--layer".into(), "30".into()]);
    check(a, "30");
    // An SAE of another width.
    let narrow = t.path().join("narrow");
    std::fs::create_dir_all(&narrow).unwrap();
    let sae = Sae::zeros(8, 16, Activation::Relu, None);
    sparsecode::sae::saelens::save(&narrow, &sae, json!({"hook_layer": 3})).unwrap();
    check(base(&narrow), "width 8");
    // A batch whose logits do not fit is refused before the model runs.
    let mut a = base(&bare);
    a.extend([
        "--layer".into(),
        "3".into(),
        "--memory-limit".into(),
        "1M".into(),
    ]);
    check(a, "spliced logits");
    // Fewer tokens than one context.
    let mut a = base(&bare);
    a.extend(["--layer".into(), "3".into()]);
    a[8] = "16".into();
    check(a, "fewer than one context");
}

fn inspect(sae: &Path, gguf: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "inspect",
        "--sae",
        sae.to_str().unwrap(),
        "--model",
        gguf.to_str().unwrap(),
        "--prompt",
        "The whale swam towards the ship",
        "--layer",
        "20",
        "--top",
        "3",
        "--continue-tokens",
        "6",
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

#[test]
fn inspect_lists_each_tokens_largest_latents() {
    let Some((gguf, _)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let exact = known_sae(&t.path().join("exact"), true, true, json!({}));
    let v = inspect(&exact, &gguf, &[]);
    let tokens = v["tokens"].as_array().unwrap();
    let text: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(text, "The whale swam towards the ship");
    for t in tokens {
        let values: Vec<f64> = t["latents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l[1].as_f64().unwrap())
            .collect();
        // The exact SAE's latents are |x_i| split by sign: three fire, largest first.
        assert_eq!(values.len(), 3, "{t}");
        assert!(
            values.windows(2).all(|w| w[0] >= w[1]) && values[2] > 0.0,
            "{t}"
        );
    }
    assert!(v["steering"].is_null());
}

#[test]
fn steering_by_nothing_changes_nothing_and_a_large_push_changes_the_continuation() {
    let Some((gguf, _)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let exact = known_sae(&t.path().join("exact"), true, true, json!({}));
    let same = &inspect(&exact, &gguf, &["--steer", "7=0"])["steering"];
    assert_eq!(same["clean_continuation"], same["steered_continuation"]);
    let moved = |r: &Value| r["before"] != r["after"];
    assert!(
        !same["rose"].as_array().unwrap().iter().any(moved),
        "{same}"
    );
    // A push of 500 along e_7 at every position after BOS is an edit the model notices.
    let pushed = &inspect(&exact, &gguf, &["--steer", "7=500"])["steering"];
    assert_ne!(pushed["clean_continuation"], pushed["steered_continuation"]);
    let rose = &pushed["rose"][0];
    assert!(rose["after"].as_f64() > rose["before"].as_f64(), "{pushed}");
}

/// Clamping sets a latent's code: it moves the residual by (value - code) along the decoder
/// row. Where every code is 0 that is the push itself; where the latent reads x_7 it is not.
#[test]
fn clamping_moves_by_the_value_less_the_latents_code() {
    let Some((gguf, _)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let steer = ["--steer", "7=500"];
    let clamp = ["--steer", "7=500", "--clamp"];
    let silent = known_sae(&t.path().join("silent"), false, true, json!({}));
    let (added, clamped) = (
        inspect(&silent, &gguf, &steer),
        inspect(&silent, &gguf, &clamp),
    );
    assert_eq!(clamped["steering"]["mode"], "clamp");
    for key in ["steered_continuation", "rose", "fell"] {
        assert_eq!(added["steering"][key], clamped["steering"][key], "{key}");
    }
    let exact = known_sae(&t.path().join("exact"), true, true, json!({}));
    let (added, clamped) = (
        inspect(&exact, &gguf, &steer),
        inspect(&exact, &gguf, &clamp),
    );
    assert_ne!(added["steering"]["rose"], clamped["steering"]["rose"]);
}

#[test]
fn inspect_refuses_a_missing_latent_a_bad_steer_and_an_empty_prompt() {
    let Some((gguf, _)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let exact = known_sae(
        &t.path().join("exact"),
        true,
        true,
        json!({"hook_layer": 3}),
    );
    let (sae, model) = (exact.to_str().unwrap(), gguf.to_str().unwrap());
    let base = ["inspect", "--sae", sae, "--model", model];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    for (extra, needle) in [
        (&["--prompt", "hi", "--steer", "5000=1"][..], "latent 5000"),
        (&["--prompt", "hi", "--steer", "five=1"][..], "LATENT=VALUE"),
        (&["--prompt", "hi", "--steer", "5=inf"][..], "not finite"),
        (&["--prompt", ""][..], "no tokens"),
    ] {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args);
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in:\n{err}"
        );
    }
}

fn first_letter(sae: &Path, gguf: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "eval",
        "--sae",
        sae.to_str().unwrap(),
        "--model",
        gguf.to_str().unwrap(),
        "--first-letter",
        "--words",
        "300",
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).unwrap()
}

#[test]
fn first_letter_absorption_is_zero_for_a_silent_sae_and_bounded_for_an_exact_one() {
    let Some((gguf, _)) = assets() else { return };
    let t = tempfile::tempdir().unwrap();
    let meta = json!({"hook_layer": 6});
    // Every code 0: no latent fires, so nothing can absorb (and nothing is ablated).
    let zero = first_letter(
        &known_sae(&t.path().join("zero"), false, true, meta.clone()),
        &gguf,
        &[],
    );
    assert_eq!(zero["letters"].as_array().unwrap().len(), 26);
    assert_eq!(zero["config"]["layer"], 6);
    let words = zero["words"].as_u64().unwrap() + zero["dropped"].as_u64().unwrap();
    assert_eq!(words, 300);
    assert_eq!(zero["mean_absorption_fraction"], 0.0);
    assert_eq!(zero["mean_full_absorption"], 0.0);
    // The residual does carry the first letter: some ground-truth probe beats chance clearly.
    let best_f1 = zero["letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["probe_f1"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(best_f1 > 0.4, "best probe F1 {best_f1}");
    // The exact SAE: rates are rates, ablation checks at most the full absorptions, and the
    // same seed gives the same answer.
    let exact_dir = known_sae(&t.path().join("exact"), true, true, meta);
    let exact = first_letter(&exact_dir, &gguf, &[]);
    for l in exact["letters"].as_array().unwrap() {
        let f = l["mean_absorption_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f), "{l}");
        let (full, tp) = (
            l["full_absorptions"].as_u64().unwrap(),
            l["probe_true_positives"].as_u64().unwrap(),
        );
        assert!(
            full <= tp && l["ablation_confirmed"][1].as_u64().unwrap() <= full,
            "{l}"
        );
    }
    assert_eq!(first_letter(&exact_dir, &gguf, &[]), exact);
}

#[test]
fn first_letter_refuses_too_few_words_a_missing_model_and_memory_past_the_limit() {
    let Some((gguf, _)) = assets() else { return };
    let t = tempfile::tempdir().unwrap();
    let sae = known_sae(
        &t.path().join("zero"),
        false,
        true,
        json!({"hook_layer": 6}),
    );
    let s = sae.to_str().unwrap();
    let g = gguf.to_str().unwrap();
    let err = fails(&[
        "eval",
        "--sae",
        s,
        "--model",
        g,
        "--first-letter",
        "--words",
        "20",
    ]);
    assert!(err.contains("words"), "{err}");
    let err = fails(&["eval", "--sae", s, "--data", "x.npy", "--first-letter"]);
    assert!(err.contains("--first-letter"), "{err}");
    // 300 words' residuals and codes (300 x (576 + 1152) floats, 2 MB) past the limit are
    // refused before any forward pass.
    let err = fails(&[
        "eval",
        "--sae",
        s,
        "--model",
        g,
        "--first-letter",
        "--words",
        "300",
        "--memory-limit",
        "1M",
    ]);
    assert!(err.contains("residuals and SAE codes"), "{err}");
}
