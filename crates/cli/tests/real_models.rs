//! The real-network path through the binary: a dashboard of a planted feature checked in
//! headless Chromium; and, with the fetched assets, SmolLM2 harvest -> TopK SAE -> dashboard
//! -> word intrusion on a slice of Moby-Dick, the additivity experiment, and the bad inputs
//! (corrupt model, wrong layer, empty corpus, non-UTF-8 text, store/manifest mismatch).

mod common;
use common::{asset, bin, chromium, fails, load_page, load_url, ok};
use serde_json::{json, Value};
use sparsecode::data::store::{Manifest, StoreDType, MANIFEST};
use sparsecode::data::tokens::{token_shard_name, write_token_shard, TokenRow};
use sparsecode::sae::{Activation, EncoderInit, Sae};
use sparsecode::Matrix;
use std::path::Path;

const WORDS: [&str; 8] = [
    " the", " white", " sea", " whale", " ship", " captain", " deep", " harpoon",
];

/// A store whose rows are one-hot token embeddings (row = 2 e_token) with full provenance,
/// and an identity TopK(1) SAE: feature j fires exactly on word j.
fn planted(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let store = dir.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let (contexts, len) = (24usize, 16usize);
    let mut acts = Vec::new();
    let mut rows = Vec::new();
    for c in 0..contexts {
        for p in 0..len {
            let tok = ((c * 7 + p * 3 + (c * p) % 5) % 8) as u32;
            let mut row = vec![0.0f32; 8];
            row[tok as usize] = 2.0 + (p % 4) as f32 * 0.5;
            acts.extend(row);
            rows.push(TokenRow {
                token: tok,
                doc: (c % 3) as u32,
                pos: (c / 3 * len + p) as u32,
            });
        }
    }
    let shard =
        sparsecode::data::store::write_shard(&store, "shard-00000.npy", &acts, 8, StoreDType::F32)
            .unwrap();
    let tokens = write_token_shard(&store, &token_shard_name(0), &rows).unwrap();
    std::fs::write(
        store.join("vocab.json"),
        serde_json::to_string(&WORDS).unwrap(),
    )
    .unwrap();
    let meta = json!({
        "model_name": "planted", "hook_name": "blocks.0.hook_resid_post", "context_size": len,
        "documents": ["moby-a.txt", "moby-b.txt", "moby-c.txt"], "token_shards": [tokens],
        "vocab_file": "vocab.json",
    });
    let m = Manifest::new(8, StoreDType::F32, vec![shard], meta);
    std::fs::write(store.join(MANIFEST), serde_json::to_string(&m).unwrap()).unwrap();
    let mut rng = rand::rng();
    let mut sae = Sae::init(8, 8, Activation::TopK { k: 1 }, EncoderInit::Tied, &mut rng);
    sae.w_enc = Matrix::from_fn(8, 8, |i, j| if i == j { 1.0 } else { 0.0 });
    sae.w_dec = sae.w_enc.clone();
    let sae_dir = dir.join("sae");
    std::fs::create_dir_all(&sae_dir).unwrap();
    sparsecode::sae::saelens::save(&sae_dir, &sae, json!({})).unwrap();
    (store, sae_dir)
}

