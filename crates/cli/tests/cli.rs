//! End-to-end tests of the `sparsecode` binary: the happy path on planted data, exact resume of
//! a killed run, and a clear error with exit status 2 for each kind of bad input.

use std::path::{Path, PathBuf};

mod common;
use common::{bin, fails, ok, run};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn synth(dir: &Path, name: &str, dims: &str) -> PathBuf {
    let out = dir.join(name);
    let args = [
        "synth",
        "--latents",
        "24",
        "--dims",
        dims,
        "--active",
        "2",
        "--samples",
        "2000",
        "--test-samples",
        "500",
        "--seed",
        "3",
        "--out",
        p(&out),
    ];
    ok(&args);
    out
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn synth_train_encode_eval_recovers_planted_features() {
    let t = tempfile::tempdir().unwrap();
    let d = synth(t.path(), "data", "12");
    for f in [
        "activations.npy",
        "codes.npy",
        "dictionary.npy",
        "test_activations.npy",
        "test_codes.npy",
        "synth.json",
    ] {
        assert!(d.join(f).exists(), "{f}");
    }
    let run_dir = t.path().join("run");
    ok(&[
        "train",
        "--data",
        p(&d.join("activations.npy")),
        "--arch",
        "topk",
        "--k",
        "2",
        "--latents",
        "24",
        "--steps",
        "3000",
        "--batch",
        "256",
        "--lr",
        "3e-3",
        "--lr-decay",
        "600",
        "--dead-window",
        "20000",
        "--seed",
        "1",
        "--out",
        p(&run_dir),
    ]);
    for f in [
        "cfg.json",
        "sae_weights.safetensors",
        "run.json",
        "metrics.jsonl",
        "train_config.json",
    ] {
        assert!(run_dir.join(f).exists(), "{f}");
    }
    let record = json(&std::fs::read_to_string(run_dir.join("run.json")).unwrap());
    assert_eq!(record["seed"], 1);
    assert!(
        record["metrics"]["fvu"].as_f64().unwrap() < 0.2,
        "{}",
        record["metrics"]
    );
    let test = d.join("test_activations.npy");
    let e = json(&ok(&[
        "eval",
        "--sae",
        p(&run_dir),
        "--data",
        p(&test),
        "--truth",
        p(&d),
        "--json",
    ]));
    for key in [
        "mse",
        "fvu",
        "l0",
        "dead_fraction",
        "code_mcc",
        "dict_mcc",
        "mmcs",
        "dict_recovered_090",
        "dict_recovered_099",
    ] {
        assert!(e[key].is_number(), "missing {key}: {e}");
    }
    assert!(e["dict_recovered_090"].as_f64().unwrap() >= 0.9, "{e}");
    assert!(e["code_mcc"].as_f64().unwrap() >= 0.85, "{e}");
    // ITO and FISTA/OMP with the true dictionary beat the amortised encoder on code recovery.
    let ito = t.path().join("ito.npy");
    ok(&[
        "encode",
        "--sae",
        p(&run_dir),
        "--method",
        "ito",
        "--lambda",
        "0.001",
        "--data",
        p(&test),
        "--out",
        p(&ito),
    ]);
    let rec = json(&std::fs::read_to_string(ito.with_extension("json")).unwrap());
    assert_eq!(rec["method"], "ito");
    assert_eq!(rec["codes"]["shape"][1], 24);
    let dict = d.join("dictionary.npy");
    for (method, extra) in [
        ("fista", vec!["--nonneg", "--lambda", "0.001"]),
        ("omp", vec!["--k", "2"]),
        ("ista", vec!["--lambda", "0.001", "--max-iter", "5000"]),
    ] {
        let out = t.path().join(format!("{method}.npy"));
        let mut args = vec![
            "encode",
            "--dictionary",
            p(&dict),
            "--method",
            method,
            "--data",
            p(&test),
            "--out",
            p(&out),
        ];
        args.extend(extra.iter().copied());
        ok(&args);
        let e = json(&ok(&[
            "eval",
            "--codes",
            p(&out),
            "--dictionary",
            p(&dict),
            "--data",
            p(&test),
            "--truth",
            p(&d),
            "--json",
        ]));
        assert!(e["code_mcc"].as_f64().unwrap() > 0.95, "{method}: {e}");
        assert!(e["fvu"].as_f64().unwrap() < 0.01, "{method}: {e}");
    }
    // The quality gate exits 1.
    let o = run(&[
        "eval",
        "--sae",
        p(&run_dir),
        "--data",
        p(&test),
        "--truth",
        p(&d),
        "--min-mcc",
        "1.01",
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn killed_run_resumes_to_identical_weights() {
    let t = tempfile::tempdir().unwrap();
    let d = synth(t.path(), "data", "12");
    let data = d.join("activations.npy");
    let common = [
        "--data",
        p(&data),
        "--arch",
        "relu",
        "--l1",
        "0.05",
        "--latents",
        "24",
        "--steps",
        "40000",
        "--batch",
        "64",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "200",
        "--seed",
        "5",
    ];
    let full = t.path().join("full");
    let mut args = vec!["train"];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--out", p(&full)]);
    ok(&args);

    let killed = t.path().join("killed");
    let mut args = vec!["train"];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--out", p(&killed)]);
    let mut child = bin()
        .args(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = PathBuf::from(format!(
        "{}.partial/checkpoint/state.json",
        killed.display()
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ckpt.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run must have been killed before finishing (make it longer)"
    );
    assert!(!killed.exists(), "a killed run never looks finished");
    // A new run with the same name is refused while the unfinished one is there.
    let mut again = vec!["train"];
    again.extend_from_slice(&common);
    again.extend_from_slice(&["--out", p(&killed)]);
    assert!(fails(&again).contains("--resume"));
    ok(&["train", "--resume", p(&killed)]);
    let a = std::fs::read(full.join("sae_weights.safetensors")).unwrap();
    let b = std::fs::read(killed.join("sae_weights.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    let steps = |dir: &Path| -> Vec<u64> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| json(l)["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(steps(&full), steps(&killed));
    assert!(fails(&["train", "--resume", p(&killed)]).contains("already finished"));
}

/// `--encoder-precision` changes only how the certified TopK encoder computes its candidates:
/// training with 16-bit integer, automatic and f32 approximations writes the same weights, byte
/// for byte (a selection that differed anywhere in 300 steps would change them).
#[test]
fn every_encoder_precision_trains_the_same_weights() {
    let t = tempfile::tempdir().unwrap();
    let d = synth(t.path(), "data", "64");
    let x = d.join("activations.npy");
    let weights: Vec<Vec<u8>> = ["int16", "auto", "f32"]
        .iter()
        .map(|precision| {
            let out = t.path().join(precision);
            ok(&[
                "train",
                "--data",
                p(&x),
                "--arch",
                "topk",
                "--k",
                "4",
                "--latents",
                "256",
                "--steps",
                "300",
                "--batch",
                "128",
                "--encoder-precision",
                precision,
                "--out",
                p(&out),
            ]);
            std::fs::read(out.join("sae_weights.safetensors")).unwrap()
        })
        .collect();
    assert!(
        weights[0] == weights[2],
        "int16 and f32 approximations differ"
    );
    assert!(
        weights[1] == weights[2],
        "auto and f32 approximations differ"
    );
}

fn write(path: &Path, bytes: &[u8]) -> String {
    std::fs::write(path, bytes).unwrap();
    p(path).to_string()
}

fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(header.len() as u16).to_le_bytes());
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_2() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let d = synth(dir, "data", "12");
    let good = d.join("activations.npy");
    let train = |data: &str, extra: &[&str]| {
        let out = dir.join("r");
        let mut a = vec![
            "train",
            "--data",
            data,
            "--arch",
            "topk",
            "--k",
            "2",
            "--latents",
            "8",
            "--steps",
            "5",
            "--out",
            p(&out),
        ];
        a.extend_from_slice(extra);
        fails(&a)
    };
    // Files.
    let e = train(p(&dir.join("missing.npy")), &[]);
    assert!(
        e.contains("missing.npy") && e.contains("no such file"),
        "{e}"
    );
    let e = train(&write(&dir.join("text.npy"), b"just text"), &[]);
    assert!(e.contains("text.npy") && e.contains("magic"), "{e}");
    let hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 3), }\n";
    let e = train(&write(&dir.join("trunc.npy"), &npy(hdr, &[0u8; 20])), &[]);
    assert!(e.contains("trunc.npy") && e.contains("truncated"), "{e}");
    let e = train(
        &write(
            &dir.join("hdr.npy"),
            &npy("{'descr': '<f4', 'fortran_", &[]),
        ),
        &[],
    );
    assert!(
        e.contains("hdr.npy") && e.contains("malformed header"),
        "{e}"
    );
    let e = train(
        &write(
            &dir.join("int.npy"),
            &npy(
                "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 1), }\n",
                &[0u8; 4],
            ),
        ),
        &[],
    );
    assert!(e.contains("unsupported dtype '<i4'"), "{e}");
    let e = train(
        &write(
            &dir.join("fortran.npy"),
            &npy(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1), }\n",
                &[0u8; 4],
            ),
        ),
        &[],
    );
    assert!(e.contains("Fortran"), "{e}");
    let e = train(
        &write(
            &dir.join("rank1.npy"),
            &npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n",
                &[0u8; 12],
            ),
        ),
        &[],
    );
    assert!(e.contains("2-D"), "{e}");
    let mut vals = Vec::new();
    for v in [1.0f32, 2.0, 3.0, 4.0, f32::INFINITY, 6.0] {
        vals.extend_from_slice(&v.to_le_bytes());
    }
    let e = train(
        &write(
            &dir.join("inf.npy"),
            &npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\n",
                &vals,
            ),
        ),
        &[],
    );
    assert!(
        e.contains("inf.npy") && e.contains("row 1") && e.contains("inf"),
        "{e}"
    );
    let e = train(
        &write(
            &dir.join("empty.npy"),
            &npy(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }\n",
                &[],
            ),
        ),
        &[],
    );
    assert!(e.contains("empty"), "{e}");
    // Hyper-parameters.
    assert!(train(p(&good), &["--lr", "0"]).contains("`lr`"));
    assert!(train(p(&good), &["--lr=-1"]).contains("`lr`"));
    let e = fails(&[
        "train",
        "--data",
        p(&good),
        "--arch",
        "topk",
        "--k",
        "9",
        "--latents",
        "8",
        "--steps",
        "5",
        "--out",
        p(&dir.join("r")),
    ]);
    assert!(e.contains("`k`") && e.contains("number of latents"), "{e}");
    let e = fails(&[
        "synth",
        "--latents",
        "4",
        "--dims",
        "3",
        "--active",
        "5",
        "--samples",
        "10",
        "--out",
        p(&dir.join("s")),
    ]);
    assert!(e.contains("`active`") && e.contains("K = 5"), "{e}");
    // Output that exists is refused, and left intact.
    let e = fails(&["synth", "--preset", "e2", "--out", p(&d)]);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert!(d.join("synth.json").exists());
    // Dimensions that do not match the SAE.
    let run_dir = dir.join("sae");
    ok(&[
        "train",
        "--data",
        p(&good),
        "--arch",
        "topk",
        "--k",
        "2",
        "--latents",
        "8",
        "--steps",
        "5",
        "--out",
        p(&run_dir),
    ]);
    let other = synth(dir, "other", "7");
    let e = fails(&[
        "eval",
        "--sae",
        p(&run_dir),
        "--data",
        p(&other.join("activations.npy")),
    ]);
    assert!(e.contains("12 columns") && e.contains("7 columns"), "{e}");
    let e = fails(&[
        "encode",
        "--dictionary",
        p(&d.join("dictionary.npy")),
        "--data",
        p(&other.join("activations.npy")),
        "--out",
        p(&dir.join("c.npy")),
    ]);
    assert!(e.contains("atom width 12"), "{e}");
    let e = fails(&[
        "encode",
        "--dictionary",
        p(&d.join("dictionary.npy")),
        "--method",
        "omp",
        "--k",
        "13",
        "--data",
        p(&good),
        "--out",
        p(&dir.join("c.npy")),
    ]);
    assert!(e.contains("`k`"), "{e}");
    // A corrupt SAE folder names the file.
    std::fs::write(run_dir.join("sae_weights.safetensors"), b"xx").unwrap();
    let e = fails(&["eval", "--sae", p(&run_dir), "--data", p(&good)]);
    assert!(
        e.contains("sae_weights.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    // Unknown flags are refused by the parser (clap exits 2 too).
    assert_eq!(
        run(&["train", "--learning-rate", "1"]).status.code(),
        Some(2)
    );
}

#[test]
fn e2_preset_matches_the_paper_setup() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("e2");
    ok(&["synth", "--preset", "e2", "--seed", "0", "--out", p(&d)]);
    let rec = json(&std::fs::read_to_string(d.join("synth.json")).unwrap());
    let c = &rec["config"];
    assert_eq!(
        (
            c["latents"].as_u64(),
            c["dims"].as_u64(),
            c["samples"].as_u64(),
            c["test_samples"].as_u64()
        ),
        (Some(16), Some(8), Some(1024), Some(1024))
    );
    assert_eq!(c["support"]["k"], 3);
    assert_eq!(c["magnitude"], "abs_normal");
}

