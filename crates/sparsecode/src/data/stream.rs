//! Training batches from any [`RowSource`] (an in-memory matrix or an activation store), in an
//! order that is a pure function of (seed, step):
//!
//! - epoch `e` visits the shards in a seeded permutation, as one stream of rows;
//! - the stream is cut into windows of `window` rows (a multiple of the batch; the last window
//!   also takes the remainder), each loaded whole (sequential reads through the memory map) and
//!   shuffled by its own seeded permutation;
//! - batch `j` of a window is rows `perm[jB..(j+1)B]`; the few rows of the last window that do not
//!   fill a batch are skipped (different ones each epoch, as the permutation changes).
//!
//! So a resumed run reads exactly the batches an uninterrupted one would, without replaying the
//! stream. While a window is consumed a background thread loads and decodes the next one.
//! In-memory data is one window (a full shuffle) read in place, without copies.

use crate::data::store::Store;
use crate::{Error, Matrix, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc;

/// Where training rows come from.
pub trait RowSource: Sync {
    /// Total rows.
    fn rows(&self) -> u64;
    /// Row width.
    fn cols(&self) -> usize;
    /// Rows in each shard, in order.
    fn shard_rows(&self) -> Vec<u64>;
    /// Reads `out.len() / cols` rows of `shard` from row `start`.
    fn read(&self, shard: usize, start: u64, out: &mut [f32]) -> Result<()>;
    /// The first `n` rows (or all), for initialisation and evaluation.
    fn head(&self, n: u64) -> Result<Matrix>;
    /// The data as one matrix, when it is in memory (lets the batcher skip copies).
    fn as_matrix(&self) -> Option<&Matrix> {
        None
    }
    /// What to call this source in errors.
    fn describe(&self) -> String;
}

impl RowSource for Matrix {
    fn rows(&self) -> u64 {
        Matrix::rows(self) as u64
    }
    fn cols(&self) -> usize {
        Matrix::cols(self)
    }
    fn shard_rows(&self) -> Vec<u64> {
        vec![Matrix::rows(self) as u64]
    }
    fn read(&self, _shard: usize, start: u64, out: &mut [f32]) -> Result<()> {
        let a = start as usize * Matrix::cols(self);
        out.copy_from_slice(&self.as_slice()[a..a + out.len()]);
        Ok(())
    }
    fn head(&self, n: u64) -> Result<Matrix> {
        Ok(self.slice_rows(0, (n as usize).min(Matrix::rows(self))))
    }
    fn as_matrix(&self) -> Option<&Matrix> {
        Some(self)
    }
    fn describe(&self) -> String {
        "training data".into()
    }
}

impl RowSource for Store {
    fn rows(&self) -> u64 {
        self.manifest().rows
    }
    fn cols(&self) -> usize {
        self.manifest().d_in
    }
    fn shard_rows(&self) -> Vec<u64> {
        self.manifest().shards.iter().map(|s| s.rows).collect()
    }
    fn read(&self, shard: usize, start: u64, out: &mut [f32]) -> Result<()> {
        self.read_shard_rows(shard, start, out)
    }
    fn head(&self, n: u64) -> Result<Matrix> {
        Store::head(self, n)
    }
    fn describe(&self) -> String {
        format!("store {}", self.dir().display())
    }
}

/// A 2-D `.npy` file as one shard (its rows read through the map, non-finite values refused).
impl RowSource for crate::io::npy::NpyMap {
    fn rows(&self) -> u64 {
        self.matrix_shape().map_or(0, |s| s.0 as u64)
    }
    fn cols(&self) -> usize {
        self.matrix_shape().map_or(0, |s| s.1)
    }
    fn shard_rows(&self) -> Vec<u64> {
        vec![RowSource::rows(self)]
    }
    fn read(&self, _shard: usize, start: u64, out: &mut [f32]) -> Result<()> {
        let (rows, cols) = self.matrix_shape()?;
        let first = usize::try_from(start).unwrap_or(usize::MAX);
        let end = first.saturating_add(out.len() / cols.max(1));
        if end > rows {
            return Err(Error::shape(
                self.describe(),
                format!("rows within its {rows}"),
                format!("rows {first}..{end}"),
            ));
        }
        out.copy_from_slice(self.read_rows(first, end)?.as_slice());
        Ok(())
    }
    fn head(&self, n: u64) -> Result<Matrix> {
        let rows = self.matrix_shape()?.0;
        self.read_rows(0, (n.min(rows as u64)) as usize)
    }
    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

/// Rows `range` of `source` (over its shards, in order) as one matrix.
pub fn rows_of(source: &dyn RowSource, range: std::ops::Range<u64>) -> Result<Matrix> {
    let total = source.rows();
    if range.start > range.end || range.end > total {
        return Err(Error::shape(
            source.describe(),
            format!("rows within its {total}"),
            format!("rows {range:?}"),
        ));
    }
    let d = source.cols();
    let n = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
    crate::memory::admit_array("rows read", &[n, d], 4)?;
    let mut out = vec![0.0f32; n * d];
    let (mut first, mut done) = (0u64, 0usize);
    for (shard, rows) in source.shard_rows().into_iter().enumerate() {
        let (a, b) = (range.start.max(first), range.end.min(first + rows));
        if a < b {
            let len = (b - a) as usize;
            source.read(shard, a - first, &mut out[done * d..(done + len) * d])?;
            done += len;
        }
        first += rows;
    }
    Matrix::from_vec(n, d, out)
}

fn mix(seed: u64, stream: u64) -> u64 {
    crate::seed::sub_seed(seed, stream)
}

/// The batch order: which rows make up the batch of every step.
#[derive(Clone, Debug)]
pub struct Plan {
    seed: u64,
    batch: usize,
    window: u64,
    shard_rows: Vec<u64>,
    total: u64,
}

/// (epoch, window in epoch, batch in window).
type Position = (u64, u64, u64);

impl Plan {
    /// A plan for `source` with batches of `batch` rows and windows of about `window` rows
    /// (rounded down to a multiple of the batch; at least one batch).
    pub fn new(source: &dyn RowSource, batch: usize, window: u64, seed: u64) -> Result<Self> {
        let total = source.rows();
        if batch == 0 || batch as u64 > total {
            return Err(Error::param(
                "batch_size",
                format!("{batch} must be in 1..={total} (the number of samples)"),
            ));
        }
        let b = batch as u64;
        let window = (window.min(total) / b).max(1) * b;
        Ok(Plan {
            seed,
            batch,
            window,
            shard_rows: source.shard_rows(),
            total,
        })
    }

    fn windows_per_epoch(&self) -> u64 {
        (self.total / self.window).max(1)
    }

    /// Rows in window `w`: the last window also takes the rows that do not fill a whole window,
    /// so every row is in some window of every epoch.
    fn window_len(&self, w: u64) -> u64 {
        if w + 1 == self.windows_per_epoch() {
            self.total - w * self.window
        } else {
            self.window
        }
    }

    fn batches_per_full_window(&self) -> u64 {
        self.window / self.batch as u64
    }

    /// Optimiser steps in one pass over the data (rows beyond the last whole batch of the last
    /// window are skipped: a different random few each epoch).
    pub fn steps_per_epoch(&self) -> u64 {
        let last = self.windows_per_epoch() - 1;
        last * self.batches_per_full_window() + self.window_len(last) / self.batch as u64
    }

    fn locate(&self, step: u64) -> Position {
        let spe = self.steps_per_epoch();
        let (e, r) = (step / spe, step % spe);
        let per = self.batches_per_full_window();
        let last = self.windows_per_epoch() - 1;
        if r < last * per {
            (e, r / per, r % per)
        } else {
            (e, last, r - last * per)
        }
    }

    fn next_window(&self, e: u64, w: u64) -> (u64, u64) {
        if w + 1 < self.windows_per_epoch() {
            (e, w + 1)
        } else {
            (e + 1, 0)
        }
    }

    fn shard_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.shard_rows.len()).collect();
        if order.len() > 1 {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
                self.seed,
                0x5A4D ^ (epoch << 16),
            )));
        }
        order
    }

    fn window_perm(&self, e: u64, w: u64, len: u64, perm: &mut Vec<u32>) {
        perm.clear();
        perm.extend(0..len as u32);
        perm.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
            self.seed,
            0x317D ^ (e << 24) ^ w,
        )));
    }

    /// Reads window `w` of epoch `e` (rows in stream order) into `out`, checking finiteness.
    fn load(&self, source: &dyn RowSource, e: u64, w: u64, out: &mut Vec<f32>) -> Result<()> {
        let d = source.cols();
        let (start, len) = (w * self.window, self.window_len(w));
        out.resize(len as usize * d, 0.0);
        let mut filled = 0u64;
        let mut pos = 0u64; // stream position of the current shard's first row
        for s in self.shard_order(e) {
            let rows = self.shard_rows[s];
            let (lo, hi) = (start.max(pos), (start + len).min(pos + rows));
            if lo < hi {
                let dst = &mut out[filled as usize * d..(filled + hi - lo) as usize * d];
                source.read(s, lo - pos, dst)?;
                if let Some(i) = dst.iter().position(|v| !v.is_finite()) {
                    return Err(Error::NonFinite {
                        context: format!("{} (shard {s})", source.describe()),
                        row: (lo - pos) as usize + i / d,
                        col: i % d,
                        value: dst[i],
                    });
                }
                filled += hi - lo;
            }
            pos += rows;
            if pos >= start + len {
                break;
            }
        }
        Ok(())
    }
}