#[test]
fn dashboard_shows_a_planted_feature_in_chromium() {
    let t = tempfile::tempdir().unwrap();
    let (store, sae) = planted(t.path());
    let out = t.path().join("dash");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&[
        "dashboard",
        "--sae",
        &s(&sae),
        "--store",
        &s(&store),
        "--out",
        &s(&out),
        "--unembed",
        "none",
    ]);
    let feats: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("features.json")).unwrap()).unwrap();
    // Feature 3 fires on " whale" only, as often as the word occurs.
    assert_eq!(feats[3]["top_tokens"], json!([" whale"]));
    let Some(browser) = chromium() else { return };
    let shot = t.path().join("feature.png");
    let dom = load_page(&browser, &out.join("f/00003.html"), Some(&shot));
    assert!(dom.contains("<h1>Feature 3</h1>"));
    // The top contexts highlight the planted word, with its value on hover.
    let focus: Vec<&str> = dom.split("tok focus").skip(1).collect();
    assert!(focus.len() >= 10, "{} highlighted contexts", focus.len());
    assert!(focus
        .iter()
        .all(|f| f.split("</span>").next().unwrap().ends_with(" whale")));
    assert!(
        dom.contains("title=\"3.500\""),
        "the largest planted value shows on hover"
    );
    assert!(dom.contains("moby-a.txt"));
    let index = load_page(
        &browser,
        &out.join("index.html"),
        Some(&t.path().join("index.png")),
    );
    assert!(index.contains("href=\"f/00003.html\""));
    assert!(index.contains("id=\"search\""));
    // The index sorts and filters on load from the URL (the same code the headers and the search
    // box run): by density, largest first; then only the features whose top token is " whale".
    let url = format!(
        "file://{}",
        out.join("index.html").canonicalize().unwrap().display()
    );
    let sorted = load_url(&browser, &format!("{url}#sort=density"), None);
    let density = |row: &str| -> f64 {
        row.split("data-density=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let rows: Vec<&str> = sorted.split("<tr data-id=").skip(1).collect();
    assert_eq!(rows.len(), 8);
    assert!(
        rows.windows(2).all(|w| density(w[0]) >= density(w[1])),
        "not sorted by density"
    );
    let filtered = load_url(&browser, &format!("{url}#q=whale"), None);
    let visible: Vec<&str> = filtered
        .split("<tr data-id=")
        .skip(1)
        .filter(|r| !r.split('>').next().unwrap().contains("display: none"))
        .collect();
    assert_eq!(visible.len(), 1, "only feature 3 matches 'whale'");
    assert!(visible[0].starts_with("\"3\""));
}

/// Reads a `.jsonl.gz` file of the Neuronpedia export.
fn gz_lines(path: &Path) -> Vec<Value> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The planted dashboard in Neuronpedia's upload layout: the four description files, one
/// feature line per feature that fired with every field the converters write (typed as they
/// type them), and context lines whose values peak on the planted word.
#[test]
fn dashboard_exports_the_neuronpedia_upload_layout() {
    let t = tempfile::tempdir().unwrap();
    let (store, sae) = planted(t.path());
    let out = t.path().join("dash");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&[
        "dashboard",
        "--sae",
        &s(&sae),
        "--store",
        &s(&store),
        "--out",
        &s(&out),
        "--unembed",
        "none",
        "--neuronpedia",
        "--np-creator",
        "tester",
    ]);
    let base = out.join("neuronpedia/planted/0-sparsecode-res-8");
    for f in [
        "release.jsonl",
        "model.jsonl",
        "sourceset.jsonl",
        "source.jsonl",
    ] {
        let line: Value =
            serde_json::from_str(&std::fs::read_to_string(base.join(f)).unwrap()).unwrap();
        assert!(
            line["createdAt"].as_str().unwrap().ends_with('Z'),
            "{f}: {line}"
        );
    }
    let features = gz_lines(&base.join("features/batch-0.jsonl.gz"));
    assert_eq!(features.len(), 8);
    let lists = [
        "vector",
        "topkCosSimIndices",
        "topkCosSimValues",
        "neuron_alignment_indices",
        "neuron_alignment_values",
        "neuron_alignment_l1",
        "correlated_neurons_indices",
        "correlated_neurons_pearson",
        "correlated_neurons_l1",
        "correlated_features_indices",
        "correlated_features_pearson",
        "correlated_features_l1",
        "neg_str",
        "neg_values",
        "pos_str",
        "pos_values",
        "freq_hist_data_bar_heights",
        "freq_hist_data_bar_values",
        "logits_hist_data_bar_heights",
        "logits_hist_data_bar_values",
        "decoder_weights_dist",
    ];
    for f in &features {
        for key in lists {
            assert!(f[key].is_array(), "{key} is not a list: {f}");
        }
        for key in ["modelId", "layer", "index", "creatorId", "hookName"] {
            assert!(f[key].is_string(), "{key} is not a string: {f}");
        }
        assert_eq!(
            (f["modelId"].as_str(), f["layer"].as_str()),
            (Some("planted"), Some("0-sparsecode-res-8"))
        );
        assert_eq!(f["vector"].as_array().unwrap().len(), 8);
        assert!(f["frac_nonzero"].as_f64().unwrap() > 0.0 && f["hasVector"] == true);
    }
    // Feature 3 fires on " whale" only: each of its contexts peaks there, at the planted values.
    let f3 = features.iter().find(|f| f["index"] == "3").unwrap();
    assert_eq!(f3["maxActApprox"].as_f64(), Some(3.5));
    let contexts = gz_lines(&base.join("activations/batch-0.jsonl.gz"));
    let mine: Vec<&Value> = contexts.iter().filter(|c| c["index"] == "3").collect();
    assert!(mine.len() >= 10, "{} contexts", mine.len());
    for c in &mine {
        let values = c["values"].as_array().unwrap();
        assert_eq!(values.len(), c["tokens"].as_array().unwrap().len());
        let at = c["maxValueTokenIndex"].as_u64().unwrap() as usize;
        assert_eq!(c["tokens"][at], " whale", "{c}");
        assert_eq!(values[at].as_f64(), c["maxValue"].as_f64());
        // The row the context was drawn for is a " whale" too (the window may hold another).
        let focus = c["qualifyingTokenIndex"].as_u64().unwrap() as usize;
        assert_eq!(c["tokens"][focus], " whale");
        assert!(values[focus].as_f64().unwrap() > 0.0);
    }
    let ids: std::collections::HashSet<&str> =
        contexts.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), contexts.len(), "context ids repeat");
}