#[test]
fn demo_quick_prints_the_comparison_table() {
    let out = ok(&["demo", "--quick"]);
    for method in [
        "TopK SAE",
        "ReLU-L1 SAE",
        "SAE + ITO",
        "FISTA (oracle)",
        "OMP (oracle)",
    ] {
        assert!(out.contains(method), "{method} missing from:\n{out}");
    }
    let o = run(&["demo", "--quick", "--json"]);
    let r = json(&String::from_utf8_lossy(&o.stdout));
    let rows = r["rows"].as_array().unwrap();
    let mcc = |name: &str| {
        rows.iter().find(|x| x["method"] == name).unwrap()["code_mcc"]
            .as_f64()
            .unwrap()
    };
    assert!(mcc("FISTA (oracle)") > 0.95);
    assert!(
        mcc("SAE + ITO (FISTA)") > mcc("TopK SAE"),
        "ITO should refine the SAE's codes"
    );
}

#[test]
fn e2_known_dictionary_sae_has_an_amortisation_gap_that_ito_closes() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("e2");
    ok(&["synth", "--preset", "e2", "--seed", "0", "--out", p(&d)]);
    let dict = d.join("dictionary.npy");
    let run_dir = t.path().join("sae");
    ok(&[
        "train",
        "--data",
        p(&d.join("activations.npy")),
        "--arch",
        "relu",
        "--l1",
        "0.005",
        "--latents",
        "16",
        "--dictionary",
        p(&dict),
        "--freeze-decoder",
        "--no-bias",
        "--encoder-init",
        "fan-in-uniform",
        "--batch",
        "1024",
        "--steps",
        "20000",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "0",
        "--seed",
        "0",
        "--out",
        p(&run_dir),
    ]);
    // The decoder stayed the true dictionary.
    let test = d.join("test_activations.npy");
    let e = json(&ok(&[
        "eval",
        "--sae",
        p(&run_dir),
        "--data",
        p(&test),
        "--truth",
        p(&d),
        "--json",
    ]));
    assert!((e["dict_mcc"].as_f64().unwrap() - 1.0).abs() < 1e-5, "{e}");
    let sae = e["code_mcc"].as_f64().unwrap();
    assert!(
        (0.4..0.8).contains(&sae),
        "the linear encoder lands near the published 0.61: {sae}"
    );
    let ito = t.path().join("ito.npy");
    ok(&[
        "encode",
        "--sae",
        p(&run_dir),
        "--method",
        "ito",
        "--lambda",
        "0.001",
        "--max-iter",
        "5000",
        "--tol",
        "1e-7",
        "--data",
        p(&test),
        "--out",
        p(&ito),
    ]);
    let e = json(&ok(&[
        "eval",
        "--codes",
        p(&ito),
        "--dictionary",
        p(&dict),
        "--data",
        p(&test),
        "--truth",
        p(&d),
        "--json",
    ]));
    let ito_mcc = e["code_mcc"].as_f64().unwrap();
    assert!(
        ito_mcc >= 0.95 && ito_mcc > sae + 0.2,
        "ITO {ito_mcc} vs SAE {sae}"
    );
    // `eval --ito-lambda` runs the same refinement itself (default 1,000 iterations) and scores
    // the refined codes as the SAE's decoder reconstructs them.
    let eval_sae = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--sae",
            p(&run_dir),
            "--data",
            p(&test),
            "--truth",
            p(&d),
        ];
        args.extend_from_slice(extra);
        args.push("--json");
        json(&ok(&args))
    };
    let (plain, refined) = (eval_sae(&[]), eval_sae(&["--ito-lambda", "0.001"]));
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    assert!(f(&refined, "code_mcc") > sae + 0.2, "{refined}");
    assert!(
        f(&refined, "fvu") < f(&plain, "fvu"),
        "{refined} vs {plain}"
    );
}

