//! Joining the parts of a harvest (`harvest --part i/P`, or the ranks of `mpirun harvest`)
//! into one store that holds exactly the rows, shard files and manifest of a harvest made in
//! one process.

use crate::{Error, Result};
use serde_json::Value;
use sparsecode::data::store::{shard_name, Manifest, ShardInfo, MANIFEST};
use sparsecode::io::{read_json, write_json_atomic};
use std::path::{Path, PathBuf};

/// One finished part: its folder, manifest and place.
struct Finished {
    dir: PathBuf,
    manifest: Manifest,
    index: usize,
    count: usize,
}

fn open_part(dir: &Path) -> Result<Finished> {
    let bad = |reason: String| Error::Resume {
        path: dir.to_path_buf(),
        reason,
    };
    if !dir.join(MANIFEST).exists() {
        return Err(bad(
            "holds no finished harvest part (no manifest.json: still running, or not a part)"
                .into(),
        ));
    }
    let manifest: Manifest = read_json(&dir.join(MANIFEST))?;
    let part = &manifest.metadata["part"];
    let field = |k: &str| part[k].as_u64().map(|v| v as usize);
    match (field("index"), field("count")) {
        (Some(index), Some(count)) if index < count => Ok(Finished {
            dir: dir.to_path_buf(),
            manifest,
            index,
            count,
        }),
        _ => Err(bad(
            "is a store but not a harvest part (its manifest has no `part`)".into(),
        )),
    }
}

/// The metadata without what differs between parts.
fn shared_metadata(m: &Manifest) -> Value {
    let mut v = m.metadata.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("part");
        o.remove("token_shards");
    }
    v
}

/// Joins the finished harvest parts `parts` (any order, every part once) into the store `dest`
/// (which must not exist): shard files are hard-linked where the file system allows, else
/// copied, and the manifest is written last. Returns the joined store's rows.
pub fn merge_parts(parts: &[PathBuf], dest: &Path) -> Result<u64> {
    let _lock = sparsecode::io::OutputLock::acquire(dest)?;
    if dest.exists() {
        return Err(Error::Resume {
            path: dest.to_path_buf(),
            reason: "already exists; choose another output for the joined store".into(),
        });
    }
    let mut found = parts
        .iter()
        .map(|p| open_part(p))
        .collect::<Result<Vec<_>>>()?;
    found.sort_by_key(|p| p.index);
    check_parts(&found)?;
    // Beside `dest`, named after all of it (`with_extension` would give `acts.1` and `acts.2`
    // the same staging folder).
    let staging = {
        let mut s = dest.as_os_str().to_owned();
        s.push(".merging");
        PathBuf::from(s)
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    let (mut shards, mut token_shards) = (Vec::new(), Vec::new());
    for p in &found {
        let tokens: Vec<ShardInfo> =
            serde_json::from_value(p.manifest.metadata["token_shards"].clone()).map_err(|e| {
                Error::Resume {
                    path: p.dir.join(MANIFEST),
                    reason: format!("`token_shards`: {e}"),
                }
            })?;
        for s in p.manifest.shards.iter().chain(&tokens) {
            link_or_copy(&p.dir.join(&s.file), &staging.join(&s.file))?;
        }
        shards.extend(p.manifest.shards.iter().cloned());
        token_shards.extend(tokens);
    }
    if let Some(v) = found[0].manifest.metadata["vocab_file"].as_str() {
        link_or_copy(&found[0].dir.join(v), &staging.join(v))?;
    }
    let mut metadata = shared_metadata(&found[0].manifest);
    metadata["token_shards"] = serde_json::to_value(&token_shards).unwrap_or(Value::Null);
    let first = &found[0].manifest;
    let manifest = Manifest::new(first.d_in, first.dtype, shards, metadata);
    write_json_atomic(&staging.join(MANIFEST), &manifest)?;
    std::fs::rename(&staging, dest).map_err(|e| Error::io(dest, e))?;
    Ok(manifest.rows)
}

/// Every part of one harvest, once, with the same settings, shards in order.
fn check_parts(found: &[Finished]) -> Result<()> {
    let bad = |dir: &Path, reason: String| Error::Resume {
        path: dir.to_path_buf(),
        reason,
    };
    let count = found[0].count;
    if found.len() != count || found.iter().enumerate().any(|(i, p)| p.index != i) {
        let have: Vec<usize> = found.iter().map(|p| p.index).collect();
        return Err(bad(
            &found[0].dir,
            format!(
                "the harvest has {count} parts; given parts {have:?} (each of 0..{count} once)"
            ),
        ));
    }
    let shared = shared_metadata(&found[0].manifest);
    let total = found[0].manifest.metadata["part"]["shards"]
        .as_u64()
        .unwrap_or(0) as usize;
    let mut next = 0;
    for p in found {
        let m = &p.manifest;
        if p.count != count || shared_metadata(m) != shared || m.d_in != found[0].manifest.d_in {
            return Err(bad(
                &p.dir,
                "is a part of another harvest (other settings, model or corpus than part 0)".into(),
            ));
        }
        for s in &m.shards {
            if s.file != shard_name(next) {
                return Err(bad(
                    &p.dir,
                    format!("expected shard {}, found {}", shard_name(next), s.file),
                ));
            }
            next += 1;
        }
    }
    if next != total {
        return Err(bad(
            &found[0].dir,
            format!("the parts hold {next} of {total} shards"),
        ));
    }
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to).map_err(|e| Error::io(from, e))?;
    Ok(())
}