type Request = ((u64, u64), Vec<f32>);
type Reply = ((u64, u64), Result<Vec<f32>>);

/// Hands out the batch of any step, prefetching the next window on a background thread.
pub struct Batcher<'a> {
    plan: Plan,
    source: &'a dyn RowSource,
    key: Option<(u64, u64)>,
    data: Vec<f32>,
    perm: Vec<u32>,
    spare: Vec<f32>,
    requests: Option<mpsc::Sender<Request>>,
    replies: Option<mpsc::Receiver<Reply>>,
    in_flight: Option<(u64, u64)>,
}

impl<'a> Batcher<'a> {
    /// A batcher; with `scope`, windows of a source that is not in memory are prefetched by a
    /// thread of that scope.
    pub fn new<'scope>(
        plan: Plan,
        source: &'a dyn RowSource,
        scope: Option<&'scope std::thread::Scope<'scope, '_>>,
    ) -> Self
    where
        'a: 'scope,
    {
        let mut me = Batcher {
            plan,
            source,
            key: None,
            data: Vec::new(),
            perm: Vec::new(),
            spare: Vec::new(),
            requests: None,
            replies: None,
            in_flight: None,
        };
        if let (Some(scope), None) = (scope, source.as_matrix()) {
            let (req_tx, req_rx) = mpsc::channel::<Request>();
            let (rep_tx, rep_rx) = mpsc::channel::<Reply>();
            let plan = me.plan.clone();
            scope.spawn(move || {
                for ((e, w), mut buf) in req_rx {
                    let r = plan.load(source, e, w, &mut buf).map(|_| buf);
                    if rep_tx.send(((e, w), r)).is_err() {
                        break;
                    }
                }
            });
            me.requests = Some(req_tx);
            me.replies = Some(rep_rx);
        }
        me
    }

    fn enter(&mut self, e: u64, w: u64) -> Result<()> {
        let mut loaded = None;
        if let Some(k) = self.in_flight.take() {
            let (got, r) = self
                .replies
                .as_ref()
                .expect("a request is in flight only when the loader runs")
                .recv()
                .map_err(|_| Error::param("data", "the prefetch thread stopped"))?;
            debug_assert_eq!(got, k);
            let buf = r?;
            if k == (e, w) {
                loaded = Some(buf);
            } else {
                self.spare = buf;
            }
        }
        let old = std::mem::take(&mut self.data);
        if self.spare.capacity() < old.capacity() {
            self.spare = old;
        }
        self.data = match loaded {
            Some(buf) => buf,
            None => {
                let mut buf = std::mem::take(&mut self.spare);
                self.plan.load(self.source, e, w, &mut buf)?;
                buf
            }
        };
        self.plan
            .window_perm(e, w, self.plan.window_len(w), &mut self.perm);
        self.key = Some((e, w));
        if let Some(tx) = &self.requests {
            let next = self.plan.next_window(e, w);
            if tx.send((next, std::mem::take(&mut self.spare))).is_ok() {
                self.in_flight = Some(next);
            }
        }
        Ok(())
    }

    /// Writes the rows of the batch of `step` into `out` (`batch x cols`).
    pub fn batch(&mut self, step: u64, out: &mut [f32]) -> Result<()> {
        let d = self.source.cols();
        let (e, w, j) = self.plan.locate(step);
        let b = self.plan.batch;
        if let Some(m) = self.source.as_matrix() {
            // In memory: one window, no copy of the data.
            if self.key != Some((e, 0)) {
                self.plan.window_perm(e, 0, self.plan.total, &mut self.perm);
                self.key = Some((e, 0));
            }
            for (dst, &r) in out
                .chunks_mut(d)
                .zip(&self.perm[j as usize * b..(j as usize + 1) * b])
            {
                dst.copy_from_slice(m.row(r as usize));
            }
            return Ok(());
        }
        if self.key != Some((e, w)) {
            self.enter(e, w)?;
        }
        for (dst, &r) in out
            .chunks_mut(d)
            .zip(&self.perm[j as usize * b..(j as usize + 1) * b])
        {
            dst.copy_from_slice(&self.data[r as usize * d..(r as usize + 1) * d]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::store::{StoreDType, StoreWriter};

    fn collect(
        source: &dyn RowSource,
        batch: usize,
        window: u64,
        steps: u64,
        prefetch: bool,
    ) -> Vec<Vec<f32>> {
        let plan = Plan::new(source, batch, window, 9).unwrap();
        std::thread::scope(|s| {
            let mut b = Batcher::new(plan, source, prefetch.then_some(s));
            (0..steps)
                .map(|step| {
                    let mut out = vec![0.0; batch * source.cols()];
                    b.batch(step, &mut out).unwrap();
                    out
                })
                .collect()
        })
    }

    #[test]
    fn rows_of_reads_a_range_across_shards_and_refuses_one_past_the_end() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("s");
        let mut w = StoreWriter::create(&dir, 2, StoreDType::F32, 7, false).unwrap();
        let data: Vec<f32> = (0..30).flat_map(|i| [i as f32, -(i as f32)]).collect();
        w.push(&data, "t").unwrap();
        w.finish(serde_json::Value::Null).unwrap();
        let store = Store::open(&dir).unwrap();
        let m = rows_of(&store, 5..23).unwrap();
        assert_eq!(m.as_slice(), &data[10..46], "rows 5..23 over shards 0-3");
        assert_eq!(rows_of(&store, 9..9).unwrap().rows(), 0);
        assert!(rows_of(&store, 20..31).is_err());
        // A .npy file reads as one shard.
        let npy = t.path().join("x.npy");
        crate::io::write_matrix(&npy, &Matrix::from_vec(30, 2, data.clone()).unwrap()).unwrap();
        let map = crate::io::npy::NpyMap::open(&npy).unwrap();
        assert_eq!(rows_of(&map, 5..23).unwrap(), m);
        assert!(rows_of(&map, 0..31).is_err());
    }

    #[test]
    fn every_row_once_per_epoch_and_order_is_a_function_of_the_step() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("s");
        // Rows tagged by their index; 5 shards of 7 rows (35 rows), batches of 4, windows of 12
        // (the last one takes the remainder: 12 + 23 rows).
        let mut w = StoreWriter::create(&dir, 2, StoreDType::F32, 7, false).unwrap();
        let data: Vec<f32> = (0..35).flat_map(|i| [i as f32, -(i as f32)]).collect();
        w.push(&data, "t").unwrap();
        w.finish(serde_json::Value::Null).unwrap();
        let store = Store::open(&dir).unwrap();
        let plan = Plan::new(&store, 4, 12, 9).unwrap();
        // Windows of 12 and 23 rows: 3 + 5 batches.
        assert_eq!(plan.steps_per_epoch(), 8);
        let batches = collect(&store, 4, 12, 24, true);
        for epoch in 0..3 {
            let mut seen: Vec<i32> = batches[epoch * 8..(epoch + 1) * 8]
                .iter()
                .flat_map(|b| b.chunks(2).map(|r| r[0] as i32))
                .collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 32, "32 distinct rows per epoch (3 left over)");
        }
        assert_ne!(batches[0], batches[8], "epochs are shuffled differently");
        // Without prefetch, and starting anywhere (resume), the batches are the same.
        assert_eq!(collect(&store, 4, 12, 24, false), batches);
        let plan = Plan::new(&store, 4, 12, 9).unwrap();
        let mut b = Batcher::new(plan, &store, None);
        let mut out = vec![0.0; 8];
        b.batch(13, &mut out).unwrap();
        assert_eq!(out, batches[13]);
    }

    #[test]
    fn in_memory_source_is_one_full_shuffle() {
        let m = Matrix::from_fn(10, 1, |r, _| r as f32);
        let batches = collect(&m, 5, 1 << 20, 4, true);
        for e in 0..2 {
            let mut rows: Vec<i32> = batches[2 * e..2 * e + 2]
                .concat()
                .iter()
                .map(|v| *v as i32)
                .collect();
            rows.sort();
            assert_eq!(rows, (0..10).collect::<Vec<_>>());
        }
        assert!(Plan::new(&m, 11, 100, 0).is_err());
    }

    #[test]
    fn non_finite_rows_in_a_store_are_reported_with_their_shard() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("s");
        let mut w = StoreWriter::create(&dir, 1, StoreDType::F32, 4, false).unwrap();
        w.push(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], "t")
            .unwrap();
        w.finish(serde_json::Value::Null).unwrap();
        // Damage row 1 of shard 1 in place (same size, so the store still opens).
        let shard = dir.join("shard-00001.npy");
        let mut bytes = std::fs::read(&shard).unwrap();
        let at = bytes.len() - 12;
        bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&shard, &bytes).unwrap();
        // The chunk hash would catch the damage first; this test is about the NaN check behind it.
        let mut store = Store::open(&dir).unwrap();
        store.set_verify_reads(false);
        let plan = Plan::new(&store, 2, 8, 0).unwrap();
        let mut b = Batcher::new(plan, &store, None);
        let e = b.batch(0, &mut [0.0; 2]).unwrap_err().to_string();
        assert!(e.contains("shard 1") && e.contains("row 1"), "{e}");
    }
}