#[test]
fn smollm2_slice_harvest_train_dashboard_interp() {
    let (Some(gguf), Some(moby)) = (
        asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        asset("text/moby-dick"),
    ) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let store = t.path().join("store");
    let out = ok(&[
        "harvest",
        "--model",
        &s(&gguf),
        "--corpus",
        &s(&moby),
        "--layer",
        "15",
        "--context",
        "64",
        "--max-tokens",
        "6144",
        "--shard-contexts",
        "32",
        "--out",
        &s(&store),
    ]);
    assert!(out.contains("harvested 6144 tokens"), "{out}");
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(store.join(MANIFEST)).unwrap()).unwrap();
    assert_eq!(m["d_in"], 576);
    assert_eq!(m["metadata"]["hook_name"], "blocks.15.hook_resid_post");
    assert_eq!(m["shards"].as_array().unwrap().len(), 3);
    ok(&["store", "verify", &s(&store)]);
    let run = t.path().join("sae");
    ok(&[
        "train",
        "--store",
        &s(&store),
        "--arch",
        "topk",
        "--k",
        "16",
        "--latents",
        "512",
        "--steps",
        "150",
        "--batch",
        "512",
        "--out",
        &s(&run),
    ]);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("cfg.json")).unwrap()).unwrap();
    assert_eq!(cfg["metadata"]["hook_name"], "blocks.15.hook_resid_post");
    assert_eq!(cfg["metadata"]["context_size"], 64);
    let interp = t.path().join("interp");
    let table = ok(&[
        "interp",
        "--sae",
        &s(&run),
        "--store",
        &s(&store),
        "--out",
        &s(&interp),
        "--features",
        "30",
    ]);
    assert!(
        table.contains("| sae |") && table.contains("| neurons |") && table.contains("| random |")
    );
    let scores: Value =
        serde_json::from_str(&std::fs::read_to_string(interp.join("scores.json")).unwrap())
            .unwrap();
    for fam in ["sae", "neurons", "random"] {
        let n = scores[fam]["n"].as_u64().unwrap();
        let acc = scores[fam]["accuracy"].as_f64().unwrap();
        let (lo, hi) = (
            scores[fam]["accuracy_ci"][0].as_f64().unwrap(),
            scores[fam]["accuracy_ci"][1].as_f64().unwrap(),
        );
        assert!(n >= 15 && lo <= acc && acc <= hi, "{fam}: {}", scores[fam]);
    }
    let dash = t.path().join("dash");
    ok(&[
        "dashboard",
        "--sae",
        &s(&run),
        "--store",
        &s(&store),
        "--out",
        &s(&dash),
        "--scores",
        &s(&interp.join("scores.json")),
    ]);
    let feats: Value =
        serde_json::from_str(&std::fs::read_to_string(dash.join("features.json")).unwrap())
            .unwrap();
    let first = feats
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["density"].as_f64().unwrap() > 0.0)
        .unwrap();
    let page = dash.join(format!("f/{:05}.html", first["id"].as_u64().unwrap()));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Promotes (logit effect)") && html.contains("Suppresses"));
    assert!(feats
        .as_array()
        .unwrap()
        .iter()
        .any(|f| !f["score"].is_null()));
    if let Some(browser) = chromium() {
        let dom = load_page(&browser, &page, None);
        assert!(dom.contains("tok focus"));
        load_page(&browser, &dash.join("index.html"), None);
    }
}

