//! What checking chunk hashes costs a reader: reads every row of a store in 8192-row blocks with
//! the check on and off (alternating, median of REPEATS), and hashes every shard whole with
//! SHA-256 as `store verify` does (the up-front alternative, a second pass over the data).
//!
//!     cargo run --release -p sparsecode --example store_read_verify -- [ROWS] [D_IN] [REPEATS]

use sparsecode::data::store::{Store, StoreDType, StoreWriter};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn read_all(store: &Store, out: &mut [f32]) -> sparsecode::Result<f64> {
    let d = store.manifest().d_in;
    let block = out.len() / d;
    let mut sum = 0.0f64;
    for (i, info) in store.manifest().shards.iter().enumerate() {
        let mut start = 0u64;
        while start < info.rows {
            let n = block.min((info.rows - start) as usize);
            store.read_shard_rows(i, start, &mut out[..n * d])?;
            sum += out[0] as f64;
            start += n as u64;
        }
    }
    Ok(sum)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let rows = *args.first().unwrap_or(&1_000_000);
    let d = *args.get(1).unwrap_or(&512);
    let repeats = *args.get(2).unwrap_or(&3);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("store");
    let mut w = StoreWriter::create(&path, d, StoreDType::F16, 65_536, false)?;
    let block: Vec<f32> = (0..8192 * d)
        .map(|i| ((i % 977) as f32 - 488.0) * 1e-3)
        .collect();
    for _ in 0..rows / 8192 {
        w.push(&block, "bench")?;
    }
    w.finish(serde_json::Value::Null)?;
    let gb = (rows / 8192 * 8192 * d * 2) as f64 / 1e9;
    let mut out = vec![0.0f32; 8192 * d];
    let (mut on, mut off, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeats {
        // A fresh open: every chunk is unchecked again.
        let store = Store::open(&path)?;
        let t = Instant::now();
        read_all(&store, &mut out)?;
        on.push(t.elapsed().as_secs_f64());
        let mut store = Store::open(&path)?;
        store.set_verify_reads(false);
        let t = Instant::now();
        read_all(&store, &mut out)?;
        off.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        store.verify()?;
        whole.push(t.elapsed().as_secs_f64());
    }
    let (on, off, whole) = (median(on), median(off), median(whole));
    println!("{rows} rows x {d} f16 ({gb:.2} GB, page cache warm), median of {repeats}:");
    println!(
        "  read, chunk hashes checked   {:.3} s  ({:.2} GB/s)",
        on,
        gb / on
    );
    println!(
        "  read, unchecked              {:.3} s  ({:.2} GB/s)",
        off,
        gb / off
    );
    println!("  checked / unchecked          {:.2}", on / off);
    println!(
        "  SHA-256 of every shard       {:.3} s  (the up-front alternative)",
        whole
    );
    Ok(())
}