#[test]
fn store_create_inspect_verify_and_train_from_it() {
    let t = tempfile::tempdir().unwrap();
    let d = synth(t.path(), "data", "12");
    let store = t.path().join("store");
    ok(&[
        "store",
        "create",
        "--from",
        p(&d.join("activations.npy")),
        "--out",
        p(&store),
        "--dtype",
        "bf16",
        "--shard-rows",
        "300",
    ]);
    let m = json(&ok(&["store", "inspect", p(&store), "--json"]));
    assert_eq!(
        (m["rows"].as_u64(), m["d_in"].as_u64(), m["dtype"].as_str()),
        (Some(2000), Some(12), Some("bf16"))
    );
    assert_eq!(m["shards"].as_array().unwrap().len(), 7);
    assert!(ok(&["store", "verify", p(&store)]).contains("7 shards verified"));
    let run_dir = t.path().join("run");
    ok(&[
        "train",
        "--store",
        p(&store),
        "--arch",
        "topk",
        "--k",
        "2",
        "--latents",
        "24",
        "--steps",
        "400",
        "--batch",
        "128",
        "--shuffle-rows",
        "512",
        "--lr",
        "3e-3",
        "--out",
        p(&run_dir),
    ]);
    let cfg = json(&std::fs::read_to_string(run_dir.join("cfg.json")).unwrap());
    assert_eq!(cfg["metadata"]["dataset_path"], p(&store));
    let e = json(&ok(&[
        "eval",
        "--sae",
        p(&run_dir),
        "--data",
        p(&d.join("test_activations.npy")),
        "--truth",
        p(&d),
        "--json",
    ]));
    assert!(e["fvu"].as_f64().unwrap() < 0.5, "{e}");
    // A damaged shard fails verification; a truncated one cannot even be opened for training.
    let shard = store.join("shard-00003.npy");
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    assert!(fails(&["store", "verify", p(&store)]).contains("SHA-256"));
    std::fs::write(&shard, &bytes[..n - 10]).unwrap();
    let e = fails(&[
        "train",
        "--store",
        p(&store),
        "--arch",
        "topk",
        "--k",
        "2",
        "--latents",
        "24",
        "--steps",
        "5",
        "--out",
        p(&t.path().join("r2")),
    ]);
    assert!(
        e.contains("shard-00003.npy") && e.contains("partial"),
        "{e}"
    );
    // Inputs of different widths are refused.
    let other = synth(t.path(), "other", "7");
    let e = fails(&[
        "store",
        "create",
        "--from",
        p(&d.join("activations.npy")),
        p(&other.join("activations.npy")),
        "--out",
        p(&t.path().join("mixed")),
    ]);
    assert!(e.contains("width 7"), "{e}");
}