#[test]
fn additivity_of_minilm_embeddings_beats_the_null() {
    let Some(_) = asset("minilm/model.safetensors") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("add");
    ok(&["experiment", "additivity", "--out", out.to_str().unwrap()]);
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let d = r["results"]["cohens_d"].as_f64().unwrap();
    assert!(r["results"]["n"].as_u64().unwrap() >= 100);
    assert!(d > 2.0, "Cohen's d {d}");
    assert!(out.join("additivity.svg").exists());
}

#[test]
fn bad_real_network_inputs_get_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // A corrupt model file (no assets needed).
    let junk = t.path().join("broken.gguf");
    std::fs::write(&junk, b"GGUF but not really").unwrap();
    let corpus = t.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(corpus.join("a.txt"), "Call me Ishmael. ".repeat(50)).unwrap();
    let e = fails(&[
        "harvest",
        "--model",
        &s(&junk),
        "--corpus",
        &s(&corpus),
        "--layer",
        "1",
        "--out",
        &s(&t.path().join("o")),
    ]);
    assert!(e.contains("broken.gguf") && e.contains("GGUF"), "{e}");
    // A store whose token shard does not match its manifest.
    let (store, sae) = planted(t.path());
    let tok = store.join(token_shard_name(0));
    let bytes = std::fs::read(&tok).unwrap();
    std::fs::write(&tok, &bytes[..bytes.len() - 12]).unwrap();
    let e = fails(&[
        "dashboard",
        "--sae",
        &s(&sae),
        "--store",
        &s(&store),
        "--out",
        &s(&t.path().join("d")),
    ]);
    assert!(e.contains("tokens.npy") && e.contains("truncated"), "{e}");
    assert!(!t.path().join("d").exists(), "no partial output");
    // A truncated activation shard is never read as complete.
    let act = store.join("shard-00000.npy");
    let bytes = std::fs::read(&act).unwrap();
    std::fs::write(&act, &bytes[..bytes.len() - 4]).unwrap();
    let e = fails(&[
        "train",
        "--store",
        &s(&store),
        "--arch",
        "topk",
        "--k",
        "1",
        "--latents",
        "8",
        "--steps",
        "1",
        "--out",
        &s(&t.path().join("r")),
    ]);
    assert!(
        e.contains("shard-00000.npy") && e.contains("truncated"),
        "{e}"
    );

    let Some(_) = asset("minilm/model.safetensors") else {
        return;
    };
    let out = s(&t.path().join("h"));
    let e = fails(&[
        "harvest",
        "--model",
        "minilm",
        "--corpus",
        &s(&corpus),
        "--layer",
        "6",
        "--out",
        &out,
    ]);
    assert!(e.contains("layer 6") && e.contains("6 layers"), "{e}");
    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("blank.txt"), "\n\n").unwrap();
    let e = fails(&[
        "harvest",
        "--model",
        "minilm",
        "--corpus",
        &s(&empty),
        "--layer",
        "2",
        "--out",
        &out,
    ]);
    assert!(e.contains("empty corpus"), "{e}");
    let latin = t.path().join("latin1.txt");
    std::fs::write(&latin, b"Ahab's caf\xe9").unwrap();
    let e = fails(&[
        "harvest",
        "--model",
        "minilm",
        "--corpus",
        &s(&latin),
        "--layer",
        "2",
        "--invalid-utf8",
        "error",
        "--out",
        &out,
    ]);
    assert!(e.contains("latin1.txt") && e.contains("not UTF-8"), "{e}");
    assert!(!t.path().join("h").join(MANIFEST).exists());
}

