//! The SAELens folder format: `cfg.json` + `sae_weights.safetensors` with tensors `W_enc
//! [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]`; "jumprelu" adds
//! `threshold [d_sae]`; "gated" has `b_gate`, `b_mag`, `r_mag` in place of `b_enc`. Newer
//! configs name the architecture in `architecture` with `k` for "topk"; older ones use
//! `activation_fn_str` and `activation_fn_kwargs.k`: both are read, both are written.
//! MLP encoders are a sparsecode extension: architecture "mlp" with `d_hidden`, and tensors
//! `W_hidden [d_in, d_hidden]`, `b_hidden [d_hidden]`, `W_enc [d_hidden, d_sae]`.
//! Switch SAEs likewise: architecture "switch" with `k` and `experts`, and tensors
//! `W_router [d_in, experts]` (stored like `W_enc`, input-major) and `b_router [d_in]`.

use crate::io::tensors::{read_tensors, take, write_tensors};
use crate::io::Fields;
use crate::sae::{Activation, Encoder, HiddenLayer, Router, Sae};
use crate::{Error, Matrix, Result};
use serde_json::{json, Value};
use std::path::Path;

/// File names inside an SAELens folder.
pub const CFG_FILE: &str = "cfg.json";
/// The weights file of an SAELens folder.
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";
/// SAELens' record of the input scale of a run trained with `expected_average_only_in`.
pub const SCALER_FILE: &str = "activation_scaler.json";

