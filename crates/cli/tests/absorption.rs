//! Feature absorption through the binary: `synth` plants a hierarchy and writes its pairs,
//! `eval --truth` measures absorption against them, and a broken hierarchy file is refused.

use serde_json::Value;
use std::path::Path;

mod common;
use common::{fails, ok};

/// Parents 0..4 with 4 children each among 64 latents, constant magnitudes (a child latent that
/// reads child + parent then reconstructs both exactly: the setting where absorption pays).
fn hierarchy(dir: &Path) -> String {
    let out = dir.join("data");
    ok(&[
        "synth",
        "--latents",
        "64",
        "--dims",
        "32",
        "--firing-prob",
        "0.03",
        "--magnitude",
        "constant",
        "--parents",
        "4",
        "--children",
        "4",
        "--samples",
        "20000",
        "--test-samples",
        "4000",
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    out.to_str().unwrap().to_string()
}

fn absorption_of(dir: &Path, data: &str, arch: &str, k: &str) -> Value {
    let run_dir = dir.join(arch);
    let x = format!("{data}/activations.npy");
    ok(&[
        "train",
        "--data",
        &x,
        "--arch",
        arch,
        "--k",
        k,
        "--latents",
        "64",
        "--steps",
        "3000",
        "--batch",
        "512",
        "--lr",
        "2e-3",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    let test = format!("{data}/test_activations.npy");
    let sae = run_dir.to_str().unwrap();
    serde_json::from_str(&ok(&[
        "eval", "--sae", sae, "--data", &test, "--truth", data, "--json",
    ]))
    .unwrap()
}

#[test]
fn synth_writes_the_pairs_and_eval_measures_absorption_under_pressure() {
    let t = tempfile::tempdir().unwrap();
    let data = hierarchy(t.path());
    let pairs: Value =
        serde_json::from_slice(&std::fs::read(format!("{data}/hierarchy.json")).unwrap()).unwrap();
    assert_eq!(pairs["pairs"].as_array().unwrap().len(), 16);
    assert_eq!(pairs["pairs"][5], serde_json::json!([1, 9]));
    // TopK with fewer slots than true active latents merges children with their parent.
    let m = absorption_of(t.path(), &data, "topk", "2");
    let rate = m["absorption_rate"].as_f64().unwrap();
    assert!(rate > 0.4, "TopK k=2 absorption {rate}");
    let pairs = m["absorption"]["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 16);
    assert!(
        pairs[0]["parent_latent_cos"].as_f64().unwrap() > 0.9,
        "{}",
        pairs[0]
    );
    assert!(m["parent_silent_rate"].as_f64().unwrap() >= rate);
}

#[test]
fn a_broken_hierarchy_file_is_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let data = hierarchy(t.path());
    let run_dir = t.path().join("sae");
    ok(&[
        "train",
        "--data",
        &format!("{data}/activations.npy"),
        "--arch",
        "topk",
        "--k",
        "3",
        "--latents",
        "64",
        "--steps",
        "20",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    let test = format!("{data}/test_activations.npy");
    let sae = run_dir.to_str().unwrap();
    for (text, needle) in [
        ("{\"pairs\": 3}", "hierarchy.json"),
        ("{\"pairs\": [[0, 64]]}", "hierarchy.json"),
    ] {
        std::fs::write(format!("{data}/hierarchy.json"), text).unwrap();
        let err = fails(&["eval", "--sae", sae, "--data", &test, "--truth", &data]);
        assert!(err.contains(needle), "{text}: {err}");
    }
    std::fs::write(format!("{data}/hierarchy.json"), "{\"pairs\": [[0, 4]]}").unwrap();
    let err = fails(&[
        "eval",
        "--sae",
        sae,
        "--data",
        &test,
        "--truth",
        &data,
        "--absorption-cos",
        "2",
    ]);
    assert!(err.contains("absorption_cos"), "{err}");
}

#[test]
fn synth_refuses_a_hierarchy_larger_than_the_latents() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("d");
    let err = fails(&[
        "synth",
        "--latents",
        "16",
        "--dims",
        "8",
        "--active",
        "2",
        "--samples",
        "10",
        "--parents",
        "4",
        "--children",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("hierarchy"), "{err}");
    assert!(!out.exists());
}
