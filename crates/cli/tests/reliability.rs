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

/// Encodes with the folder after `edit` changed its cfg.json; returns the error.
fn encode_with_cfg(edit: impl Fn(&mut Value)) -> String {
    let t = tempfile::tempdir().unwrap();
    let (folder, data) = saelens_folder(t.path());
    let cfg_path = folder.join("cfg.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&cfg_path, serde_json::to_string(&cfg).unwrap()).unwrap();
    let out = t.path().join("codes.npy");
    fails(&[
        "encode",
        "--sae",
        &s(&folder),
        "--data",
        &s(&data),
        "--out",
        &s(&out),
    ])
}

#[test]
fn a_saelens_folder_that_is_well_formed_encodes() {
    let t = tempfile::tempdir().unwrap();
    let (folder, data) = saelens_folder(t.path());
    let out = t.path().join("codes.npy");
    ok(&[
        "encode",
        "--sae",
        &s(&folder),
        "--data",
        &s(&data),
        "--out",
        &s(&out),
    ]);
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
