//! Hostile input through the binary (issue 12): crafted sizes, configs with fields of the wrong
//! type. Each test is one behaviour; every refusal is exit status 2 with the file and field named.

mod common;
use common::{fails, ok};
use serde_json::{json, Value};
use sparsecode::sae::{Activation, EncoderInit, Sae};
use std::path::Path;

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A `.npy` header for `shape` followed by `data_bytes` zero bytes.
fn npy(shape: &str, descr: &str, data_bytes: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let pad = 64 - (10 + dict.len() + 1) % 64;
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend(((dict.len() + pad + 1) as u16).to_le_bytes());
    h.extend(dict.as_bytes());
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    h.extend(std::iter::repeat_n(0u8, data_bytes));
    h
}

/// A small TopK SAE saved in SAELens format, and data it can encode.
fn saelens_folder(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let sae = Sae::init(4, 8, Activation::TopK { k: 2 }, EncoderInit::Tied, &mut rng);
    let folder = dir.join("sae");
    std::fs::create_dir_all(&folder).unwrap();
    sparsecode::sae::saelens::save(&folder, &sae, json!({})).unwrap();
    let data = dir.join("x.npy");
    let x = sparsecode::Matrix::from_fn(3, 4, |i, j| (i + j) as f32);
    sparsecode::io::write_matrix(&data, &x).unwrap();
    (folder, data)
}

