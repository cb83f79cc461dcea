//! The activation store: a folder of `.npy` shards (f32, f16, or bf16 bit patterns) plus a
//! `manifest.json` that lists every shard with its row count and SHA-256. Shards are read
//! through memory maps, so a store may be far larger than RAM; each shard is a plain `.npy` that
//! NumPy opens as it is (bf16 shards open as `uint16`: the manifest says how to read them).
//!
//! Integrity: a shard is written whole under a temporary name and renamed, and is listed in the
//! manifest only afterwards; opening checks every listed shard's header and exact length against
//! the manifest (a truncated or foreign shard is refused), and `verify` recomputes the hashes.

use crate::io::npy::{parse_header_any, to_npy_header};
use crate::io::{read_json, write_atomic, write_json_atomic, OutputDir};
use crate::{Error, Matrix, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "sparsecode-store";

/// How rows are stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16 (saved as `uint16` bit patterns in the `.npy`).
    Bf16,
}

impl StoreDType {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            StoreDType::F32 => 4,
            StoreDType::F16 | StoreDType::Bf16 => 2,
        }
    }

    fn descr(self) -> &'static str {
        match self {
            StoreDType::F32 => "<f4",
            StoreDType::F16 => "<f2",
            StoreDType::Bf16 => "<u2",
        }
    }

    fn encode(self, v: &[f32], out: &mut Vec<u8>) {
        match self {
            StoreDType::F32 => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            StoreDType::F16 => v
                .iter()
                .for_each(|x| out.extend_from_slice(&half::f16::from_f32(*x).to_le_bytes())),
            StoreDType::Bf16 => v
                .iter()
                .for_each(|x| out.extend_from_slice(&half::bf16::from_f32(*x).to_le_bytes())),
        }
    }

    fn decode(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            StoreDType::F32 => out
                .iter_mut()
                .zip(bytes.chunks_exact(4))
                .for_each(|(o, c)| *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            StoreDType::F16 => out
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .for_each(|(o, c)| *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
            StoreDType::Bf16 => out
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .for_each(|(o, c)| *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        }
    }
}

/// One shard in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// File name inside the store folder.
    pub file: String,
    /// Rows in the shard.
    pub rows: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
    /// Hashes of the data in chunks, checked as rows are read (absent in stores made before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunkHashes>,
}

/// Bytes of shard data covered by one chunk hash.
pub const CHUNK_BYTES: u64 = 8 << 20;

/// BLAKE3 hashes of consecutive `bytes`-sized pieces of a shard's data (after its header): a
/// reader checks each piece the first time it reads from it, so a flipped bit is caught as the
/// data is used, without a second pass over a store larger than memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkHashes {
    /// Data bytes per chunk (the last one may be shorter).
    pub bytes: u64,
    /// One hex hash per chunk, in order.
    pub blake3: Vec<String>,
}

impl ChunkHashes {
    /// The hashes of `data` in [`CHUNK_BYTES`] pieces.
    pub fn of(data: &[u8]) -> Self {
        ChunkHashes {
            bytes: CHUNK_BYTES,
            blake3: data
                .chunks(CHUNK_BYTES as usize)
                .map(|c| blake3::hash(c).to_hex().to_string())
                .collect(),
        }
    }
}

