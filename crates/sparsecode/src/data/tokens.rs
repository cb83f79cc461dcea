//! Token provenance of a harvested activation store: for every row, the token id, the document
//! it came from and its position there; plus the vocabulary as text and the document names.
//! Lives beside the shards as `shard-NNNNN.tokens.npy` (`uint32 [rows, 3]`), `vocab.json` and
//! the manifest's `metadata` (`token_shards`, `documents`, `context_size`), so dashboards and
//! interpretability scoring work from the store alone, without the model.

use super::store::{check_sha256, sha256_hex, ShardInfo, Store};
use crate::io::npy::{parse_header_any, to_npy_header};
use crate::io::{read_json, write_atomic};
use crate::{Error, Result};
use std::path::Path;

/// Where one row came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenRow {
    /// Token id.
    pub token: u32,
    /// Document index (into [`TokenTable::documents`]).
    pub doc: u32,
    /// Token position inside the document.
    pub pos: u32,
}

/// File name of the token shard beside activation shard `i`.
pub fn token_shard_name(i: usize) -> String {
    format!("shard-{i:05}.tokens.npy")
}

/// Writes one token shard atomically and returns its manifest entry.
pub fn write_token_shard(dir: &Path, file: &str, rows: &[TokenRow]) -> Result<ShardInfo> {
    let mut bytes = to_npy_header("<u4", &[rows.len(), 3]);
    for r in rows {
        for v in [r.token, r.doc, r.pos] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    write_atomic(&dir.join(file), &bytes)?;
    Ok(ShardInfo {
        file: file.to_string(),
        rows: rows.len() as u64,
        sha256: sha256_hex(&bytes),
        chunks: None,
    })
}

/// Reads one token shard, checking its header and exact length against `expect_rows`.
pub fn read_token_shard(path: &Path, expect_rows: u64) -> Result<Vec<TokenRow>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (descr, shape, offset) = parse_header_any(path, &bytes)?;
    if descr != "<u4" || shape != [expect_rows as usize, 3] {
        return Err(Error::format(
            path,
            format!(
                "token shard holds {descr} {shape:?}, the manifest says <u4 [{expect_rows}, 3]"
            ),
        ));
    }
    let need = offset + expect_rows as usize * 12;
    if bytes.len() != need {
        return Err(Error::format(
            path,
            format!(
                "token shard is {} bytes, expected {need} (truncated or partial shard)",
                bytes.len()
            ),
        ));
    }
    Ok(bytes[offset..]
        .chunks_exact(12)
        .map(|c| {
            let u = |i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            TokenRow {
                token: u(0),
                doc: u(4),
                pos: u(8),
            }
        })
        .collect())
}

/// Recomputes the SHA-256 of every token shard a store lists (none for a store without token
/// provenance) and returns how many were checked.
pub fn verify_token_shards(store: &Store) -> Result<usize> {
    let Some(shards) = token_shards(store)? else {
        return Ok(0);
    };
    for s in &shards {
        let path = store.dir().join(&s.file);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        check_sha256(&path, &bytes, &s.sha256)?;
    }
    Ok(shards.len())
}

/// The token shards a store's manifest lists (`None`: a store without token provenance).
fn token_shards(store: &Store) -> Result<Option<Vec<ShardInfo>>> {
    let v = &store.manifest().metadata["token_shards"];
    if v.is_null() {
        return Ok(None);
    }
    let mpath = store.dir().join(super::store::MANIFEST);
    let shards: Vec<ShardInfo> = serde_json::from_value(v.clone())
        .map_err(|e| Error::format(&mpath, format!("`metadata.token_shards`: {e}")))?;
    let names = shards.iter().map(|s| s.file.as_str());
    super::store::check_file_names(&mpath, "metadata.token_shards", names)?;
    Ok(Some(shards))
}

/// Every row's provenance, the vocabulary and document names of a harvested store.
#[derive(Clone, Debug)]
pub struct TokenTable {
    /// One entry per store row, in store order.
    pub rows: Vec<TokenRow>,
    /// Token id -> how the token reads.
    pub vocab: Vec<String>,
    /// Document names.
    pub documents: Vec<String>,
    /// Tokens per context (rows `c*context .. (c+1)*context` are one context).
    pub context: usize,
}

impl TokenTable {
    /// Reads the token shards listed in the store's metadata. A store without them (not made by
    /// `harvest`) or whose token shards disagree with its activation shards is refused.
    pub fn open(store: &Store) -> Result<Self> {
        let dir = store.dir();
        let m = store.manifest();
        let mpath = dir.join(super::store::MANIFEST);
        let meta = &m.metadata;
        let shards = token_shards(store)?.ok_or_else(|| {
            Error::format(
                &mpath,
                "no `metadata.token_shards`: this store has no token provenance (make it with `sparsecode harvest`)",
            )
        })?;
        if shards.len() != m.shards.len() {
            return Err(Error::format(
                &mpath,
                format!(
                    "{} token shards for {} activation shards",
                    shards.len(),
                    m.shards.len()
                ),
            ));
        }
        let mut rows = Vec::with_capacity(m.rows as usize);
        for (t, a) in shards.iter().zip(&m.shards) {
            if t.rows != a.rows {
                return Err(Error::format(
                    &mpath,
                    format!(
                        "{} lists {} rows but {} has {}",
                        t.file, t.rows, a.file, a.rows
                    ),
                ));
            }
            rows.extend(read_token_shard(&dir.join(&t.file), t.rows)?);
        }
        let vocab_file = crate::io::Fields::new(meta, &mpath)
            .str("vocab_file")?
            .unwrap_or("vocab.json");
        super::store::check_file_names(&mpath, "metadata.vocab_file", [vocab_file])?;
        let vocab: Vec<String> = read_json(&dir.join(vocab_file))?;
        let documents: Vec<String> = serde_json::from_value(meta["documents"].clone())
            .map_err(|_| Error::format(&mpath, "no `metadata.documents` list"))?;
        let context = meta["context_size"]
            .as_u64()
            .filter(|&c| c > 0)
            .ok_or_else(|| Error::format(&mpath, "no positive `metadata.context_size`"))?
            as usize;
        if let Some(bad) = rows
            .iter()
            .find(|r| r.token as usize >= vocab.len() || r.doc as usize >= documents.len())
        {
            return Err(Error::format(
                &mpath,
                format!(
                    "token row {bad:?} outside the vocabulary ({}) or document list ({})",
                    vocab.len(),
                    documents.len()
                ),
            ));
        }
        Ok(TokenTable {
            rows,
            vocab,
            documents,
            context,
        })
    }

    /// The row range of the context that holds `row`.
    pub fn context_of(&self, row: usize) -> std::ops::Range<usize> {
        let c = row / self.context;
        c * self.context..((c + 1) * self.context).min(self.rows.len())
    }

    /// How token `row` reads.
    pub fn text(&self, row: usize) -> &str {
        &self.vocab[self.rows[row].token as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shards_round_trip_and_truncation_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let rows: Vec<TokenRow> = (0..5)
            .map(|i| TokenRow {
                token: i * 7,
                doc: i / 2,
                pos: i,
            })
            .collect();
        let info = write_token_shard(t.path(), "x.tokens.npy", &rows).unwrap();
        assert_eq!(info.rows, 5);
        let p = t.path().join("x.tokens.npy");
        assert_eq!(read_token_shard(&p, 5).unwrap(), rows);
        let e = read_token_shard(&p, 6).unwrap_err().to_string();
        assert!(e.contains("[6, 3]"), "{e}");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let e = read_token_shard(&p, 5).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
