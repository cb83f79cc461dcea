//! A network's penultimate activations kept as activation stores in the run folder,
//! `activations/NETWORK/train` and `activations/NETWORK/test` (float32, as `sparsecode store
//! create` writes them), so that `sparsecode train --data` and Python's `ActivationStore` can
//! take them up after the experiment; the experiment's SAEs stream their training rows from
//! there.

use serde_json::Value;
use sparsecode::data::store::{default_shard_rows, Store, StoreDType, StoreWriter};
use sparsecode::{Error, Matrix, Result};
use std::path::Path;

/// The folder of the stores inside a run folder.
pub const FOLDER: &str = "activations";

/// The training and the held-out activations of one network, as stores.
pub struct StoredSplit {
    /// Training rows.
    pub train: Store,
    /// Held-out rows.
    pub test: Store,
}

impl StoredSplit {
    /// Writes `train` and `test` as the stores `FOLDER/network/{train,test}` under `run`, with
    /// `metadata` (plus the network and the split) in their manifests, and opens them.
    pub fn write(
        run: &Path,
        network: &str,
        (train, test): (&Matrix, &Matrix),
        metadata: &Value,
    ) -> Result<Self> {
        let dir = run.join(FOLDER).join(network);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let store = |split: &str, rows: &Matrix| -> Result<Store> {
            let width = rows.cols();
            let dtype = StoreDType::F32;
            let dest = dir.join(split);
            let mut w =
                StoreWriter::create(&dest, width, dtype, default_shard_rows(width, dtype), false)?;
            w.push(rows.as_slice(), &format!("{network} {split} activations"))?;
            let mut meta = metadata.clone();
            if let Value::Object(m) = &mut meta {
                m.insert("network".into(), network.into());
                m.insert("split".into(), split.into());
            }
            Store::open(&w.finish(meta)?)
        };
        Ok(StoredSplit {
            train: store("train", train)?,
            test: store("test", test)?,
        })
    }
}

/// The report's note on where `network`'s stores are and how to train on them.
pub fn note(network: &str) -> String {
    format!("The penultimate activations are kept as activation stores in the output folder, `{FOLDER}/{network}/train` and `{FOLDER}/{network}/test`: `sparsecode train --store OUT/{FOLDER}/{network}/train --arch topk --latents 512 --out RUN` or Python's `sparsecode.ActivationStore` read them.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_read_back_the_rows_with_their_network_and_split() {
        let dir = tempfile::tempdir().unwrap();
        let train = Matrix::from_vec(3, 2, vec![1.0, -2.0, 0.5, 0.25, 3.0, 4.0]).unwrap();
        let test = Matrix::from_vec(1, 2, vec![7.0, 8.0]).unwrap();
        let meta = serde_json::json!({"experiment": "t"});
        let s = StoredSplit::write(dir.path(), "trained", (&train, &test), &meta).unwrap();
        let (a, b) = (
            s.train.head(u64::MAX).unwrap(),
            s.test.head(u64::MAX).unwrap(),
        );
        assert_eq!(
            (a.as_slice(), b.as_slice()),
            (train.as_slice(), test.as_slice())
        );
        let m = &s.test.manifest().metadata;
        assert_eq!(
            (m["network"].as_str(), m["split"].as_str()),
            (Some("trained"), Some("test"))
        );
        assert_eq!(m["experiment"], "t");
        assert!(dir
            .path()
            .join("activations/trained/train/manifest.json")
            .exists());
    }

    #[test]
    fn a_non_finite_activation_is_refused_naming_the_split() {
        let dir = tempfile::tempdir().unwrap();
        let bad = Matrix::from_vec(1, 2, vec![1.0, f32::NAN]).unwrap();
        let ok = Matrix::from_vec(1, 2, vec![1.0, 2.0]).unwrap();
        let meta = serde_json::json!({});
        let err = StoredSplit::write(dir.path(), "n", (&bad, &ok), &meta)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("n train activations"), "{err}");
        assert!(!dir.path().join("activations/n/train").exists());
    }
}
