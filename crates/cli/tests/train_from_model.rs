//! `sparsecode train --model`: SAEs trained on activations streamed from SmolLM2's forward passes
//! (no store), several hooks from one pass, checked against training on a harvested store of
//! the same rows, a killed run's exact resume, and the bad flags.

mod common;
use common::{asset, bin, fails, ok};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn assets() -> Option<(PathBuf, PathBuf)> {
    Some((
        asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?,
        asset("text/moby-dick")?,
    ))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The SAE flags shared by every run here.
const SAE: [&str; 10] = [
    "--arch",
    "topk",
    "--k",
    "8",
    "--latents",
    "256",
    "--batch",
    "128",
    "--seed",
    "3",
];

#[test]
fn streamed_training_equals_training_on_the_harvested_store() {
    let Some((gguf, moby)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    ok(&[
        "harvest",
        "--model",
        s(&gguf),
        "--corpus",
        s(&moby),
        "--layer",
        "15",
        "--context",
        "32",
        "--max-tokens",
        "4096",
        "--shard-contexts",
        "32",
        "--out",
        s(&store),
    ]);
    let from_store = t.path().join("from_store");
    let mut args = vec![
        "train",
        "--store",
        s(&store),
        "--steps",
        "150",
        "--out",
        s(&from_store),
    ];
    args.extend_from_slice(&SAE);
    ok(&args);
    // Two hooks from the same forward passes: the one at block 15 sees exactly the stored rows
    // in the same order, so its SAE is the same to the bit.
    let streamed = t.path().join("streamed");
    let mut args = vec![
        "train",
        "--model",
        s(&gguf),
        "--corpus",
        s(&moby),
        "--layer",
        "3,15",
        "--context",
        "32",
        "--tokens",
        "4096",
        "--shard-contexts",
        "32",
        "--steps",
        "150",
        "--out",
        s(&streamed),
    ];
    args.extend_from_slice(&SAE);
    ok(&args);
    let weights = |dir: &Path| std::fs::read(dir.join("sae_weights.safetensors")).unwrap();
    assert!(
        weights(&from_store) == weights(&streamed.join("blocks.15.hook_resid_post")),
        "streamed training differs from training on the harvested store"
    );
    let cfg: Value = serde_json::from_slice(
        &std::fs::read(streamed.join("blocks.3.hook_resid_post/cfg.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["metadata"]["hook_layer"], 3);
    assert_eq!(cfg["metadata"]["hook_name"], "blocks.3.hook_resid_post");
    assert_eq!(cfg["metadata"]["context_size"], 32);
}

#[test]
fn a_killed_streamed_run_resumes_to_identical_weights() {
    let Some((gguf, moby)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let run = |out: &Path| {
        let mut args = vec![
            "train",
            "--model",
            s(&gguf),
            "--corpus",
            s(&moby),
            "--layer",
            "6",
            "--context",
            "32",
            "--tokens",
            "2048",
            "--steps",
            "3000",
            "--checkpoint-every",
            "100",
            "--out",
            s(out),
        ];
        args.extend_from_slice(&SAE);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let full = t.path().join("full");
    let args = run(&full);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let killed = t.path().join("killed");
    let mut child = bin()
        .args(run(&killed))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = t.path().join("killed.partial/checkpoint/state.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !ckpt.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success(), "killed before the end");
    ok(&["train", "--resume", s(&killed)]);
    let weights = |dir: &Path| std::fs::read(dir.join("sae_weights.safetensors")).unwrap();
    assert!(weights(&full) == weights(&killed), "resumed weights differ");
}

#[test]
fn training_from_a_model_refuses_what_it_cannot_stream() {
    let Some((gguf, moby)) = assets() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("run");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut a = vec![
            "train",
            "--model",
            s(&gguf),
            "--corpus",
            s(&moby),
            "--arch",
            "topk",
            "--k",
            "4",
            "--latents",
            "64",
            "--steps",
            "10",
            "--out",
            s(&out),
        ];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect()
    };
    for (extra, needle) in [
        (&[][..], "--layer"),
        (&["--layer", "30"][..], "30"),
        (&["--layer", "4,2,4"][..], "4 is given twice"),
        (
            &[
                "--layer",
                "2",
                "--context",
                "16",
                "--exclude-positions",
                "16",
            ][..],
            "exclude_positions",
        ),
        (
            &["--layer", "2", "--tokens", "8"][..],
            "fewer than one context",
        ),
    ] {
        let args = base(extra);
        let err = fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            err.contains(needle),
            "{extra:?}: expected '{needle}' in:\n{err}"
        );
    }
    assert!(!out.exists());
}