impl ShardInfo {
    /// The manifest entry of a shard file whose bytes are `bytes`, data from `data_offset` on.
    pub fn of(file: &str, rows: u64, bytes: &[u8], data_offset: usize) -> Self {
        ShardInfo {
            file: file.to_string(),
            rows,
            sha256: sha256_hex(bytes),
            chunks: Some(ChunkHashes::of(&bytes[data_offset.min(bytes.len())..])),
        }
    }
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always "sparsecode-store".
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// Width of every row.
    pub d_in: usize,
    /// On-disk value type.
    pub dtype: StoreDType,
    /// Total rows over all shards.
    pub rows: u64,
    /// The shards, in order.
    pub shards: Vec<ShardInfo>,
    /// Where the rows came from (files, model, hook, ...).
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// Writes a store shard by shard; rows are validated (finite, right width) on the way in.
pub struct StoreWriter {
    out: OutputDir,
    d_in: usize,
    dtype: StoreDType,
    shard_rows: usize,
    buf: Vec<u8>,
    buf_rows: usize,
    shards: Vec<ShardInfo>,
    rows: u64,
}

impl StoreWriter {
    /// Starts a store at `dest` (refused if it exists, unless `force`). `shard_rows` rows go in
    /// each shard (the last may be shorter).
    pub fn create(
        dest: &Path,
        d_in: usize,
        dtype: StoreDType,
        shard_rows: usize,
        force: bool,
    ) -> Result<Self> {
        if d_in == 0 {
            return Err(Error::param("d_in", "rows must have at least one value"));
        }
        if shard_rows == 0 {
            return Err(Error::param("shard_rows", "must be at least 1"));
        }
        Ok(StoreWriter {
            out: OutputDir::create(dest, force)?,
            d_in,
            dtype,
            shard_rows,
            buf: Vec::new(),
            buf_rows: 0,
            shards: Vec::new(),
            rows: 0,
        })
    }

    /// Appends row-major rows (`len` a multiple of `d_in`); `context` names their source in errors.
    pub fn push(&mut self, rows: &[f32], context: &str) -> Result<()> {
        if !rows.len().is_multiple_of(self.d_in) {
            return Err(Error::shape(
                context,
                format!("rows of width {}", self.d_in),
                format!("{} values", rows.len()),
            ));
        }
        for (r, row) in rows.chunks_exact(self.d_in).enumerate() {
            if let Some(c) = row.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    context: context.to_string(),
                    row: r,
                    col: c,
                    value: row[c],
                });
            }
            self.dtype.encode(row, &mut self.buf);
            self.buf_rows += 1;
            self.rows += 1;
            if self.buf_rows == self.shard_rows {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf_rows == 0 {
            return Ok(());
        }
        let file = shard_name(self.shards.len());
        let mut bytes = to_npy_header(self.dtype.descr(), &[self.buf_rows, self.d_in]);
        let header = bytes.len();
        bytes.extend_from_slice(&self.buf);
        write_atomic(&self.out.join(&file), &bytes)?;
        let info = ShardInfo::of(&file, self.buf_rows as u64, &bytes, header);
        self.shards.push(info);
        self.buf.clear();
        self.buf_rows = 0;
        Ok(())
    }

    /// Writes the last shard and the manifest, and moves the store into place.
    pub fn finish(mut self, metadata: serde_json::Value) -> Result<PathBuf> {
        self.flush()?;
        if self.rows == 0 {
            return Err(Error::Empty {
                context: "activation store".into(),
                reason: "no rows were written".into(),
            });
        }
        let manifest = Manifest::new(
            self.d_in,
            self.dtype,
            std::mem::take(&mut self.shards),
            metadata,
        );
        write_json_atomic(&self.out.join(MANIFEST), &manifest)?;
        self.out.commit()
    }
}

/// Bytes of one shard when the writer does not choose its rows.
pub const SHARD_BYTES: usize = 256 << 20;

/// Rows per shard of width `d_in` and `dtype` that make [`SHARD_BYTES`] (at least one).
pub fn default_shard_rows(d_in: usize, dtype: StoreDType) -> usize {
    (SHARD_BYTES / d_in.saturating_mul(dtype.size()).max(1)).max(1)
}

/// File name of shard `i`.
pub fn shard_name(i: usize) -> String {
    format!("shard-{i:05}.npy")
}

/// Writes one shard of row-major `rows` (width `d_in`, finite values) to `dir/file` atomically
/// and returns its manifest entry. For writers that manage their own progress (the harvester).
pub fn write_shard(
    dir: &Path,
    file: &str,
    rows: &[f32],
    d_in: usize,
    dtype: StoreDType,
) -> Result<ShardInfo> {
    let path = dir.join(file);
    if d_in == 0 || rows.is_empty() || !rows.len().is_multiple_of(d_in) {
        return Err(Error::shape(
            path.display().to_string(),
            format!("a non-empty multiple of {d_in} values"),
            format!("{} values", rows.len()),
        ));
    }
    if let Some(i) = rows.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            context: path.display().to_string(),
            row: i / d_in,
            col: i % d_in,
            value: rows[i],
        });
    }
    let n = rows.len() / d_in;
    let mut bytes = to_npy_header(dtype.descr(), &[n, d_in]);
    let header = bytes.len();
    bytes.reserve(rows.len() * dtype.size());
    dtype.encode(rows, &mut bytes);
    write_atomic(&path, &bytes)?;
    Ok(ShardInfo::of(file, n as u64, &bytes, header))
}