/// Encodes with the folder after `edit` changed its cfg.json.
fn encode_after(edit: impl Fn(&mut Value)) -> std::process::Output {
    let t = tempfile::tempdir().unwrap();
    let (folder, data) = saelens_folder(t.path());
    let cfg_path = folder.join("cfg.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let out = t.path().join("codes.npy");
    common::run(&[
        "encode",
        "--sae",
        &s(&folder),
        "--data",
        &s(&data),
        "--out",
        &s(&out),
    ])
}

/// The error of [`encode_after`], which must fail with exit status 2.
fn encode_with_cfg(edit: impl Fn(&mut Value)) -> String {
    let o = encode_after(edit);
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{e}");
    e
}

#[test]
fn a_saelens_folder_that_is_well_formed_encodes() {
    // The control for the refusals below: the same folder, unedited.
    let o = encode_after(|_| {});
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_topk_k_given_as_a_string_is_refused_by_name() {
    let e = encode_with_cfg(|c| c["k"] = json!("7"));
    assert!(
        e.contains("cfg.json") && e.contains("field 'k' must be a positive integer, found \"7\""),
        "{e}"
    );
}

#[test]
fn a_negative_k_is_refused_not_replaced_by_another_key() {
    let e = encode_with_cfg(|c| {
        c["k"] = json!(-1);
        c["activation_fn_kwargs"] = json!({"k": 2});
    });
    assert!(e.contains("field 'k'") && e.contains("found -1"), "{e}");
}

#[test]
fn apply_b_dec_to_input_as_a_string_is_refused() {
    let e = encode_with_cfg(|c| c["apply_b_dec_to_input"] = json!("false"));
    assert!(
        e.contains("'apply_b_dec_to_input' must be true or false"),
        "{e}"
    );
}

#[test]
fn normalize_activations_of_the_wrong_type_is_refused() {
    for bad in [json!(5), json!(true), Value::Null] {
        let e = encode_with_cfg(|c| c["normalize_activations"] = bad.clone());
        assert!(
            e.contains("'normalize_activations' must be a string"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_shape_whose_byte_count_wraps_is_refused_not_a_panic() {
    let t = tempfile::tempdir().unwrap();
    // (2^57 + 100) x 32 f32 values: the byte count wraps to exactly the 12,800 bytes present.
    let path = t.path().join("wrap.npy");
    std::fs::write(&path, npy("(144115188075855972, 32)", "<f4", 12_800)).unwrap();
    let e = fails(&[
        "store",
        "create",
        "--from",
        &s(&path),
        "--out",
        &s(&t.path().join("st")),
    ]);
    assert!(e.contains("wrap.npy") && e.contains("overflow"), "{e}");
    let e = fails(&[
        "train",
        "--data",
        &s(&path),
        "--arch",
        "topk",
        "--k",
        "2",
        "--latents",
        "8",
        "--out",
        &s(&t.path().join("run")),
    ]);
    assert!(e.contains("wrap.npy") && e.contains("overflow"), "{e}");
}

/// A two-shard store made by `store create`; returns its folder.
fn two_shard_store(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("x.npy");
    let x = sparsecode::Matrix::from_fn(64, 4, |i, j| (i * 4 + j) as f32 * 0.01);
    sparsecode::io::write_matrix(&data, &x).unwrap();
    let store = dir.join("store");
    ok(&[
        "store",
        "create",
        "--from",
        &s(&data),
        "--out",
        &s(&store),
        "--shard-rows",
        "32",
    ]);
    store
}

/// Edits the store's manifest, then checks that `store verify` and `train --store` refuse it
/// naming the manifest and `expect`.
fn refused_manifest(edit: impl Fn(&mut Value), expect: &str) {
    let t = tempfile::tempdir().unwrap();
    let store = two_shard_store(t.path());
    let mpath = store.join("manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&mpath).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&mpath, serde_json::to_string(&m).unwrap()).unwrap();
    let e = fails(&["store", "verify", &s(&store)]);
    assert!(e.contains("manifest.json") && e.contains(expect), "{e}");
    let e = fails(&[
        "train",
        "--store",
        &s(&store),
        "--arch",
        "topk",
        "--k",
        "2",
        "--latents",
        "8",
        "--steps",
        "5",
        "--out",
        &s(&t.path().join("run")),
    ]);
    assert!(e.contains("manifest.json") && e.contains(expect), "{e}");
}

#[test]
fn a_manifest_cannot_point_outside_its_store() {
    let outside = std::env::temp_dir().join("elsewhere.npy");
    refused_manifest(
        |m| m["shards"][0]["file"] = json!(outside.to_str().unwrap()),
        "expected the plain name of a file inside the store",
    );
    refused_manifest(
        |m| m["shards"][1]["file"] = json!("../store/shard-00000.npy"),
        "expected the plain name of a file inside the store",
    );
}

#[test]
fn a_manifest_cannot_list_a_shard_twice() {
    refused_manifest(
        |m| m["shards"][1] = m["shards"][0].clone(),
        "lists 'shard-00000.npy' twice",
    );
}

/// Planted data big enough that a long training run is still running when the test acts.
fn planted(dir: &Path) -> std::path::PathBuf {
    planted_with(dir, 4096)
}

/// `synth` of 64 latents in 16 dimensions, 3 active, `samples` training samples, into
/// `dir/planted`; returns its `activations.npy`.
fn planted_with(dir: &Path, samples: usize) -> std::path::PathBuf {
    let out = dir.join("planted");
    let n = samples.to_string();
    ok(&[
        "synth",
        "--latents",
        "64",
        "--dims",
        "16",
        "--active",
        "3",
        "--samples",
        &n,
        "--seed",
        "0",
        "--out",
        &s(&out),
    ]);
    out.join("activations.npy")
}

/// Starts `train` in the background and waits until it holds the lock of `run`.
fn training_in_background(data: &Path, run: &Path, extra: &[&str]) -> std::process::Child {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--arch",
        "topk",
        "--k",
        "3",
        "--latents",
        "64",
        "--batch",
        "64",
        "--checkpoint-every",
        "50",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend(extra);
    let child = common::bin()
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = run.with_file_name(".run.lock");
    let start = std::time::Instant::now();
    while !(lock.exists()
        && run
            .with_file_name("run.partial")
            .join("train_config.json")
            .exists())
    {
        assert!(start.elapsed().as_secs() < 60, "training never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

#[test]
fn a_second_train_on_a_running_run_is_refused_naming_the_first() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    let run = t.path().join("run");
    let mut first = training_in_background(&data, &run, &["--steps", "1000000"]);
    let pid = first.id();
    let e = fails(&[
        "train",
        "--data",
        &s(&data),
        "--arch",
        "topk",
        "--k",
        "3",
        "--latents",
        "64",
        "--steps",
        "10",
        "--force",
        "--out",
        &s(&run),
    ]);
    assert!(
        e.contains("in use by process") && e.contains(&pid.to_string()),
        "{e}"
    );
    let e = fails(&["train", "--resume", &s(&run)]);
    assert!(e.contains("in use by process"), "{e}");
    // Killed, the run's lock goes with it and the run resumes.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut resumed = common::bin()
        .args(["train", "--resume", &s(&run)])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        resumed.try_wait().unwrap().is_none(),
        "the resumed run is training"
    );
    resumed.kill().unwrap();
    resumed.wait().unwrap();
}

#[test]
fn a_killed_run_s_temporary_files_are_removed_by_the_next_writer() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let data = dir.join("x.npy");
    sparsecode::io::write_matrix(
        &data,
        &sparsecode::Matrix::from_fn(8, 4, |i, j| (i + j) as f32),
    )
    .unwrap();
    // What a killed `store create` and a killed `encode` leave (their process ids are long gone).
    std::fs::create_dir(dir.join(".store.partial-4000001")).unwrap();
    std::fs::write(
        dir.join(".store.partial-4000001/shard-00000.npy"),
        vec![0u8; 4096],
    )
    .unwrap();
    std::fs::write(dir.join(".codes.npy.tmp-4000002"), vec![0u8; 4096]).unwrap();
    std::fs::write(dir.join(".codes.json.tmp-4000002"), b"{").unwrap();
    ok(&[
        "store",
        "create",
        "--from",
        &s(&data),
        "--out",
        &s(&dir.join("store")),
    ]);
    assert!(!dir.join(".store.partial-4000001").exists());
    let (folder, _) = saelens_folder(&dir.join("m"));
    ok(&[
        "encode",
        "--sae",
        &s(&folder),
        "--data",
        &s(&dir.join("m/x.npy")),
        "--out",
        &s(&dir.join("codes.npy")),
    ]);
    assert!(!dir.join(".codes.npy.tmp-4000002").exists());
    assert!(!dir.join(".codes.json.tmp-4000002").exists());
    let hidden: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "left behind: {hidden:?}");
}

#[test]
fn a_folder_given_as_data_is_named_as_a_folder() {
    let t = tempfile::tempdir().unwrap();
    let e = fails(&[
        "train",
        "--data",
        &s(t.path()),
        "--arch",
        "topk",
        "--k",
        "2",
        "--latents",
        "8",
        "--out",
        &s(&t.path().join("run")),
    ]);
    assert!(e.contains("is a folder, expected a .npy file"), "{e}");
    assert!(!e.contains("os error 19"), "{e}");
}

#[test]
fn values_whose_squares_overflow_are_named_as_such_not_as_a_learning_rate() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("huge.npy");
    let x = sparsecode::Matrix::from_fn(256, 8, |i, j| ((i * 8 + j) % 7) as f32 * 1e20);
    sparsecode::io::write_matrix(&data, &x).unwrap();
    let e = fails(&[
        "train",
        "--data",
        &s(&data),
        "--arch",
        "topk",
        "--k",
        "2",
        "--latents",
        "16",
        "--steps",
        "20",
        "--normalize",
        "none",
        "--out",
        &s(&t.path().join("run")),
    ]);
    assert!(e.contains("overflow") && e.contains("normalise"), "{e}");
    assert!(!e.contains("lower the learning rate"), "{e}");
}

#[test]
fn resuming_a_finished_run_says_so_and_names_the_run() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    let run = t.path().join("run");
    ok(&[
        "train",
        "--data",
        &s(&data),
        "--arch",
        "topk",
        "--k",
        "3",
        "--latents",
        "32",
        "--steps",
        "20",
        "--out",
        &s(&run),
    ]);
    let e = fails(&["train", "--resume", &s(&run)]);
    assert!(
        e.contains("the run already finished") && !e.contains(".partial"),
        "{e}"
    );
}

#[test]
fn harvest_into_an_existing_file_fails_before_any_work() {
    let (Some(gguf), Some(moby)) = (
        common::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        common::asset("text/moby-dick"),
    ) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("taken.txt");
    std::fs::write(&out, "mine").unwrap();
    let start = std::time::Instant::now();
    let e = fails(&[
        "harvest",
        "--model",
        &s(&gguf),
        "--corpus",
        &s(&moby),
        "--layer",
        "1",
        "--max-tokens",
        "100000",
        "--out",
        &s(&out),
    ]);
    assert!(e.contains("taken.txt") && e.contains("not a folder"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "mine");
    // Loading the model is all it did: a 100k-token harvest takes minutes.
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
}

#[test]
fn sizes_past_the_memory_there_is_are_refused_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    let e = fails(&[
        "train",
        "--data",
        &s(&data),
        "--arch",
        "topk",
        "--k",
        "3",
        "--latents",
        "100000000000",
        "--out",
        &s(&t.path().join("run")),
    ]);
    assert!(
        e.contains("--latents") && e.contains("needs") && e.contains("available"),
        "{e}"
    );
    let e = fails(&[
        "synth",
        "--latents",
        "64",
        "--dims",
        "16",
        "--active",
        "3",
        "--samples",
        "100000000000000",
        "--out",
        &s(&t.path().join("big")),
    ]);
    assert!(e.contains("--samples") && e.contains("PiB"), "{e}");
    // A limit of one's own: 1 MiB is too little for 4096 latents x 16 dimensions.
    let e = fails(&[
        "--memory-limit",
        "1M",
        "train",
        "--data",
        &s(&data),
        "--arch",
        "topk",
        "--k",
        "3",
        "--latents",
        "4096",
        "--steps",
        "5",
        "--out",
        &s(&t.path().join("run")),
    ]);
    assert!(e.contains("but 1.0 MiB is available"), "{e}");
    let e = fails(&["--memory-limit", "lots", "demo"]);
    assert!(e.contains("--memory-limit") && e.contains("512M"), "{e}");
}

#[test]
fn encoded_codes_are_admitted_before_the_solver_runs() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    // 4096 samples x 64 atoms: 1 MiB of codes, 3 MiB with the solver's buffer and the file.
    let e = fails(&[
        "--memory-limit",
        "2M",
        "encode",
        "--dictionary",
        &s(&data.with_file_name("dictionary.npy")),
        "--data",
        &s(&data),
        "--out",
        &s(&t.path().join("codes.npy")),
    ]);
    assert!(
        e.contains("codes [samples, atoms]") && e.contains("2.0 MiB"),
        "{e}"
    );
}

/// Runs `train` on a planted problem with `flags` (after `--data`), expecting exit 2; returns
/// stderr.
fn train_refused(flags: &[&str]) -> String {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    let (data, out) = (s(&data), s(&t.path().join("run")));
    let mut args = vec!["train", "--data", &data, "--out", &out];
    args.extend_from_slice(flags);
    fails(&args)
}

#[test]
fn a_batch_larger_than_the_data_is_an_error_not_a_panic() {
    let e = train_refused(&[
        "--arch",
        "topk",
        "--k",
        "3",
        "--latents",
        "64",
        "--batch",
        "100000000000",
    ]);
    assert!(
        e.contains("batch_size") && e.contains("the number of samples"),
        "{e}"
    );
}

#[test]
fn an_aux_k_above_the_latents_is_refused_not_lowered() {
    let e = train_refused(&[
        "--arch",
        "topk",
        "--k",
        "3",
        "--latents",
        "64",
        "--aux-k",
        "100000000000",
    ]);
    assert!(e.contains("aux_k") && e.contains("at most 64"), "{e}");
}

#[test]
fn an_mlp_encoder_s_hidden_width_is_admitted_like_the_latents() {
    let e = train_refused(&[
        "--arch",
        "mlp",
        "--latents",
        "64",
        "--hidden",
        "1000000000000",
    ]);
    assert!(e.contains("--hidden") && e.contains("needs"), "{e}");
}

#[test]
fn a_gguf_whose_block_count_disagrees_with_its_tensors_is_refused() {
    let (Some(gguf), Some(moby)) = (
        common::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        common::asset("text/moby-dick"),
    ) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&gguf).unwrap();
    // The key, then its type (4 = u32) and value: set the value to 2^31.
    let key = b"llama.block_count";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    assert_eq!(&bytes[at..at + 4], &4u32.to_le_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&(1u32 << 31).to_le_bytes());
    let crafted = t.path().join("crafted.gguf");
    std::fs::write(&crafted, bytes).unwrap();
    let e = fails(&[
        "harvest",
        "--model",
        &s(&crafted),
        "--corpus",
        &s(&moby),
        "--layer",
        "1",
        "--out",
        &s(&t.path().join("o")),
    ]);
    assert!(
        e.contains("crafted.gguf") && e.contains("block_count") && e.contains("30 blocks"),
        "{e}"
    );
}

#[test]
fn a_flipped_bit_in_a_shard_stops_training_at_its_chunk_unless_told_not_to_check() {
    let t = tempfile::tempdir().unwrap();
    let store = two_shard_store(t.path());
    let shard = store.join("shard-00001.npy");
    let mut bytes = std::fs::read(&shard).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    std::fs::write(&shard, bytes).unwrap();
    let train = |extra: &[&str], out: &str| {
        let mut args = vec![
            "train",
            "--store",
            store.to_str().unwrap(),
            "--arch",
            "topk",
            "--k",
            "2",
            "--latents",
            "8",
            "--steps",
            "20",
            "--batch",
            "16",
        ];
        args.extend(extra);
        let out = t.path().join(out);
        args.extend(["--out", out.to_str().unwrap()]);
        common::run(&args)
    };
    let o = train(&[], "checked");
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("shard-00001.npy") && e.contains("do not match the manifest's hash"),
        "{e}"
    );
    assert!(train(&["--no-verify"], "unchecked").status.success());
}

#[test]
fn eval_against_truth_streams_in_memory_that_does_not_grow_with_the_samples() {
    // 200k samples: dense codes of a 512-latent SAE for all of them would be 410 MB, the true
    // codes 51 MB; eval runs under a 160 MiB data-segment limit (RLIMIT_DATA counts the heap
    // and anonymous maps, not the file maps it streams from).
    use rand::SeedableRng;
    let t = tempfile::tempdir().unwrap();
    let data = planted_with(t.path(), 200_000);
    let truth = t.path().join("planted");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let sae = Sae::init(
        16,
        512,
        Activation::TopK { k: 8 },
        EncoderInit::Tied,
        &mut rng,
    );
    let folder = t.path().join("sae");
    std::fs::create_dir_all(&folder).unwrap();
    sparsecode::sae::saelens::save(&folder, &sae, json!({})).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -d 163840 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_sparsecode"))
        .args([
            "--threads",
            "2",
            "eval",
            "--json",
            "--sae",
            &s(&folder),
            "--data",
        ])
        .arg(&data)
        .arg("--truth")
        .arg(&truth)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["samples"], 200000);
    assert!(e["code_mcc"].as_f64().unwrap() > 0.0, "{e}");
}