/// Writes `sae` into the folder `dir` (which must exist); `metadata` becomes cfg.json's
/// `metadata` object (model_name, hook_name, dataset_path, ...).
pub fn save(dir: &Path, sae: &Sae, metadata: Value) -> Result<()> {
    let (n, m) = sae.w_dec.shape();
    let e = sae.encoder_input_width();
    let w_enc_t = sae.w_enc.transpose();
    let hidden_t = sae.encoder.hidden().map(|h| h.w.transpose());
    let router_t = match &sae.encoder {
        Encoder::Switch { router, .. } => Some(router.w.transpose()),
        _ => None,
    };
    let mut tensors: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("W_enc", vec![e, n], w_enc_t.as_slice()),
        ("W_dec", vec![n, m], sae.w_dec.as_slice()),
        ("b_dec", vec![m], &sae.b_dec),
    ];
    let b_enc_name = match sae.encoder {
        Encoder::Gated { .. } => "b_gate",
        _ => "b_enc",
    };
    tensors.push((b_enc_name, vec![n], &sae.b_enc));
    match &sae.encoder {
        Encoder::Relu | Encoder::TopK { .. } => {}
        Encoder::JumpRelu { threshold } => tensors.push(("threshold", vec![n], threshold)),
        Encoder::Gated { b_mag, r_mag } => {
            tensors.push(("b_mag", vec![n], b_mag));
            tensors.push(("r_mag", vec![n], r_mag));
        }
        Encoder::Mlp { hidden } => {
            let t = hidden_t.as_ref().map_or(&[][..], |t| t.as_slice());
            tensors.push(("W_hidden", vec![m, e], t));
            tensors.push(("b_hidden", vec![e], &hidden.b));
        }
        Encoder::Switch { router, .. } => {
            let t = router_t.as_ref().map_or(&[][..], |t| t.as_slice());
            tensors.push(("W_router", vec![m, router.experts()], t));
            tensors.push(("b_router", vec![m], &router.b));
        }
    }
    write_tensors(&dir.join(WEIGHTS_FILE), &tensors, None)?;
    let (architecture, activation, kwargs) = match sae.encoder {
        Encoder::Mlp { .. } => ("mlp", "relu", json!({})),
        Encoder::Relu => ("standard", "relu", json!({})),
        Encoder::TopK { k } => ("topk", "topk", json!({ "k": k })),
        Encoder::JumpRelu { .. } => ("jumprelu", "jumprelu", json!({})),
        Encoder::Gated { .. } => ("gated", "relu", json!({})),
        Encoder::Switch { k, .. } => ("switch", "topk", json!({ "k": k })),
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
    match &sae.encoder {
        Encoder::TopK { k } => cfg["k"] = json!(k),
        Encoder::Switch { k, router } => {
            cfg["k"] = json!(k);
            cfg["experts"] = json!(router.experts());
        }
        _ => {}
    }
    if sae.encoder.hidden().is_some() {
        cfg["d_hidden"] = json!(e);
    }
    crate::io::write_json_atomic(&dir.join(CFG_FILE), &cfg)
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
    let cfg: Value = crate::io::read_json(&cfg_path)?;
    let f = Fields::new(&cfg, &cfg_path);
    let d_in = f.required_usize("d_in")?;
    let d_sae = f.required_usize("d_sae")?;
    let arch = match f.str("architecture")? {
        Some(a) => a,
        None => f.str("activation_fn_str")?.unwrap_or("standard"),
    };
    let activation = match arch {
        "standard" | "relu" | "mlp" => Activation::Relu,
        "topk" => Activation::TopK { k: topk_k(&f)? },
        "jumprelu" => Activation::JumpRelu,
        "gated" => Activation::Gated,
        "switch" => Activation::Switch {
            k: topk_k(&f)?,
            experts: f.positive_usize("experts")?.ok_or_else(|| {
                Error::format(&cfg_path, "switch architecture without 'experts'")
            })?,
        },
        other => {
            return Err(Error::format(
                &cfg_path,
                format!("architecture '{other}' is not supported (expected 'standard', 'topk', 'jumprelu', 'gated', 'mlp' or 'switch')"),
            ))
        }
    };
    let width = if arch == "mlp" {
        Some(f.required_usize("d_hidden")?)
    } else {
        None
    };
    let input_scale = match f.str("normalize_activations")? {
        None | Some("none") => 1.0,
        Some("expected_average_only_in") => scaler_factor(dir)?,
        Some(other) => {
            return Err(Error::format(
                &cfg_path,
                format!("normalize_activations '{other}' is not supported (expected 'none' or 'expected_average_only_in')"),
            ))
        }
    };
    let apply = f.bool("apply_b_dec_to_input")?.unwrap_or(true);
    let wpath = dir.join(WEIGHTS_FILE);
    let mut t = read_tensors(&wpath)?;
    let e = width.unwrap_or(d_in);
    let w_enc_t = Matrix::from_vec(e, d_sae, take(&mut t, &wpath, "W_enc", &[e, d_sae])?)?;
    let gated = activation == Activation::Gated;
    let b_enc = take(
        &mut t,
        &wpath,
        if gated { "b_gate" } else { "b_enc" },
        &[d_sae],
    )?;
    let encoder = match (activation, width) {
        (_, Some(w)) => Encoder::Mlp {
            hidden: HiddenLayer {
                w: Matrix::from_vec(d_in, w, take(&mut t, &wpath, "W_hidden", &[d_in, w])?)?
                    .transpose(),
                b: take(&mut t, &wpath, "b_hidden", &[w])?,
            },
        },
        (Activation::Relu, None) => Encoder::Relu,
        (Activation::TopK { k }, None) => Encoder::TopK { k },
        (Activation::JumpRelu, None) => Encoder::JumpRelu {
            threshold: take(&mut t, &wpath, "threshold", &[d_sae])?,
        },
        (Activation::Gated, None) => Encoder::Gated {
            b_mag: take(&mut t, &wpath, "b_mag", &[d_sae])?,
            r_mag: take(&mut t, &wpath, "r_mag", &[d_sae])?,
        },
        (Activation::Switch { k, experts }, None) => {
            crate::sae::model::check_experts(&cfg_path.display().to_string(), d_sae, k, experts)?;
            let w = take(&mut t, &wpath, "W_router", &[d_in, experts])?;
            Encoder::Switch {
                k,
                router: Router {
                    w: Matrix::from_vec(d_in, experts, w)?.transpose(),
                    b: take(&mut t, &wpath, "b_router", &[d_in])?,
                },
            }
        }
    };
    let mut sae = Sae {
        encoder,
        w_enc: w_enc_t.transpose(),
        b_enc,
        w_dec: Matrix::from_vec(d_sae, d_in, take(&mut t, &wpath, "W_dec", &[d_sae, d_in])?)?,
        b_dec: take(&mut t, &wpath, "b_dec", &[d_in])?,
        apply_b_dec_to_input: apply,
    };
    sae.validate(&dir.display().to_string())?;
    sae.fold_input_scale(input_scale);
    Ok(sae)
}

