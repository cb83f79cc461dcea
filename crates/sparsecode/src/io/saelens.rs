//! The SAELens folder format: `cfg.json` + `sae_weights.safetensors` with tensors `W_enc
//! [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]`. Newer configs name the
//! architecture in `architecture` ("standard" | "topk") with `k`; older ones use
//! `activation_fn_str` and `activation_fn_kwargs.k`: both are read, both are written.

use super::tensors::{read_tensors, take, write_tensors};
use crate::sae::{Activation, Sae};
use crate::{Error, Matrix, Result};
use serde_json::{json, Value};
use std::path::Path;

/// File names inside an SAELens folder.
pub const CFG_FILE: &str = "cfg.json";
/// The weights file of an SAELens folder.
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";

/// Writes `sae` into the folder `dir` (which must exist); `metadata` becomes cfg.json's
/// `metadata` object (model_name, hook_name, dataset_path, ...).
pub fn save(dir: &Path, sae: &Sae, metadata: Value) -> Result<()> {
    let (n, m) = sae.w_dec.shape();
    let w_enc_t = sae.w_enc.transpose();
    write_tensors(
        &dir.join(WEIGHTS_FILE),
        &[
            ("W_enc", vec![m, n], w_enc_t.as_slice()),
            ("b_enc", vec![n], &sae.b_enc),
            ("W_dec", vec![n, m], sae.w_dec.as_slice()),
            ("b_dec", vec![m], &sae.b_dec),
        ],
        None,
    )?;
    let (architecture, activation, kwargs) = match sae.activation {
        Activation::Relu => ("standard", "relu", json!({})),
        Activation::TopK { k } => ("topk", "topk", json!({ "k": k })),
    };
    let mut cfg = json!({
        "architecture": architecture,
        "d_in": m,
        "d_sae": n,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "activation_fn_str": activation,
        "activation_fn_kwargs": kwargs,
        "metadata": metadata,
    });
    if let Activation::TopK { k } = sae.activation {
        cfg["k"] = json!(k);
    }
    super::write_json_atomic(&dir.join(CFG_FILE), &cfg)
}

fn usize_field(cfg: &Value, path: &Path, key: &str) -> Result<usize> {
    cfg.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| {
            Error::format(
                path,
                format!("field '{key}' is missing or not a non-negative integer"),
            )
        })
}

/// Reads an SAELens folder.
pub fn load(dir: &Path) -> Result<Sae> {
    if !dir.is_dir() {
        return Err(Error::format(
            dir,
            "not a folder (expected an SAE folder with cfg.json and sae_weights.safetensors)",
        ));
    }
    let cfg_path = dir.join(CFG_FILE);
    let cfg: Value = super::atomic::read_json(&cfg_path)?;
    let d_in = usize_field(&cfg, &cfg_path, "d_in")?;
    let d_sae = usize_field(&cfg, &cfg_path, "d_sae")?;
    let arch = cfg
        .get("architecture")
        .and_then(Value::as_str)
        .or_else(|| cfg.get("activation_fn_str").and_then(Value::as_str))
        .unwrap_or("standard");
    let k_of = || {
        cfg.get("k")
            .and_then(Value::as_u64)
            .or_else(|| {
                cfg.pointer("/activation_fn_kwargs/k")
                    .and_then(Value::as_u64)
            })
            .map(|k| k as usize)
            .ok_or_else(|| {
                Error::format(
                    &cfg_path,
                    "topk architecture without 'k' (nor 'activation_fn_kwargs.k')",
                )
            })
    };
    let activation = match arch {
        "standard" | "relu" => Activation::Relu,
        "topk" => Activation::TopK { k: k_of()? },
        other => {
            return Err(Error::format(
                &cfg_path,
                format!("architecture '{other}' is not supported (expected 'standard' or 'topk')"),
            ))
        }
    };
    match cfg.get("normalize_activations").and_then(Value::as_str) {
        None | Some("none") => {}
        Some(other) => {
            return Err(Error::format(
                &cfg_path,
                format!("normalize_activations '{other}' is not supported (expected 'none')"),
            ))
        }
    }
    let apply = cfg
        .get("apply_b_dec_to_input")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let wpath = dir.join(WEIGHTS_FILE);
    let mut t = read_tensors(&wpath)?;
    let w_enc_t = Matrix::from_vec(d_in, d_sae, take(&mut t, &wpath, "W_enc", &[d_in, d_sae])?)?;
    let sae = Sae {
        activation,
        w_enc: w_enc_t.transpose(),
        b_enc: take(&mut t, &wpath, "b_enc", &[d_sae])?,
        w_dec: Matrix::from_vec(d_sae, d_in, take(&mut t, &wpath, "W_dec", &[d_sae, d_in])?)?,
        b_dec: take(&mut t, &wpath, "b_dec", &[d_in])?,
        apply_b_dec_to_input: apply,
    };
    sae.validate(&dir.display().to_string())?;
    Ok(sae)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::EncoderInit;
    use rand::SeedableRng;

    #[test]
    fn round_trip_both_architectures() {
        let t = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for act in [Activation::Relu, Activation::TopK { k: 3 }] {
            let mut sae = Sae::init(5, 7, act, EncoderInit::FanInUniform, &mut rng);
            sae.b_enc[2] = 0.5;
            sae.b_dec[1] = -0.25;
            let dir = t.path().join(format!("{act:?}"));
            std::fs::create_dir(&dir).unwrap();
            save(&dir, &sae, json!({"model_name": "synthetic"})).unwrap();
            assert_eq!(load(&dir).unwrap(), sae);
            let cfg: Value =
                serde_json::from_slice(&std::fs::read(dir.join(CFG_FILE)).unwrap()).unwrap();
            assert_eq!(cfg["d_in"], 5);
            assert_eq!(cfg["metadata"]["model_name"], "synthetic");
        }
    }

    #[test]
    fn reads_legacy_activation_fn_config_and_reports_bad_ones() {
        let t = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let sae = Sae::init(4, 6, Activation::TopK { k: 2 }, EncoderInit::Tied, &mut rng);
        save(t.path(), &sae, json!({})).unwrap();
        let cfg_path = t.path().join(CFG_FILE);
        let legacy = json!({"d_in": 4, "d_sae": 6, "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 2}});
        std::fs::write(&cfg_path, legacy.to_string()).unwrap();
        assert_eq!(load(t.path()).unwrap(), sae);
        let wrong = json!({"d_in": 5, "d_sae": 6, "architecture": "standard"});
        std::fs::write(&cfg_path, wrong.to_string()).unwrap();
        let e = load(t.path()).unwrap_err().to_string();
        assert!(e.contains("W_enc") && e.contains("[5, 6]"), "{e}");
        let jump = json!({"d_in": 4, "d_sae": 6, "architecture": "jumprelu"});
        std::fs::write(&cfg_path, jump.to_string()).unwrap();
        assert!(load(t.path())
            .unwrap_err()
            .to_string()
            .contains("'jumprelu' is not supported"));
        std::fs::write(&cfg_path, "{").unwrap();
        assert!(load(t.path())
            .unwrap_err()
            .to_string()
            .contains("invalid JSON"));
    }
}
