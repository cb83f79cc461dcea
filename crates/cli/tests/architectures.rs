//! The SAE architectures beyond ReLU and TopK through the binary: each trains on planted data,
//! is saved in the SAELens format under the architecture name SAELens uses (BatchTopK as
//! JumpReLU), is read back by `eval`, and refuses impossible hyper-parameters.

use serde_json::Value;
use std::path::Path;

mod common;
use common::{fails, ok, run};

fn planted(dir: &Path) -> String {
    let out = dir.join("data");
    ok(&[
        "synth",
        "--latents",
        "48",
        "--dims",
        "16",
        "--active",
        "3",
        "--samples",
        "6000",
        "--test-samples",
        "1000",
        "--seed",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    out.to_str().unwrap().to_string()
}

#[test]
fn every_architecture_trains_saves_and_evaluates() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    let x = format!("{data}/activations.npy");
    let test = format!("{data}/test_activations.npy");
    let cases: [(&str, &[&str], &str); 6] = [
        ("batchtopk", &["--k", "3"], "jumprelu"),
        (
            "matryoshka",
            &["--k", "3", "--prefixes", "6,12,24"],
            "jumprelu",
        ),
        (
            "jumprelu",
            &[
                "--l0",
                "0.3",
                "--bandwidth",
                "0.1",
                "--init-threshold",
                "0.2",
            ],
            "jumprelu",
        ),
        ("gated", &["--l1", "1.0"], "gated"),
        ("mlp", &["--l1", "0.3", "--hidden", "32"], "mlp"),
        ("switch", &["--k", "3", "--experts", "2"], "switch"),
    ];
    for (arch, flags, saved_as) in cases {
        let run_dir = t.path().join(arch);
        let mut args = vec![
            "train",
            "--data",
            &x,
            "--arch",
            arch,
            "--latents",
            "48",
            "--steps",
            "1500",
            "--batch",
            "256",
            "--lr",
            "2e-3",
            "--lr-decay",
            "300",
            "--dead-window",
            "20000",
            "--out",
            run_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        ok(&args);
        let cfg: Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("cfg.json")).unwrap()).unwrap();
        assert_eq!(cfg["architecture"], saved_as, "{arch}");
        let m: Value = serde_json::from_str(&ok(&[
            "eval",
            "--sae",
            run_dir.to_str().unwrap(),
            "--data",
            &test,
            "--truth",
            &data,
            "--json",
        ]))
        .unwrap();
        let (l0, fvu, dict) = (
            m["l0"].as_f64().unwrap(),
            m["fvu"].as_f64().unwrap(),
            m["dict_mcc"].as_f64().unwrap(),
        );
        assert!(l0 > 0.5 && l0 < 16.0, "{arch}: held-out L0 {l0}");
        assert!(fvu < 0.6, "{arch}: held-out FVU {fvu}");
        assert!(dict > 0.6, "{arch}: dictionary MCC {dict}");
        if arch == "gated" {
            // SAE-initialised dictionary learning from this SAE's decoder.
            let dl = t.path().join("from-sae");
            ok(&[
                "learn",
                "--data",
                &x,
                "--atoms",
                "48",
                "--nonneg",
                "--max-iter",
                "100",
                "--init-sae",
                run_dir.to_str().unwrap(),
                "--out",
                dl.to_str().unwrap(),
            ]);
            let m: Value = serde_json::from_str(&ok(&[
                "eval",
                "--codes",
                dl.join("codes.npy").to_str().unwrap(),
                "--dictionary",
                dl.join("dictionary.npy").to_str().unwrap(),
                "--data",
                &x,
                "--truth",
                &data,
                "--json",
            ]))
            .unwrap();
            let after = m["dict_mcc"].as_f64().unwrap();
            assert!(
                after > dict,
                "SAE-initialised learning: dict MCC {after} <= the SAE's {dict}"
            );
        }
        if arch == "batchtopk" || arch == "matryoshka" {
            // The saved global threshold gives about k active latents per sample at inference.
            assert!((l0 - 3.0).abs() < 1.0, "{arch} held-out L0 {l0}");
        }
        if arch == "matryoshka" {
            // The prefix sizes, with the latents appended, are in the saved metadata.
            let widths = &cfg["metadata"]["matryoshka_widths"];
            assert_eq!(widths, &serde_json::json!([6, 12, 24, 48]), "{cfg}");
        }
    }
}

