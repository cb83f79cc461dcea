//! Every `sparsecode experiment` in its quick setting, end to end through the binary, with
//! assertions on what the results say (not only that files appear), and the errors of bad
//! experiment parameters.

use serde_json::Value;
use std::path::Path;

mod common;
use common::{fails, run};

/// Runs `experiment NAME --quick --out DIR ...` and returns results.json.
fn experiment(dir: &Path, name: &str, extra: &[&str]) -> Value {
    let out = dir.join(name);
    let mut args = vec![
        "experiment",
        name,
        "--quick",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(
        o.status.success(),
        "{name} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| "), "{name} printed no table:\n{stdout}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.starts_with(&format!("# Experiment: {name}")));
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["experiment"], name);
    assert!(json["version"].is_string(), "run record lacks versions");
    for plot in json["plots"].as_array().unwrap() {
        let svg = std::fs::read_to_string(out.join(plot.as_str().unwrap())).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
    json
}

fn fails_with<S: AsRef<str>>(args: &[S], needle: &str) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let err = fails(&args);
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in:\n{err}"
    );
}

#[test]
fn phase_transition_crosses_at_the_donoho_tanner_curve() {
    let t = tempfile::tempdir().unwrap();
    let j = experiment(t.path(), "phase-transition", &[]);
    let crossings = j["results"]["crossings"].as_array().unwrap();
    let at = |codes: &str, method: &str, delta: f64| {
        crossings
            .iter()
            .find(|c| {
                c["codes"] == codes && c["method"] == method && c["delta"].as_f64() == Some(delta)
            })
            .and_then(|c| c["crossing"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let signed = at("signed", "basis_pursuit", 0.5);
    assert!(
        (signed - 0.386).abs() < 0.06,
        "signed BP crossing at delta 0.5: {signed}"
    );
    // Non-negative codes are recoverable further out than signed ones.
    assert!(at("non-negative", "basis_pursuit", 0.5) > signed + 0.05);
    // OMP gives up before basis pursuit at delta 0.75.
    assert!(at("signed", "omp", 0.75) < at("signed", "basis_pursuit", 0.75));
    assert_eq!(j["plots"].as_array().unwrap().len(), 6);
}

#[test]
fn amortisation_gap_is_closed_by_inference_time_optimisation() {
    let t = tempfile::tempdir().unwrap();
    let j = experiment(t.path(), "amortisation", &[]);
    let mean = |known: bool, method: &str| {
        let s = j["results"]["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["known"] == known)
            .unwrap();
        let m = s["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["method"] == method)
            .unwrap();
        let v: Vec<f64> = m["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["code_mcc"].as_f64().unwrap())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (sae, ito) = (mean(true, "sae"), mean(true, "sae_ito"));
    assert!(
        ito > sae + 0.2,
        "E2: ITO {ito} should beat the SAE {sae} clearly"
    );
    assert!(ito > 0.95, "E2: ITO {ito}");
    assert!(
        (0.45..0.75).contains(&sae),
        "E2 SAE {sae} far from the published 0.609"
    );
    assert!(
        mean(false, "sparse_coding") > 0.95,
        "E4: dictionary learning"
    );
}

#[test]
fn toy_model_puts_five_features_in_two_dimensions_when_sparse() {
    let t = tempfile::tempdir().unwrap();
    let j = experiment(t.path(), "toy-superposition", &[]);
    let runs = j["results"]["runs"].as_array().unwrap();
    let rep = |n: u64, s: f64| {
        runs.iter()
            .find(|r| {
                r["n"] == n && r["sparsity"].as_f64() == Some(s) && r.get("represented").is_some()
            })
            .unwrap()["represented"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rep(5, 0.0), 2, "dense features: one per dimension");
    assert_eq!(rep(5, 0.9), 5, "sparse features: all five in superposition");
    assert!(rep(20, 0.97) > 10);
    // The pentagon: every feature takes 2/5 of a dimension.
    let pent = runs
        .iter()
        .find(|r| r["n"] == 5 && r["sparsity"].as_f64() == Some(0.9))
        .unwrap();
    for d in pent["feature_dimensionality"].as_array().unwrap() {
        assert!((d.as_f64().unwrap() - 0.4).abs() < 0.05, "{d}");
    }
    // The SAE on the hidden layer finds the toy's feature directions.
    let sae = runs
        .iter()
        .find_map(|r| (r["n"] == 5).then(|| r.get("sae")).flatten())
        .unwrap();
    assert!(sae["dict_mcc"].as_f64().unwrap() > 0.95);
}

#[test]
fn sweep_finds_a_knee_and_stability_compares_seeds() {
    let t = tempfile::tempdir().unwrap();
    let j = experiment(t.path(), "sweep", &[]);
    let runs = j["results"]["runs"].as_array().unwrap();
    let fvu: Vec<f64> = runs.iter().map(|r| r["fvu"].as_f64().unwrap()).collect();
    assert!(fvu.first() > fvu.last(), "FVU falls as k grows: {fvu:?}");
    let knee = j["results"]["knee"].as_f64().expect("a knee");
    assert!(
        (2.0..=8.0).contains(&knee),
        "knee at k = {knee} (true K = 4)"
    );

    let j = experiment(t.path(), "stability", &[]);
    let d = &j["results"]["dict_mcc"];
    assert_eq!(d[0][0], 1.0);
    let pair = d[0][1].as_f64().unwrap();
    assert!(pair > 0.5 && pair < 1.0, "pairwise dictionary MCC {pair}");
    let shares = j["results"]["share_in_every_seed"].as_array().unwrap();
    assert_eq!(shares.len(), 3);
}

#[test]
fn matryoshka_absorbs_less_than_topk_and_batch_topk_on_a_planted_hierarchy() {
    let dir = tempfile::tempdir().unwrap();
    let j = experiment(dir.path(), "absorption", &[]);
    let runs = j["results"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "2 seeds x 3 architectures");
    let mean = |arch: &str, key: &str| {
        let v: Vec<f64> = runs
            .iter()
            .filter(|r| r["arch"] == arch)
            .map(|r| r[key].as_f64().unwrap())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (m, t, b) = (
        mean("matryoshka", "absorption"),
        mean("topk", "absorption"),
        mean("batchtopk", "absorption"),
    );
    // Measured at the quick setting: 0.17 against 0.62 and 0.62.
    assert!(
        t > 0.4 && b > 0.4,
        "k = 2 below the true L0 absorbs: {t} {b}"
    );
    assert!(
        m < 0.6 * t.min(b),
        "matryoshka {m} vs topk {t}, batchtopk {b}"
    );
    assert!(mean("matryoshka", "fvu") < 0.4);
    fails_with(
        &[
            "experiment",
            "absorption",
            "--quick",
            "--ks",
            "0",
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ],
        "ks",
    );
}

#[test]
fn scaling_and_cs_bound_run_quick() {
    let t = tempfile::tempdir().unwrap();
    let j = experiment(
        t.path(),
        "scaling",
        &["--grid", "16x16,32x16", "--ks", "3", "--samples", "1024"],
    );
    let grid = j["results"]["grid"].as_array().unwrap();
    assert_eq!(grid.len(), 2);
    // Dictionary learning beats the SAE on every cell (methods: sae, sae-ito, sc).
    for c in grid {
        let m = c["code_mcc"].as_array().unwrap();
        assert!(m[2].as_f64().unwrap() > m[0].as_f64().unwrap(), "{c}");
    }
    let j = experiment(t.path(), "cs-bound", &[]);
    let checks = j["results"]["checks"].as_array().unwrap();
    assert_eq!(checks[0]["threshold_met"], true);
    assert_eq!(checks[1]["threshold_met"], false);
}

#[test]
fn bad_experiment_parameters_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("x");
    let o = out.to_str().unwrap();
    fails_with(
        &[
            "experiment",
            "amortisation",
            "--quick",
            "--k",
            "8",
            "--out",
            o,
        ],
        "K >= M",
    );
    fails_with(
        &[
            "experiment",
            "phase-transition",
            "--quick",
            "--rhos",
            "",
            "--out",
            o,
        ],
        "rhos",
    );
    fails_with(
        &[
            "experiment",
            "amortisation",
            "--quick",
            "--methods",
            "sae,lasso",
            "--out",
            o,
        ],
        "unknown method 'lasso'",
    );
    fails_with(
        &[
            "experiment",
            "phase-transition",
            "--quick",
            "--methods",
            "cosamp",
            "--out",
            o,
        ],
        "unknown method 'cosamp'",
    );
    fails_with(
        &[
            "experiment",
            "scaling",
            "--quick",
            "--grid",
            "16by8",
            "--out",
            o,
        ],
        "expected NxM",
    );
    fails_with(
        &["experiment", "scaling", "--quick", "--ks", "40", "--out", o],
        "K >= M",
    );
    fails_with(
        &[
            "experiment",
            "sweep",
            "--quick",
            "--arch",
            "gated",
            "--out",
            o,
        ],
        "unknown architecture 'gated'",
    );
    fails_with(
        &[
            "experiment",
            "stability",
            "--quick",
            "--runs",
            "1",
            "--out",
            o,
        ],
        "at least 2 seeds",
    );
    fails_with(
        &[
            "experiment",
            "toy-superposition",
            "--quick",
            "--sparsities",
            "1.5",
            "--out",
            o,
        ],
        "[0, 1)",
    );
    fails_with(
        &[
            "experiment",
            "cs-bound",
            "--quick",
            "--data",
            "/nonexistent.npy",
            "--sae",
            "/x",
            "--out",
            o,
        ],
        "no such file",
    );
    assert!(!out.exists(), "a failed experiment left an output folder");
}

/// The theorem's setting and the sparse chain at their quick sizes, 2 threads (deterministic):
/// training makes the unit features linear in the vMF latents (measured: 0.98 vs 0.59 at gain
/// 2, 0.88 vs 0.46 at gain 4), the chain's SAE codes match the sparse latents better after
/// training than before (0.59 vs 0.45 at M = 8, 0.75 vs 0.71 at M = 32), and a shortcut breaks
/// it: the classifier reads the label off the shortcut and its representation stops following z.
#[test]
fn identifiability_training_recovers_latents_and_a_shortcut_breaks_it() {
    let t = tempfile::tempdir().unwrap();
    let j = experiment(t.path(), "identifiability", &["--threads", "2"]);
    let r = &j["results"];
    let f = |v: &Value| v.as_f64().unwrap();
    for row in r["theorem"].as_array().unwrap() {
        if row["head"] == "normalised" {
            assert!(
                f(&row["trained"]) > f(&row["untrained"]) + 0.3,
                "theorem: {row}"
            );
        }
    }
    let chain = r["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2);
    // Over the widths (the margin at M = 32 is small enough that another CPU's float path
    // could flip it alone; the mean's is 0.09).
    let mean =
        |key: &str| chain.iter().map(|c| f(&c[key]["code_mcc"])).sum::<f64>() / chain.len() as f64;
    assert!(
        mean("trained") > mean("untrained") + 0.03,
        "chain: {chain:?}"
    );
    for c in chain {
        // The perfectly linear control is what the compressed-sensing part alone allows.
        assert!(f(&c["controls"]["linear_projection"]["linear_r2"]) > 0.999);
    }
    // Every setting in one list, trained and untrained side by side.
    for s in r["settings"].as_array().unwrap() {
        assert!(s["trained"]["linear_r2"].is_number(), "{s}");
        assert!(s["untrained"]["linear_r2"].is_number(), "{s}");
    }
    let breaks = r["breaks"].as_array().unwrap();
    let (base, shortcut) = (&breaks[0], &breaks[3]);
    assert!(shortcut["setting"]
        .as_str()
        .unwrap()
        .starts_with("shortcut"));
    assert!(f(&shortcut["trained"]["accuracy"]) > 0.99);
    assert!(f(&shortcut["trained"]["linear_r2"]) < f(&base["trained"]["linear_r2"]) - 0.2);
    // Dictionary learning recovers the planted codes in distribution.
    assert!(f(&r["shift"][0]["dictionary_learning"]) > 0.95);
}

#[test]
fn identifiability_refuses_meaningless_parameters() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("x");
    let o = out.to_str().unwrap();
    for (flags, needle) in [
        (&["--widths", "8,0"][..], "M must be >= 1"),
        (&["--classes", "1"], "classes"),
        (&["--k", "32"], "need 1 <= K < N"),
        (&["--temperature", "0"], "temperature"),
        (&["--temperature", "-2"], "temperature"),
        (&["--widths", ""], "widths"),
    ] {
        let mut args = vec!["experiment", "identifiability", "--quick", "--out", o];
        args.extend_from_slice(flags);
        fails_with(&args, needle);
    }
    assert!(!out.exists(), "a failed experiment left an output folder");
}

/// Olshausen & Field (REFERENCE E10) on the fetched photographs: measured on the quick setting
/// (12 x 12 patches, 144 atoms) 72% of dictionary learning's atoms, 85% of the TopK SAE's and
/// 93% of the ReLU SAE's are Gabor-like (R^2 >= 0.8).
#[test]
fn natural_images_learn_gabor_like_atoms() {
    let Some(images) = common::asset("images") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let j = experiment(
        t.path(),
        "natural-images",
        &["--images", images.to_str().unwrap()],
    );
    let methods = j["results"]["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 3);
    for m in methods {
        let fits = m["fits"].as_array().unwrap();
        let good = fits
            .iter()
            .filter(|f| f["r2"].as_f64().unwrap() >= 0.8)
            .count() as f64
            / fits.len() as f64;
        assert!(
            good > 0.5,
            "most atoms should be Gabor-like: {} {good}",
            m["method"]
        );
        assert!(m["fvu"].as_f64().unwrap() < 0.5, "{}", m["method"]);
    }
    let out = t.path().join("natural-images");
    for f in [
        "atoms-dictionary-learning-144.png",
        "atoms-topk-sae-144.png",
        "orientation.svg",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
}

#[test]
fn natural_images_refuse_missing_undecodable_and_too_small_photographs() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let o = out.to_str().unwrap();
    let base = ["experiment", "natural-images", "--quick", "--out", o];
    let with = |images: &Path, extra: &[&'static str]| {
        let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        a.extend(["--images".to_string(), images.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    fails_with(&with(&t.path().join("nowhere"), &[]), "nowhere");
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    fails_with(&with(&empty, &[]), "no photographs (.jpg, .jpeg, .png) in");
    let bad = t.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(
        bad.join("photo.jpg"),
        b"\xff\xd8\xff\xe0 this is not a JPEG",
    )
    .unwrap();
    fails_with(&with(&bad, &[]), "photo.jpg: not a decodable image");
    if let Some(images) = common::asset("images") {
        fails_with(
            &with(&images, &["--patch", "600", "--overcomplete", "0.01"]),
            "600 x 600 patches do not fit in",
        );
    }
    // The default photographs, when they were never fetched, name the command that fetches them.
    let mut c = common::bin();
    c.env("SPARSECODE_ASSETS", t.path().join("no-assets"));
    c.args(base);
    let o2 = c.output().unwrap();
    assert_eq!(o2.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o2.stderr).contains("scripts/fetch-assets images"));
    assert!(!out.exists(), "a failed experiment left an output folder");
}

/// The chain on rendered scenes (quick: 16 x 16, 3 of 12 object kinds): measured accuracy 0.33
/// against chance 0.08, and the trained representation's factors are lifted out better than the
/// untrained one's (TopK SAE code MCC 0.169 vs 0.124, dictionary learning 0.181 vs 0.133), though
/// both are far from recovery.
#[test]
fn scenes_trained_representation_recovers_factors_better_than_untrained() {
    let t = tempfile::tempdir().unwrap();
    let j = experiment(t.path(), "scenes", &[]);
    let r = &j["results"];
    let f = |v: &Value| v.as_f64().unwrap();
    assert!(f(&r["trained"]["accuracy"]) > 2.0 / 12.0, "{r}");
    assert!(
        f(&r["trained"]["code_mcc"]) > f(&r["untrained"]["code_mcc"]),
        "{r}"
    );
    assert!(
        f(&r["trained"]["linear_r2"]) > f(&r["untrained"]["linear_r2"]),
        "{r}"
    );
}

/// The activations the scenes experiment scored stay in its output folder as stores (both
/// networks, both splits, float32 rows of the representation's width) with the true factors
/// beside them, and `sparsecode train --store` streams one.
#[test]
fn scenes_keeps_its_activations_as_stores_that_train_reads() {
    let t = tempfile::tempdir().unwrap();
    experiment(t.path(), "scenes", &["--steps", "100"]);
    let acts = t.path().join("scenes/activations");
    for net in ["trained", "untrained"] {
        for (split, rows) in [("train", 8000), ("test", 2000)] {
            let m: Value = serde_json::from_slice(
                &std::fs::read(acts.join(net).join(split).join("manifest.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(
                (m["rows"].as_u64(), m["d_in"].as_u64()),
                (Some(rows), Some(64))
            );
            assert_eq!(
                (
                    m["metadata"]["network"].as_str(),
                    m["metadata"]["split"].as_str()
                ),
                (Some(net), Some(split))
            );
        }
    }
    let factors = sparsecode::io::read_matrix(&acts.join("factors-test.npy")).unwrap();
    assert_eq!((factors.rows(), factors.cols()), (2000, 60));
    let run_dir = t.path().join("sae");
    let store = acts.join("trained/train");
    let o = run(&[
        "train",
        "--store",
        store.to_str().unwrap(),
        "--arch",
        "topk",
        "--k",
        "15",
        "--latents",
        "60",
        "--steps",
        "50",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run_dir.join("cfg.json").exists());
}

/// Fashion-MNIST, quick: measured held-out accuracy 0.887 (the issue asks 85% quick); the SAE
/// explains 0.98 of the activations' variance; sparse probing at k = 1 gives SAE latents 0.875,
/// neurons 0.867 and random directions 0.898 (balanced accuracy): on a network trained on these
/// classes every direction is class-informative, which is why purity is not reported alone.
#[test]
fn fashion_mnist_classifier_reaches_85_percent_and_its_features_are_probed() {
    let Some(data) = common::asset("fashion-mnist") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let j = experiment(
        t.path(),
        "fashion-mnist",
        &["--data", data.to_str().unwrap()],
    );
    let r = &j["results"];
    let f = |v: &Value| v.as_f64().unwrap();
    assert!(f(&r["accuracy"]) >= 0.85, "{r}");
    assert!(f(&r["sae_explained_variance"]) > 0.9, "{r}");
    let sets = r["features"].as_array().unwrap();
    assert_eq!(sets.len(), 3);
    for s in sets {
        let probes = s["probing"].as_array().unwrap();
        assert_eq!(probes.len(), 3);
        // Balanced accuracy: chance is 0.5; more features never hurt much.
        assert!(probes.iter().all(|p| f(p) > 0.6 && f(p) <= 1.0), "{s}");
        assert!(f(&probes[2]) >= f(&probes[0]) - 0.02, "{s}");
        assert!(s["intrusion_tasks"].as_u64().unwrap() >= 50, "{s}");
    }
    // Image intrusion in pixel space (chance 1/6): measured SAE latents 0.891, neurons 0.786,
    // random directions 0.778.
    assert!(f(&sets[0]["intrusion_pixels"]) > 0.5, "{}", sets[0]);
    // The activations the SAE streamed are kept as stores.
    let store = t.path().join("fashion-mnist/activations/trained");
    for (split, rows) in [("train", 60_000), ("test", 10_000)] {
        let m: Value = serde_json::from_slice(
            &std::fs::read(store.join(split).join("manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (m["rows"].as_u64(), m["d_in"].as_u64()),
            (Some(rows), Some(128))
        );
    }
    // The dashboard of image features: 32 sections, every tile strip decoded in Chromium.
    let page = t.path().join("fashion-mnist/features.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("class=\"feature\"").count(), 32);
    if let Some(browser) = common::chromium() {
        let dom = common::load_page(&browser, &page, None);
        assert!(dom.contains("id=\"loaded\">32<"), "not every strip decoded");
    }
}

#[test]
fn fashion_mnist_refuses_a_missing_or_corrupt_data_folder() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let data = t.path().join("fm");
    std::fs::create_dir(&data).unwrap();
    let args = |d: &Path| {
        vec![
            "experiment".to_string(),
            "fashion-mnist".into(),
            "--quick".into(),
            "--out".into(),
            out.display().to_string(),
            "--data".into(),
            d.display().to_string(),
        ]
    };
    fails_with(&args(&data), "train-images-idx3-ubyte.gz");
    std::fs::write(
        data.join("train-images-idx3-ubyte.gz"),
        b"\x1f\x8b\x08 broken",
    )
    .unwrap();
    fails_with(&args(&data), "not a readable gzip stream");
    assert!(!out.exists());
}