/// SHA-256 of bytes, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of a whole file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(sha256_hex(&bytes))
}

/// Checks `bytes`, the content of `path`, against the digest a manifest lists for it.
pub fn check_sha256(path: &Path, bytes: &[u8], expected: &str) -> Result<()> {
    let got = sha256_hex(bytes);
    if got != expected {
        return Err(Error::format(
            path,
            format!("SHA-256 {got} does not match the manifest's {expected}"),
        ));
    }
    Ok(())
}

impl Manifest {
    /// A version-1 manifest over `shards` (rows summed from them).
    pub fn new(
        d_in: usize,
        dtype: StoreDType,
        shards: Vec<ShardInfo>,
        metadata: serde_json::Value,
    ) -> Self {
        Manifest {
            format: FORMAT.into(),
            version: 1,
            d_in,
            dtype,
            rows: shards.iter().map(|s| s.rows).sum(),
            shards,
            metadata,
        }
    }
}

struct Shard {
    map: memmap2::Mmap,
    offset: usize,
    rows: u64,
    /// Chunk hashes and whether each chunk has been checked (empty: nothing to check).
    chunks: Vec<(String, std::sync::atomic::AtomicBool)>,
    chunk_bytes: usize,
    path: PathBuf,
}

/// An open store: memory-mapped shards checked against the manifest.
pub struct Store {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// Check chunk hashes as rows are read (on by default).
    verify_reads: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("rows", &self.manifest.rows)
            .field("d_in", &self.manifest.d_in)
            .finish()
    }
}

/// Files a manifest lists must be plain names of files inside the store (no folder part, no
/// `..`, not absolute) and each listed once: a manifest cannot make a reader open files
/// elsewhere, or read one shard twice and drop another.
pub fn check_file_names<'a>(
    manifest: &Path,
    field: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        // `file_name` is None for "", "." and "..", and differs from `name` when it has a folder
        // part; a backslash is a folder separator elsewhere.
        let plain = Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name);
        if !plain || name.contains('\\') {
            return Err(Error::format(
                manifest,
                format!(
                    "`{field}` lists '{name}': expected the plain name of a file inside the store"
                ),
            ));
        }
        if !seen.insert(name) {
            return Err(Error::format(
                manifest,
                format!("`{field}` lists '{name}' twice"),
            ));
        }
    }
    Ok(())
}

/// A shard's chunk hashes, each not yet checked, after checking that they cover its `data_len`
/// bytes (no hashes: an older store, nothing to check).
type ChunkTable = (Vec<(String, std::sync::atomic::AtomicBool)>, usize);

fn chunk_table(path: &Path, info: &ShardInfo, data_len: usize) -> Result<ChunkTable> {
    let Some(c) = &info.chunks else {
        return Ok((Vec::new(), 1));
    };
    let bytes = usize::try_from(c.bytes).unwrap_or(0);
    if bytes == 0 || c.blake3.len() != data_len.div_ceil(bytes) {
        return Err(Error::format(
            path,
            format!(
                "the manifest's chunk hashes ({} of {} bytes) do not cover the shard's {data_len} data bytes",
                c.blake3.len(),
                c.bytes
            ),
        ));
    }
    let table = c.blake3.iter().map(|h| (h.clone(), false.into())).collect();
    Ok((table, bytes))
}

/// The bytes of a `[rows, d_in]` shard of `dtype` after its header, if that fits in memory sizes.
fn shard_bytes(rows: u64, d_in: usize, dtype: StoreDType, offset: usize) -> Option<usize> {
    usize::try_from(rows)
        .ok()?
        .checked_mul(d_in)?
        .checked_mul(dtype.size())?
        .checked_add(offset)
}