#[test]
fn impossible_architecture_parameters_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    let x = format!("{data}/activations.npy");
    let out = t.path().join("r");
    let o = out.to_str().unwrap();
    for (flags, needle) in [
        (&["--arch", "topk"][..], "`topk` needs k"),
        (&["--arch", "mlp", "--l1", "0.1", "--hidden", "0"], "hidden"),
        (
            &["--arch", "jumprelu", "--l0", "0.1", "--bandwidth", "0"],
            "bandwidth",
        ),
        (&["--arch", "jumprelu", "--l0=-1"], "l0"),
        (
            &["--arch", "topk", "--k", "4", "--format", "sparse"],
            "sparse",
        ),
        (
            &["--arch", "relu", "--format", "sparsify"],
            "TopK SAEs only",
        ),
        (&["--arch", "batchtopk", "--k", "49"], "k"),
        (&["--arch", "gated", "--l1=-1"], "l1"),
        (
            &["--arch", "matryoshka", "--k", "3", "--prefixes", "8,4"],
            "prefixes",
        ),
        (
            &["--arch", "matryoshka", "--k", "3", "--prefixes", "0,8"],
            "prefixes",
        ),
        (
            &["--arch", "matryoshka", "--k", "3", "--prefixes", "8,60"],
            "prefixes",
        ),
        (
            &["--arch", "matryoshka", "--k", "3", "--prefixes", "8,x"],
            "prefixes",
        ),
        (
            &["--arch", "topk", "--k", "3", "--prefixes", "8,16"],
            "matryoshka",
        ),
        (&["--arch", "switch", "--k", "3"], "needs experts"),
        (
            &["--arch", "switch", "--k", "3", "--experts", "5"],
            "5 experts must divide the 48 latents",
        ),
        (
            &["--arch", "switch", "--k", "13", "--experts", "4"],
            "the latents of one expert",
        ),
        (
            &["--arch", "topk", "--k", "3", "--experts", "4"],
            "experts belongs to switch",
        ),
        (
            &[
                "--arch",
                "switch",
                "--k",
                "3",
                "--experts",
                "4",
                "--lb-coef=-1",
            ],
            "lb_coef",
        ),
    ] {
        let mut args = vec![
            "train",
            "--data",
            &x,
            "--latents",
            "48",
            "--steps",
            "10",
            "--out",
            o,
        ];
        args.extend_from_slice(flags);
        let r = run(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{flags:?}: {err}");
        assert!(
            err.contains(needle),
            "{flags:?}: expected '{needle}' in {err}"
        );
    }
    assert!(!out.exists());
}

#[test]
fn bench_train_at_a_firing_rate_reports_that_l0() {
    for arch in ["relu", "jumprelu", "gated"] {
        let out = ok(&[
            "bench",
            "train",
            "--arch",
            arch,
            "--dims",
            "16",
            "--latents",
            "64",
            "--batch",
            "256",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--firing-rate",
            "0.05",
            "--json",
        ]);
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        let l0 = v["l0"].as_f64().unwrap();
        // 5% of 64 latents, moved a little by three small steps.
        assert!((2.5..4.0).contains(&l0), "{arch}: L0 {l0}");
    }
}

#[test]
fn bench_train_refuses_a_firing_rate_for_top_k_kinds() {
    for arch in ["topk", "batchtopk", "matryoshka"] {
        let err = fails(&[
            "bench",
            "train",
            "--arch",
            arch,
            "--dims",
            "16",
            "--latents",
            "64",
            "--batch",
            "64",
            "--firing-rate",
            "0.05",
        ]);
        assert!(
            err.contains("--firing-rate") && err.contains("--k"),
            "{arch}: {err}"
        );
    }
    let err = fails(&[
        "bench",
        "train",
        "--arch",
        "relu",
        "--dims",
        "16",
        "--latents",
        "64",
        "--batch",
        "64",
        "--firing-rate",
        "1.5",
    ]);
    assert!(err.contains("rate"), "{err}");
}
