//! SAE folders in either format, told apart by what they contain: an SAELens `cfg.json` has
//! `d_sae` (weights in `sae_weights.safetensors`), a sparsify one has `num_latents` or
//! `expansion_factor` (weights in `sae.safetensors`); a sparsify run folder with one hookpoint
//! folder inside is opened at that hookpoint. Each format's loader then checks the tensor names
//! and shapes itself.

use super::{saelens, sparsify, Sae};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The folder formats sparcecode reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaeFormat {
    /// SAELens: `cfg.json` + `sae_weights.safetensors` (every architecture).
    #[default]
    Saelens,
    /// EleutherAI sparsify: `cfg.json` + `sae.safetensors` (TopK only).
    Sparsify,
}

/// Which format the SAE folder `path` holds, and the folder that holds it (a sparsify run's
/// single hookpoint folder).
pub fn detect(path: &Path) -> Result<(SaeFormat, PathBuf)> {
    if !path.is_dir() {
        return Err(Error::format(
            path,
            "not a folder (expected an SAE folder: SAELens cfg.json + sae_weights.safetensors, or sparsify cfg.json + sae.safetensors)",
        ));
    }
    if let Some(format) = format_of(path)? {
        return Ok((format, path.to_path_buf()));
    }
    let mut hooks: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.join(sparsify::WEIGHTS_FILE).is_file() && p.join(sparsify::CFG_FILE).is_file()
        })
        .collect();
    hooks.sort();
    match hooks.as_slice() {
        [one] => Ok((SaeFormat::Sparsify, one.clone())),
        [] => Err(Error::format(
            path,
            "no SAE here: neither cfg.json with sae_weights.safetensors (SAELens) nor with sae.safetensors (sparsify), nor one hookpoint folder holding them",
        )),
        many => Err(Error::format(
            path,
            format!(
                "a sparsify run with {} hookpoints ({}): give the folder of one",
                many.len(),
                many.iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The format of a folder holding `cfg.json` and a weights file (None: not such a folder).
fn format_of(dir: &Path) -> Result<Option<SaeFormat>> {
    let cfg_path = dir.join(saelens::CFG_FILE);
    if !cfg_path.is_file() {
        return Ok(None);
    }
    let cfg: Value = crate::io::read_json(&cfg_path)?;
    let has = |k: &str| cfg.get(k).is_some();
    let (saelens_weights, sparsify_weights) = (
        dir.join(saelens::WEIGHTS_FILE).is_file(),
        dir.join(sparsify::WEIGHTS_FILE).is_file(),
    );
    if has("d_sae") && saelens_weights {
        Ok(Some(SaeFormat::Saelens))
    } else if (has("num_latents") || has("expansion_factor")) && sparsify_weights {
        Ok(Some(SaeFormat::Sparsify))
    } else if saelens_weights || sparsify_weights {
        Err(Error::format(
            &cfg_path,
            "neither an SAELens config (with 'd_sae') beside sae_weights.safetensors nor a sparsify config (with 'num_latents' or 'expansion_factor') beside sae.safetensors",
        ))
    } else {
        Ok(None)
    }
}

/// Reads the SAE folder `path` in whichever format it holds.
pub fn load(path: &Path) -> Result<Sae> {
    let (format, dir) = detect(path)?;
    match format {
        SaeFormat::Saelens => saelens::load(&dir),
        SaeFormat::Sparsify => sparsify::load(&dir),
    }
}

/// The residual-stream layer the SAE folder `path` says it reads, when it says: the layer its
/// SAELens metadata names ([`layer_of`]); for sparsify, a hookpoint folder named `layers.N`.
pub fn hook_layer(path: &Path) -> Result<Option<usize>> {
    let (format, dir) = detect(path)?;
    Ok(match format {
        SaeFormat::Saelens => {
            let cfg: Value = crate::io::read_json(&dir.join(saelens::CFG_FILE))?;
            layer_of(&cfg["metadata"])
        }
        SaeFormat::Sparsify => dir
            .file_name()
            .and_then(|n| leading_number(&n.to_string_lossy(), "layers.")),
    })
}

/// The layer a metadata object (an SAE's SAELens `metadata`, a store manifest's) names:
/// `hook_layer` or `layer`, or a `hook_name` of the form `blocks.N.*`.
pub fn layer_of(metadata: &Value) -> Option<usize> {
    ["hook_layer", "layer"]
        .iter()
        .find_map(|k| metadata[*k].as_u64())
        .and_then(|l| usize::try_from(l).ok())
        .or_else(|| leading_number(metadata["hook_name"].as_str()?, "blocks."))
}

/// `N` of `PREFIX` `N` `.rest`.
fn leading_number(s: &str, prefix: &str) -> Option<usize> {
    s.strip_prefix(prefix)?.split('.').next()?.parse().ok()
}

/// Writes `sae` into the existing folder `dir` in `format`; `metadata` goes into an SAELens
/// config (sparsify's has no place for it).
pub fn save(dir: &Path, sae: &Sae, format: SaeFormat, metadata: Value) -> Result<()> {
    match format {
        SaeFormat::Saelens => saelens::save(dir, sae, metadata),
        SaeFormat::Sparsify => sparsify::save(dir, sae),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::{Activation, EncoderInit};
    use rand::SeedableRng;
    use serde_json::json;

    #[test]
    fn detects_each_format_by_content() {
        let t = tempfile::tempdir().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let sae = Sae::init(5, 9, Activation::TopK { k: 2 }, EncoderInit::Tied, &mut rng);
        let (a, b) = (t.path().join("lens"), t.path().join("run"));
        let hook = b.join("layers.3");
        for d in [&a, &hook] {
            std::fs::create_dir_all(d).unwrap();
        }
        save(&a, &sae, SaeFormat::Saelens, json!({})).unwrap();
        save(&hook, &sae, SaeFormat::Sparsify, json!({})).unwrap();
        assert_eq!(detect(&a).unwrap().0, SaeFormat::Saelens);
        assert_eq!(detect(&b).unwrap(), (SaeFormat::Sparsify, hook.clone()));
        assert_eq!(load(&a).unwrap(), sae);
        assert_eq!(load(&b).unwrap(), sae);
        // A second hookpoint makes the run ambiguous; a weights file under the wrong config is
        // refused rather than guessed.
        std::fs::create_dir_all(b.join("layers.4")).unwrap();
        save(&b.join("layers.4"), &sae, SaeFormat::Sparsify, json!({})).unwrap();
        let e = load(&b).unwrap_err().to_string();
        assert!(
            e.contains("2 hookpoints") && e.contains("layers.3, layers.4"),
            "{e}"
        );
        std::fs::rename(
            hook.join("sae.safetensors"),
            hook.join("sae_weights.safetensors"),
        )
        .unwrap();
        let e = load(&hook).unwrap_err().to_string();
        assert!(e.contains("neither an SAELens config"), "{e}");
        assert!(load(&t.path().join("none"))
            .unwrap_err()
            .to_string()
            .contains("not a folder"));
    }

    #[test]
    fn the_layer_is_read_from_whichever_key_names_it() {
        use serde_json::json;
        assert_eq!(
            layer_of(&json!({"hook_layer": 7, "hook_name": "blocks.3.x"})),
            Some(7)
        );
        assert_eq!(layer_of(&json!({"layer": 4})), Some(4));
        assert_eq!(
            layer_of(&json!({"hook_name": "blocks.15.hook_resid_post"})),
            Some(15)
        );
        assert_eq!(layer_of(&json!({"hook_name": "penultimate"})), None);
        assert_eq!(layer_of(&json!({})), None);
    }
}