#[test]
fn learn_recovers_a_planted_dictionary_and_rejects_bad_parameters() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("e2");
    ok(&["synth", "--preset", "e2", "--seed", "3", "--out", p(&d)]);
    let out = t.path().join("dict");
    ok(&[
        "learn",
        "--data",
        p(&d.join("activations.npy")),
        "--atoms",
        "16",
        "--lambda",
        "0.05",
        "--transform-lambda",
        "0.01",
        "--nonneg",
        "--out",
        p(&out),
    ]);
    let rec = json(&std::fs::read_to_string(out.join("learn.json")).unwrap());
    assert_eq!(rec["params"]["restarts"], 3);
    let e = json(&ok(&[
        "eval",
        "--codes",
        p(&out.join("codes.npy")),
        "--dictionary",
        p(&out.join("dictionary.npy")),
        "--data",
        p(&d.join("activations.npy")),
        "--truth",
        p(&d),
        "--json",
    ]));
    assert!(e["dict_mcc"].as_f64().unwrap() > 0.98, "{e}");
    assert!(e["code_mcc"].as_f64().unwrap() > 0.95, "{e}");
    let e = fails(&[
        "learn",
        "--data",
        p(&d.join("activations.npy")),
        "--atoms",
        "5000",
        "--out",
        p(&t.path().join("x")),
    ]);
    assert!(e.contains("`atoms`"), "{e}");
    let e = fails(&[
        "learn",
        "--data",
        p(&d.join("activations.npy")),
        "--atoms",
        "4",
        "--lambda=-1",
        "--out",
        p(&t.path().join("y")),
    ]);
    assert!(e.contains("`lambda`"), "{e}");
}