/// A TopK folder's k: `k`, or (older SAELens) `activation_fn_kwargs.k`; present and wrong in
/// either place is an error, not a reason to look in the other.
fn topk_k(f: &Fields) -> Result<usize> {
    match f.positive_usize("k")? {
        Some(k) => Ok(k),
        None => f.positive_usize("/activation_fn_kwargs/k")?.ok_or_else(|| {
            Error::format(
                f.path(),
                "topk architecture without 'k' (nor 'activation_fn_kwargs.k')",
            )
        }),
    }
}

/// The input scale of a folder trained with `expected_average_only_in` and saved before the
/// scale was folded in (an SAELens checkpoint): `activation_scaler.json`'s `scaling_factor`.
fn scaler_factor(dir: &Path) -> Result<f32> {
    let path = dir.join(SCALER_FILE);
    if !path.is_file() {
        return Err(Error::format(
            dir.join(CFG_FILE),
            format!("normalize_activations 'expected_average_only_in' needs the scaling factor in {SCALER_FILE} beside it"),
        ));
    }
    let v: Value = crate::io::read_json(&path)?;
    match Fields::new(&v, &path).f64("scaling_factor")? {
        Some(s) if s > 0.0 => Ok(s as f32),
        _ => Err(Error::format(
            &path,
            "'scaling_factor' is missing or not a positive number",
        )),
    }
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
        let archs = [
            (Activation::Relu, false),
            (Activation::TopK { k: 3 }, false),
            (Activation::JumpRelu, false),
            (Activation::Gated, false),
            (Activation::Relu, true),
            (Activation::Switch { k: 1, experts: 7 }, false),
        ];
        for (act, mlp) in archs {
            let mut sae = Sae::init(5, 7, act, EncoderInit::FanInUniform, &mut rng);
            if mlp {
                sae = sae.with_hidden_layer(4, &mut rng);
            }
            sae.b_enc[2] = 0.5;
            sae.b_dec[1] = -0.25;
            for (_, v) in sae.encoder.tensors_mut() {
                v.iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| *x = 0.1 * i as f32 + 0.05);
            }
            let dir = t.path().join(format!("{act:?}-{mlp}"));
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
    fn folds_an_unfolded_input_scale_on_load() {
        let t = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let sae = Sae::init(4, 6, Activation::Relu, EncoderInit::FanInUniform, &mut rng);
        save(t.path(), &sae, json!({})).unwrap();
        let cfg_path = t.path().join(CFG_FILE);
        let mut cfg: Value = crate::io::read_json(&cfg_path).unwrap();
        cfg["normalize_activations"] = json!("expected_average_only_in");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let e = load(t.path()).unwrap_err().to_string();
        assert!(e.contains(SCALER_FILE), "{e}");
        std::fs::write(t.path().join(SCALER_FILE), r#"{"scaling_factor": 2.5}"#).unwrap();
        let mut want = sae.clone();
        want.fold_input_scale(2.5);
        assert_eq!(load(t.path()).unwrap(), want);
        // The folded SAE on raw x reconstructs what the saved one does on 2.5 x, over 2.5.
        let x = Matrix::standard_normal(5, 4, 1);
        let mut scaled = x.clone();
        scaled.as_mut_slice().iter_mut().for_each(|v| *v *= 2.5);
        let par = crate::Parallelism::Serial;
        let (a, b) = (want.reconstruct(&x, par), sae.reconstruct(&scaled, par));
        for (u, v) in a.as_slice().iter().zip(b.as_slice()) {
            assert!((u - v / 2.5).abs() < 1e-5, "{u} vs {}", v / 2.5);
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
        let e = load(t.path()).unwrap_err().to_string();
        assert!(e.contains("threshold"), "{e}");
        let other = json!({"d_in": 4, "d_sae": 6, "architecture": "matryoshka"});
        std::fs::write(&cfg_path, other.to_string()).unwrap();
        assert!(load(t.path())
            .unwrap_err()
            .to_string()
            .contains("'matryoshka' is not supported"));
        std::fs::write(&cfg_path, "{").unwrap();
        assert!(load(t.path())
            .unwrap_err()
            .to_string()
            .contains("invalid JSON"));
    }
}
