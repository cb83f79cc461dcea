//! Reading chosen rows of a store and a feature's activation on them: what the dashboard shows
//! around each context and what word intrusion scores.

use sparsecode::data::RowSource;
use sparsecode::sae::Codes;
use sparsecode::{Error, Matrix, Result};
use std::collections::HashMap;

/// Reads arbitrary rows (global indices) of a source into a matrix.
pub fn read_rows(source: &dyn RowSource, rows: &[u32]) -> Result<Matrix> {
    let d = source.cols();
    let shards = source.shard_rows();
    let mut starts = Vec::with_capacity(shards.len());
    let mut acc = 0u64;
    for &s in &shards {
        starts.push(acc);
        acc += s;
    }
    let mut out = vec![0.0f32; rows.len() * d];
    for (i, &r) in rows.iter().enumerate() {
        let r = r as u64;
        if r >= acc {
            return Err(Error::shape(
                source.describe(),
                format!("row < {acc}"),
                format!("row {r}"),
            ));
        }
        let s = starts.partition_point(|&st| st <= r) - 1;
        source.read(s, r - starts[s], &mut out[i * d..(i + 1) * d])?;
    }
    Matrix::from_vec(rows.len(), d, out)
}

/// Activations of `(row, feature)` pairs: the distinct rows are read and encoded once, in chunks.
pub fn activations_at(
    source: &dyn RowSource,
    pairs: &[(u32, u32)],
    encode: &(dyn Fn(&Matrix) -> Result<Codes> + Sync),
) -> Result<HashMap<(u32, u32), f32>> {
    let mut rows: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    rows.sort_unstable();
    rows.dedup();
    let mut wanted: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(r, f) in pairs {
        wanted.entry(r).or_default().push(f);
    }
    let mut out = HashMap::with_capacity(pairs.len());
    for chunk in rows.chunks(4096) {
        let x = read_rows(source, chunk)?;
        let codes = encode(&x)?;
        for (i, &r) in chunk.iter().enumerate() {
            for &f in &wanted[&r] {
                let v = match &codes {
                    Codes::Dense(m) => m.as_slice()[i * m.cols() + f as usize],
                    Codes::Sparse(t) => (i * t.k..(i + 1) * t.k)
                        .find(|&s| t.indices[s] == f)
                        .map(|s| t.values[s])
                        .unwrap_or(0.0),
                };
                out.insert((r, f), v);
            }
        }
    }
    Ok(out)
}