impl Store {
    /// Opens the store in `dir`, mapping every shard and checking its header and exact size.
    pub fn open(dir: &Path) -> Result<Self> {
        let mpath = dir.join(MANIFEST);
        if !mpath.exists() {
            return Err(Error::format(
                dir,
                format!("not an activation store: no {MANIFEST}"),
            ));
        }
        let manifest: Manifest = read_json(&mpath)?;
        if manifest.format != FORMAT || manifest.version != 1 {
            return Err(Error::format(
                &mpath,
                format!(
                    "format '{}' version {} (expected '{FORMAT}' version 1)",
                    manifest.format, manifest.version
                ),
            ));
        }
        check_file_names(
            &mpath,
            "shards",
            manifest.shards.iter().map(|s| s.file.as_str()),
        )?;
        let listed = (manifest.shards.iter())
            .try_fold(0u64, |a, s| a.checked_add(s.rows))
            .ok_or_else(|| Error::format(&mpath, "the shards' row counts overflow"))?;
        if listed != manifest.rows {
            return Err(Error::format(
                &mpath,
                format!(
                    "shards hold {listed} rows but the manifest says {}",
                    manifest.rows
                ),
            ));
        }
        let mut shards = Vec::with_capacity(manifest.shards.len());
        for info in &manifest.shards {
            let path = dir.join(&info.file);
            let map = crate::io::map_file(&path, "a .npy shard")?;
            let (descr, shape, offset) = parse_header_any(&path, &map)?;
            if descr != manifest.dtype.descr() || shape != [info.rows as usize, manifest.d_in] {
                return Err(Error::format(
                    &path,
                    format!(
                        "shard holds {descr} {shape:?}, the manifest says {} [{}, {}]",
                        manifest.dtype.descr(),
                        info.rows,
                        manifest.d_in
                    ),
                ));
            }
            let need = shard_bytes(info.rows, manifest.d_in, manifest.dtype, offset)
                .ok_or_else(|| Error::format(&path, "the shard's size overflows"))?;
            if map.len() != need {
                return Err(Error::format(
                    &path,
                    format!(
                        "shard is {} bytes, expected {need} (truncated or partial shard)",
                        map.len()
                    ),
                ));
            }
            let (chunks, chunk_bytes) = chunk_table(&path, info, need - offset)?;
            shards.push(Shard {
                map,
                offset,
                rows: info.rows,
                chunks,
                chunk_bytes,
                path,
            });
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            manifest,
            shards,
            verify_reads: true,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The store folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether reads check the chunk hashes (default true; `--no-verify` turns it off).
    pub fn set_verify_reads(&mut self, on: bool) {
        self.verify_reads = on;
    }

    /// Checks the chunks of `shard` that data bytes `lo..hi` fall in, once each.
    fn check_chunks(&self, shard: usize, lo: usize, hi: usize) -> Result<()> {
        use std::sync::atomic::Ordering;
        let s = &self.shards[shard];
        if !self.verify_reads || s.chunks.is_empty() || hi <= lo {
            return Ok(());
        }
        let data = &s.map[s.offset..];
        for c in lo / s.chunk_bytes..=(hi - 1) / s.chunk_bytes {
            let (want, checked) = &s.chunks[c];
            if checked.load(Ordering::Acquire) {
                continue;
            }
            let a = c * s.chunk_bytes;
            let piece = &data[a..(a + s.chunk_bytes).min(data.len())];
            if blake3::hash(piece).to_hex().as_str() != want {
                return Err(Error::format(
                    &s.path,
                    format!("data bytes {a}..{} (chunk {c}) do not match the manifest's hash: the shard changed or is corrupt (`store verify` checks every shard; --no-verify skips this check)", a + piece.len()),
                ));
            }
            checked.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Recomputes every shard's SHA-256 and compares it with the manifest.
    pub fn verify(&self) -> Result<()> {
        for (info, shard) in self.manifest.shards.iter().zip(&self.shards) {
            check_sha256(&self.dir.join(&info.file), &shard.map, &info.sha256)?;
        }
        Ok(())
    }

    /// Reads `out.len() / d_in` rows of shard `shard` from row `start`, as f32.
    pub fn read_shard_rows(&self, shard: usize, start: u64, out: &mut [f32]) -> Result<()> {
        let d = self.manifest.d_in;
        let s = &self.shards[shard];
        let count = (out.len() / d) as u64;
        if start + count > s.rows {
            return Err(Error::shape(
                format!("shard {shard}"),
                format!("rows < {}", s.rows),
                format!("rows {start}..{}", start + count),
            ));
        }
        let size = self.manifest.dtype.size();
        let (lo, len) = (start as usize * d * size, count as usize * d * size);
        self.check_chunks(shard, lo, lo + len)?;
        let a = s.offset + lo;
        self.manifest.dtype.decode(&s.map[a..a + len], out);
        Ok(())
    }

    /// The first `n` rows (or all) as a matrix: for initialisation and evaluation samples.
    pub fn head(&self, n: u64) -> Result<Matrix> {
        let n = n.min(self.manifest.rows);
        let d = self.manifest.d_in;
        let mut out = vec![0.0f32; n as usize * d];
        let mut done = 0u64;
        for (i, s) in self.shards.iter().enumerate() {
            if done == n {
                break;
            }
            let take = (n - done).min(s.rows);
            self.read_shard_rows(
                i,
                0,
                &mut out[done as usize * d..(done + take) as usize * d],
            )?;
            done += take;
        }
        Matrix::from_vec(n as usize, d, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, d: usize) -> Vec<f32> {
        (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect()
    }

    #[test]
    fn round_trip_every_dtype_and_shard_boundaries() {
        let t = tempfile::tempdir().unwrap();
        for dtype in [StoreDType::F32, StoreDType::F16, StoreDType::Bf16] {
            let dir = t.path().join(format!("{dtype:?}"));
            let mut w = StoreWriter::create(&dir, 3, dtype, 4, false).unwrap();
            let data = rows(10, 3);
            w.push(&data[..9], "a").unwrap();
            w.push(&data[9..], "b").unwrap();
            w.finish(serde_json::json!({"source": "test"})).unwrap();
            let s = Store::open(&dir).unwrap();
            assert_eq!(s.manifest().rows, 10);
            assert_eq!(
                s.manifest()
                    .shards
                    .iter()
                    .map(|x| x.rows)
                    .collect::<Vec<_>>(),
                vec![4, 4, 2]
            );
            s.verify().unwrap();
            let head = s.head(100).unwrap();
            let tol = match dtype {
                StoreDType::F32 => 0.0,
                StoreDType::F16 => 1e-3,
                StoreDType::Bf16 => 1e-2,
            };
            for (a, b) in head.as_slice().iter().zip(&data) {
                assert!((a - b).abs() <= tol, "{dtype:?}: {a} vs {b}");
            }
            // A shard is a plain .npy file (f32 and f16 read back with the ordinary reader).
            if dtype != StoreDType::Bf16 {
                let m = crate::io::read_matrix(&dir.join("shard-00001.npy")).unwrap();
                assert_eq!(m.shape(), (4, 3));
            }
        }
    }

    #[test]
    fn damaged_stores_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("s");
        let mut w = StoreWriter::create(&dir, 2, StoreDType::F32, 3, false).unwrap();
        w.push(&rows(7, 2), "x").unwrap();
        w.finish(serde_json::Value::Null).unwrap();
        // Flipped byte: opens (sizes agree) but fails verification.
        let shard = dir.join("shard-00001.npy");
        let mut bytes = std::fs::read(&shard).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&shard, &bytes).unwrap();
        let e = Store::open(&dir).unwrap().verify().unwrap_err().to_string();
        assert!(
            e.contains("shard-00001.npy") && e.contains("SHA-256"),
            "{e}"
        );
        // Truncated shard: refused at open.
        std::fs::write(&shard, &bytes[..bytes.len() - 4]).unwrap();
        let e = Store::open(&dir).unwrap_err().to_string();
        assert!(e.contains("shard-00001.npy"), "{e}");
        // Manifest whose rows disagree with its shards.
        let mpath = dir.join(MANIFEST);
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
        m["rows"] = serde_json::json!(99);
        std::fs::write(&mpath, m.to_string()).unwrap();
        assert!(Store::open(&dir).unwrap_err().to_string().contains("99"));
        // Not a store; non-finite input; empty store.
        assert!(Store::open(t.path())
            .unwrap_err()
            .to_string()
            .contains("not an activation store"));
        let mut w = StoreWriter::create(&t.path().join("n"), 2, StoreDType::F32, 3, false).unwrap();
        let e = w
            .push(&[1.0, 2.0, f32::NAN, 0.0], "input.npy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("input.npy") && e.contains("row 1"), "{e}");
        let w = StoreWriter::create(&t.path().join("e"), 2, StoreDType::F32, 3, false).unwrap();
        assert!(w.finish(serde_json::Value::Null).is_err());
        assert!(
            !t.path().join("e").exists(),
            "a failed store leaves nothing behind"
        );
    }
}

/// Rows converted per chunk while importing.
const IMPORT_CHUNK_ROWS: usize = 8192;

/// One input file of [`import_files`], opened and checked.
enum Input {
    Npy(crate::io::npy::NpyMap),
    Tensor {
        map: memmap2::Mmap,
        name: String,
        dtype: safetensors::Dtype,
        offset: usize,
    },
}

fn open_input(path: &Path, tensor: Option<&str>) -> Result<(Input, usize, usize)> {
    let map = crate::io::map_file(path, "a .npy or safetensors file")?;
    if map.starts_with(b"\x93NUMPY") {
        drop(map);
        let n = crate::io::npy::NpyMap::open(path)?;
        if n.shape().len() != 2 {
            return Err(Error::shape(
                path.display().to_string(),
                "a 2-D array [rows, d_in]",
                format!("shape {:?}", n.shape()),
            ));
        }
        let (r, c) = (n.shape()[0], n.shape()[1]);
        return Ok((Input::Npy(n), r, c));
    }
    let st = safetensors::SafeTensors::deserialize(&map)
        .map_err(|e| Error::format(path, format!("neither a .npy nor a safetensors file ({e})")))?;
    let two_d: Vec<String> = st
        .tensors()
        .into_iter()
        .filter(|(_, v)| v.shape().len() == 2)
        .map(|(n, _)| n)
        .collect();
    let name = match tensor {
        Some(t) => t.to_string(),
        None if two_d.len() == 1 => two_d[0].clone(),
        None => {
            return Err(Error::param(
                "tensor",
                format!(
                    "{} holds {} 2-D tensors ({}): name one with --tensor",
                    path.display(),
                    two_d.len(),
                    two_d.join(", ")
                ),
            ))
        }
    };
    let view = st
        .tensor(&name)
        .map_err(|_| Error::format(path, format!("no tensor named '{name}'")))?;
    if view.shape().len() != 2 {
        return Err(Error::shape(
            format!("{}: tensor '{name}'", path.display()),
            "2-D [rows, d_in]",
            format!("{:?}", view.shape()),
        ));
    }
    let dtype = view.dtype();
    if !matches!(
        dtype,
        safetensors::Dtype::F32
            | safetensors::Dtype::F16
            | safetensors::Dtype::BF16
            | safetensors::Dtype::F64
    ) {
        return Err(Error::format(
            path,
            format!("tensor '{name}' has dtype {dtype:?} (expected F32, F16, BF16 or F64)"),
        ));
    }
    let (rows, cols) = (view.shape()[0], view.shape()[1]);
    let offset = view.data().as_ptr() as usize - map.as_ptr() as usize;
    Ok((
        Input::Tensor {
            map,
            name,
            dtype,
            offset,
        },
        rows,
        cols,
    ))
}

impl Input {
    fn read(&self, row: usize, cols: usize, out: &mut [f32]) {
        match self {
            Input::Npy(n) => n.read_values(row * cols, out),
            Input::Tensor {
                map, dtype, offset, ..
            } => {
                use safetensors::Dtype;
                let size = dtype.bitsize() / 8;
                let a = offset + row * cols * size;
                let data = &map[a..a + out.len() * size];
                match dtype {
                    Dtype::F32 => StoreDType::F32.decode(data, out),
                    Dtype::F16 => StoreDType::F16.decode(data, out),
                    Dtype::BF16 => StoreDType::Bf16.decode(data, out),
                    _ => out.iter_mut().zip(data.chunks_exact(8)).for_each(|(o, c)| {
                        *o = f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32
                    }),
                }
            }
        }
    }

    fn describe(&self, path: &Path) -> String {
        match self {
            Input::Npy(_) => path.display().to_string(),
            Input::Tensor { name, .. } => format!("{}: tensor '{name}'", path.display()),
        }
    }
}

/// Row width of an input file of [`import_files`] (checks the file on the way).
pub fn input_width(path: &Path, tensor: Option<&str>) -> Result<usize> {
    Ok(open_input(path, tensor)?.2)
}

/// Builds a store at `dest` from `.npy` and safetensors files (all of the same width), streaming
/// them through memory maps. `progress` is told the rows written so far and the total.
pub fn import_files(
    inputs: &[PathBuf],
    dest: &Path,
    dtype: StoreDType,
    shard_rows: usize,
    tensor: Option<&str>,
    force: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest> {
    if inputs.is_empty() {
        return Err(Error::param("from", "give at least one input file"));
    }
    let mut opened = Vec::with_capacity(inputs.len());
    for p in inputs {
        opened.push(open_input(p, tensor)?);
    }
    let d = opened[0].2;
    for ((inp, _, c), p) in opened.iter().zip(inputs) {
        if *c != d {
            return Err(Error::shape(
                inp.describe(p),
                format!("rows of width {d} (like {})", inputs[0].display()),
                format!("width {c}"),
            ));
        }
    }
    let total: u64 = opened.iter().map(|(_, r, _)| *r as u64).sum();
    let mut w = StoreWriter::create(dest, d, dtype, shard_rows, force)?;
    let mut buf = vec![0.0f32; IMPORT_CHUNK_ROWS * d];
    let mut done = 0u64;
    let mut sources = Vec::new();
    for ((inp, rows, _), p) in opened.iter().zip(inputs) {
        let mut r = 0;
        while r < *rows {
            let n = IMPORT_CHUNK_ROWS.min(rows - r);
            inp.read(r, d, &mut buf[..n * d]);
            w.push(
                &buf[..n * d],
                &format!("{} (from row {r})", inp.describe(p)),
            )?;
            r += n;
            done += n as u64;
            progress(done, total);
        }
        sources.push(serde_json::json!({ "file": p, "rows": rows }));
    }
    let dir = w.finish(serde_json::json!({ "sources": sources }))?;
    Ok(Store::open(&dir)?.manifest().clone())
}

#[cfg(test)]
mod import_tests {
    use super::*;

    #[test]
    fn imports_npy_and_safetensors_and_checks_widths() {
        let t = tempfile::tempdir().unwrap();
        let a = Matrix::from_fn(5, 3, |r, c| (r * 3 + c) as f32);
        let np = t.path().join("a.npy");
        crate::io::write_matrix(&np, &a).unwrap();
        let st = t.path().join("b.safetensors");
        let bvals: Vec<f32> = (0..6).map(|i| 100.0 + i as f32).collect();
        crate::io::tensors::write_tensors(
            &st,
            &[("acts", vec![2, 3], &bvals), ("bias", vec![3], &[0.0; 3])],
            None,
        )
        .unwrap();
        let dest = t.path().join("s");
        let m = import_files(
            &[np.clone(), st.clone()],
            &dest,
            StoreDType::F32,
            4,
            None,
            false,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!((m.rows, m.d_in, m.shards.len()), (7, 3, 2));
        let all = Store::open(&dest).unwrap().head(7).unwrap();
        assert_eq!(&all.as_slice()[..15], a.as_slice());
        assert_eq!(&all.as_slice()[15..], &bvals[..]);
        let narrow = t.path().join("n.npy");
        crate::io::write_matrix(&narrow, &Matrix::zeros(2, 4)).unwrap();
        let e = import_files(
            &[np, narrow],
            &t.path().join("x"),
            StoreDType::F32,
            4,
            None,
            false,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("n.npy") && e.to_string().contains("width 4"),
            "{e}"
        );
        let e = import_files(
            &[st],
            &t.path().join("y"),
            StoreDType::F32,
            4,
            Some("nope"),
            false,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