/// A corpus with a file that is not UTF-8: by default the harvest goes on with U+FFFD in its
/// place, warns, and lists the file in harvest.json; `skip` leaves the file out. Excluded
/// positions are run but not stored.
#[test]
fn harvest_repairs_or_skips_text_that_is_not_utf8_and_drops_excluded_positions() {
    if asset("minilm/model.safetensors").is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let corpus = t.path().join("mail");
    std::fs::create_dir(&corpus).unwrap();
    let words = "the whale swam past the ship while the captain watched the deep sea ";
    std::fs::write(corpus.join("a.txt"), words.repeat(8)).unwrap();
    let mut latin = words.repeat(8).into_bytes();
    latin.extend_from_slice(b"caf\xe9 ");
    std::fs::write(corpus.join("b.txt"), latin).unwrap();
    let harvest = |out: &Path, extra: &[&str]| -> (Value, String) {
        let mut args = vec![
            "harvest",
            "--model",
            "minilm",
            "--corpus",
            corpus.to_str().unwrap(),
            "--layer",
            "1",
            "--context",
            "16",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = bin().args(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rec = std::fs::read_to_string(out.join("harvest.json")).unwrap();
        (
            serde_json::from_str(&rec).unwrap(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (rec, err) = harvest(&t.path().join("replaced"), &[]);
    assert_eq!(rec["metrics"]["invalid_utf8"]["replaced"], json!(["b.txt"]));
    assert!(
        err.contains("1 corpus file(s) not UTF-8") && err.contains("b.txt"),
        "{err}"
    );
    let full_rows = rec["metrics"]["rows"].as_u64().unwrap();

    let (rec, _) = harvest(&t.path().join("skipped"), &["--invalid-utf8", "skip"]);
    assert_eq!(rec["metrics"]["invalid_utf8"]["skipped"], json!(["b.txt"]));
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(t.path().join("skipped").join(MANIFEST)).unwrap(),
    )
    .unwrap();
    assert_eq!(m["metadata"]["documents"], json!(["a.txt"]));

    let out = t.path().join("excluded");
    let (rec, _) = harvest(&out, &["--exclude-positions", "2"]);
    assert_eq!(
        rec["metrics"]["rows"].as_u64().unwrap(),
        full_rows / 16 * 14
    );
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(MANIFEST)).unwrap()).unwrap();
    assert_eq!(m["metadata"]["exclude_positions"], 2);
    // Every stored row's position within its 16-token context is 2 or more.
    let rows = sparsecode::data::tokens::read_token_shard(
        &out.join(token_shard_name(0)),
        m["shards"][0]["rows"].as_u64().unwrap(),
    )
    .unwrap();
    assert!(
        rows.iter().all(|r| r.pos % 16 >= 2),
        "an excluded position was stored"
    );
    assert!(rows.iter().any(|r| r.pos % 16 == 2));
    let e = fails(&[
        "harvest",
        "--model",
        "minilm",
        "--corpus",
        &s(&corpus),
        "--layer",
        "1",
        "--context",
        "16",
        "--exclude-positions",
        "16",
        "--out",
        &s(&t.path().join("none")),
    ]);
    assert!(e.contains("exclude_positions"), "{e}");
}

#[test]
fn minilm_harvest_and_a_killed_smollm2_harvest_resumes_to_identical_shards() {
    let (Some(_), Some(gguf), Some(moby)) = (
        asset("minilm/model.safetensors"),
        asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        asset("text/moby-dick"),
    ) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // BERT: the hidden state after layer 2, with [CLS] in front of every context (not stored).
    let bert = t.path().join("bert");
    ok(&[
        "harvest",
        "--model",
        "minilm",
        "--corpus",
        &s(&moby),
        "--layer",
        "2",
        "--context",
        "32",
        "--max-tokens",
        "1024",
        "--out",
        &s(&bert),
    ]);
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(bert.join(MANIFEST)).unwrap()).unwrap();
    assert_eq!(
        (m["d_in"].as_u64(), m["rows"].as_u64()),
        (Some(384), Some(1024))
    );
    assert_eq!(m["metadata"]["bos_token"], 101);

    // SmolLM2, 16 shards of 512 tokens: once straight through, once killed after a few shards
    // and resumed; the shards must be byte-identical.
    let args = |out: &Path| {
        vec![
            "harvest".to_string(),
            "--model".into(),
            s(&gguf),
            "--corpus".into(),
            s(&moby),
            "--layer".into(),
            "3".into(),
            "--context".into(),
            "64".into(),
            "--batch".into(),
            "4".into(),
            "--shard-contexts".into(),
            "8".into(),
            "--max-tokens".into(),
            "8192".into(),
            "--out".into(),
            s(out),
        ]
    };
    let full = t.path().join("full");
    ok(&args(&full).iter().map(String::as_str).collect::<Vec<_>>());
    let killed = t.path().join("killed");
    let mut child = bin()
        .args(args(&killed))
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let progress = killed.join("harvest-progress.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let shards_done = || -> usize {
        std::fs::read_to_string(&progress)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|v| v["shards"].as_array().map(Vec::len).unwrap_or(0))
            .unwrap_or(0)
    };
    while shards_done() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the harvest must be killed before it ends (make it longer)"
    );
    assert!(
        !killed.join(MANIFEST).exists(),
        "a killed harvest never looks finished"
    );
    let out = ok(&args(&killed).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("resumed"), "{out}");
    let read = |d: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(d.join(MANIFEST)).unwrap()).unwrap()
    };
    let (x, y) = (read(&full), read(&killed));
    assert_eq!(
        x["shards"], y["shards"],
        "resumed shards differ from the uninterrupted harvest"
    );
    assert_eq!(x["metadata"]["token_shards"], y["metadata"]["token_shards"]);
    assert_eq!(x["rows"], 8192);
}