#[test]
fn encode_and_eval_read_a_store_as_they_read_its_rows() {
    let t = tempfile::tempdir().unwrap();
    let d = synth(t.path(), "data", "12");
    let x = d.join("activations.npy");
    let run_dir = t.path().join("run");
    ok(&[
        "train",
        "--data",
        p(&x),
        "--arch",
        "topk",
        "--k",
        "2",
        "--latents",
        "24",
        "--steps",
        "50",
        "--seed",
        "1",
        "--out",
        p(&run_dir),
    ]);
    let store = t.path().join("store");
    ok(&[
        "store",
        "create",
        "--from",
        p(&x),
        "--shard-rows",
        "300",
        "--out",
        p(&store),
    ]);
    let (a, b) = (t.path().join("a.npy"), t.path().join("b.npy"));
    ok(&[
        "encode",
        "--sae",
        p(&run_dir),
        "--data",
        p(&x),
        "--out",
        p(&a),
    ]);
    ok(&[
        "encode",
        "--sae",
        p(&run_dir),
        "--store",
        p(&store),
        "--out",
        p(&b),
    ]);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    let eval =
        |flag: &str, src: &Path| json(&ok(&["eval", "--sae", p(&run_dir), flag, p(src), "--json"]));
    assert_eq!(eval("--data", &x), eval("--store", &store));
    // Against a planted truth a store needs its codes named.
    let r = run(&[
        "eval",
        "--sae",
        p(&run_dir),
        "--store",
        p(&store),
        "--truth",
        p(&d),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--truth-codes"));
    let with_codes = json(&ok(&[
        "eval",
        "--sae",
        p(&run_dir),
        "--store",
        p(&store),
        "--truth",
        p(&d),
        "--truth-codes",
        p(&d.join("codes.npy")),
        "--json",
    ]));
    assert!(with_codes["code_mcc"].is_number(), "{with_codes}");
}
