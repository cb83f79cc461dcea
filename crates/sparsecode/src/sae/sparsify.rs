//! EleutherAI sparsify's folder format (`sparsify/sparse_coder.py`): one folder per hookpoint
//! with `cfg.json` (the `SparseCoderConfig` fields plus `d_in`) and `sae.safetensors` with
//! `encoder.weight [N, d_in]`, `encoder.bias [N]`, `W_dec [N, d_in]`, `b_dec [d_in]`. The encoder
//! reads `x - b_dec` and keeps the `k` largest pre-activations: a TopK SAE in sparsecode's own
//! layout (no transpose). Transcoders, skip connections and the GroupMax activation have no
//! counterpart here and are refused by name; so is a folder without a decoder.

use super::{Encoder, Sae};
use crate::io::tensors::{read_tensors, take, write_tensors};
use crate::io::Fields;
use crate::{Error, Matrix, Result};
use serde_json::{json, Value};
use std::path::Path;

/// The config file of a sparsify folder.
pub const CFG_FILE: &str = "cfg.json";
/// The weights file of a sparsify folder.
pub const WEIGHTS_FILE: &str = "sae.safetensors";

/// Writes a TopK `sae` as a sparsify folder into `dir` (which must exist). Other architectures
/// have no sparsify form and are refused.
pub fn save(dir: &Path, sae: &Sae) -> Result<()> {
    let Encoder::TopK { k } = sae.encoder else {
        return Err(Error::param(
            "format",
            format!(
                "sparsify folders hold TopK SAEs only, not {:?} (save it in the SAELens format)",
                sae.activation()
            ),
        ));
    };
    if !sae.apply_b_dec_to_input {
        return Err(Error::param(
            "format",
            "sparsify's encoder always reads x - b_dec; this SAE does not subtract b_dec",
        ));
    }
    let (n, m) = sae.w_dec.shape();
    let tensors: Vec<(&str, Vec<usize>, &[f32])> = vec![
        ("encoder.weight", vec![n, m], sae.w_enc.as_slice()),
        ("encoder.bias", vec![n], &sae.b_enc),
        ("W_dec", vec![n, m], sae.w_dec.as_slice()),
        ("b_dec", vec![m], &sae.b_dec),
    ];
    write_tensors(&dir.join(WEIGHTS_FILE), &tensors, None)?;
    let cfg = json!({
        "activation": "topk",
        "expansion_factor": (n / m.max(1)).max(1),
        "normalize_decoder": true,
        "num_latents": n,
        "k": k,
        "multi_topk": false,
        "skip_connection": false,
        "transcode": false,
        "d_in": m,
    });
    crate::io::write_json_atomic(&dir.join(CFG_FILE), &cfg)
}

/// Reads a sparsify folder (one hookpoint's `cfg.json` + `sae.safetensors`).
pub fn load(dir: &Path) -> Result<Sae> {
    let cfg_path = dir.join(CFG_FILE);
    let cfg: Value = crate::io::read_json(&cfg_path)?;
    let f = Fields::new(&cfg, &cfg_path);
    let d_in = f.required_usize("d_in")?;
    let k = f.required_usize("k")?;
    let activation = f.str("activation")?.unwrap_or("topk");
    if activation != "topk" {
        return Err(Error::format(
            &cfg_path,
            format!("activation '{activation}' is not supported (expected 'topk')"),
        ));
    }
    for key in ["transcode", "skip_connection"] {
        if f.bool(key)? == Some(true) {
            return Err(Error::format(
                &cfg_path,
                format!("'{key}': true is not supported (an autoencoder without skip connection is expected)"),
            ));
        }
    }
    let wpath = dir.join(WEIGHTS_FILE);
    let mut t = read_tensors(&wpath)?;
    let n = match t.get("encoder.weight") {
        Some(w) if w.shape.len() == 2 => w.shape[0],
        _ => {
            return Err(Error::format(
                &wpath,
                format!("no 2-D tensor 'encoder.weight' [num_latents, {d_in}]"),
            ))
        }
    };
    let sae = Sae {
        encoder: Encoder::TopK { k },
        w_enc: Matrix::from_vec(n, d_in, take(&mut t, &wpath, "encoder.weight", &[n, d_in])?)?,
        b_enc: take(&mut t, &wpath, "encoder.bias", &[n])?,
        w_dec: Matrix::from_vec(n, d_in, take(&mut t, &wpath, "W_dec", &[n, d_in])?)?,
        b_dec: take(&mut t, &wpath, "b_dec", &[d_in])?,
        apply_b_dec_to_input: true,
    };
    sae.validate(&dir.display().to_string())?;
    Ok(sae)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::{Activation, EncoderInit};
    use rand::SeedableRng;

    #[test]
    fn round_trip_and_refusals() {
        let t = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut sae = Sae::init(
            6,
            12,
            Activation::TopK { k: 3 },
            EncoderInit::FanInUniform,
            &mut rng,
        );
        sae.b_enc[4] = 0.5;
        sae.b_dec[2] = -0.25;
        save(t.path(), &sae).unwrap();
        assert_eq!(load(t.path()).unwrap(), sae);
        let cfg: Value = crate::io::read_json(&t.path().join(CFG_FILE)).unwrap();
        assert_eq!(
            (cfg["num_latents"].as_u64(), cfg["k"].as_u64()),
            (Some(12), Some(3))
        );

        let relu = Sae::init(6, 12, Activation::Relu, EncoderInit::Tied, &mut rng);
        let e = save(t.path(), &relu).unwrap_err().to_string();
        assert!(e.contains("TopK SAEs only"), "{e}");

        let mut bad = cfg.clone();
        bad["transcode"] = json!(true);
        std::fs::write(t.path().join(CFG_FILE), bad.to_string()).unwrap();
        let e = load(t.path()).unwrap_err().to_string();
        assert!(e.contains("'transcode'"), "{e}");
        let mut bad = cfg.clone();
        bad["activation"] = json!("groupmax");
        std::fs::write(t.path().join(CFG_FILE), bad.to_string()).unwrap();
        assert!(load(t.path()).unwrap_err().to_string().contains("groupmax"));
        let mut bad = cfg;
        bad["d_in"] = json!(7);
        std::fs::write(t.path().join(CFG_FILE), bad.to_string()).unwrap();
        let e = load(t.path()).unwrap_err().to_string();
        assert!(e.contains("encoder.weight"), "{e}");
    }
}