#[test]
fn gemma3_is_harvested_and_spliced_into_like_smollm2() {
    let (Some(_), Some(corpus)) = (
        asset("gemma3/gemma-3-270m-q4_k_m.gguf"),
        asset("text/moby-dick"),
    ) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("g3");
    let c = corpus.to_str().unwrap();
    ok(&[
        "harvest",
        "--model",
        "gemma3",
        "--corpus",
        c,
        "--layer",
        "9",
        "--context",
        "32",
        "--max-tokens",
        "256",
        "--out",
        out.to_str().unwrap(),
    ]);
    let m: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        (m["d_in"].as_u64(), m["rows"].as_u64()),
        (Some(640), Some(256))
    );
    assert_eq!(
        m["metadata"]["hook_name"], "blocks.9.hook_resid_post",
        "{m}"
    );
    let err = fails(&[
        "harvest",
        "--model",
        "gemma3",
        "--corpus",
        c,
        "--layer",
        "18",
        "--out",
        t.path().join("x").to_str().unwrap(),
    ]);
    assert!(err.contains("18 layers"), "{err}");
    // Spliced in like SmolLM2: an SAE of zeros is the zero ablation itself (CE loss score 0).
    let sae_dir = t.path().join("sae");
    std::fs::create_dir_all(&sae_dir).unwrap();
    let sae = Sae::zeros(640, 8, Activation::Relu, None);
    sparsecode::sae::saelens::save(&sae_dir, &sae, json!({"hook_layer": 9})).unwrap();
    let s = sae_dir.to_str().unwrap();
    let e: Value = serde_json::from_str(&ok(&[
        "eval",
        "--sae",
        s,
        "--model",
        "gemma3",
        "--corpus",
        c,
        "--tokens",
        "64",
        "--context",
        "32",
        "--json",
    ]))
    .unwrap();
    assert_eq!(e["splice"]["ce_loss_score"], 0.0, "{e}");
    assert!(
        e["splice"]["ce_clean"].as_f64().unwrap() < e["splice"]["ce_ablated"].as_f64().unwrap()
    );
}
