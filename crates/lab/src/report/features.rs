//! One pass over a store's rows that keeps, for every feature (SAE latent, neuron or any
//! direction), what a dashboard or an interpretability score needs: how often it fires, its
//! largest activation, its top-N rows, and a uniform reservoir sample of its positive
//! activations (for quantile examples and the histogram). Memory is O(features x (N + R)),
//! independent of the number of rows, so a million-token store scans in constant space.

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use sparsecode::data::RowSource;
use sparsecode::linalg::TopK;
use sparsecode::sae::Codes;
use sparsecode::{Matrix, Parallelism, Result};

/// What to keep per feature.
#[derive(Clone, Copy, Debug)]
pub struct ScanConfig {
    /// Largest activations kept (with their rows).
    pub top_n: usize,
    /// Size of the reservoir of positive activations.
    pub reservoir: usize,
    /// Seed of the reservoir sampling.
    pub seed: u64,
    /// Threads of the scan (the encoder and the per-feature updates).
    pub par: Parallelism,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            top_n: 32,
            reservoir: 1024,
            seed: 0,
            par: Parallelism::Serial,
        }
    }
}

/// One feature's summary.
#[derive(Clone, Debug, Default)]
pub struct FeatureStats {
    /// Rows where the activation is > 0.
    pub count: u64,
    /// Largest activation (0 if it never fired).
    pub max: f32,
    /// Sum of positive activations.
    pub sum: f64,
    /// The `top_n` largest activations as (value, row), largest first after [`FeatureScan::finish`].
    pub top: Vec<(f32, u32)>,
    /// A uniform sample of the positive activations as (value, row), sorted ascending after
    /// [`FeatureScan::finish`].
    pub sample: Vec<(f32, u32)>,
    rng: Option<rand_chacha::ChaCha8Rng>,
}

impl FeatureStats {
    fn push(&mut self, v: f32, row: u32, cfg: &ScanConfig) {
        if v <= 0.0 {
            return;
        }
        self.count += 1;
        self.sum += v as f64;
        self.max = self.max.max(v);
        if self.top.len() < cfg.top_n {
            self.top.push((v, row));
        } else if let Some((i, _)) = self
            .top
            .iter()
            .enumerate()
            .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
            .filter(|(_, m)| v > m.0)
        {
            self.top[i] = (v, row);
        }
        // Reservoir sampling (algorithm R): every positive activation is kept with equal chance.
        if self.sample.len() < cfg.reservoir {
            self.sample.push((v, row));
        } else if let Some(rng) = self.rng.as_mut() {
            let j = rng.random_range(0..self.count);
            if (j as usize) < cfg.reservoir {
                self.sample[j as usize] = (v, row);
            }
        }
    }

    /// Fraction of rows where the feature fires.
    pub fn density(&self, rows: u64) -> f64 {
        if rows == 0 {
            0.0
        } else {
            self.count as f64 / rows as f64
        }
    }

    /// Mean of the positive activations.
    pub fn mean_active(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Per-feature summaries over a stream of activation chunks.
#[derive(Clone, Debug)]
pub struct FeatureScan {
    /// Rows seen.
    pub rows: u64,
    /// One entry per feature.
    pub features: Vec<FeatureStats>,
    cfg: ScanConfig,
}

impl FeatureScan {
    /// An empty scan over `n` features.
    pub fn new(n: usize, cfg: ScanConfig) -> Self {
        let features = (0..n)
            .map(|j| FeatureStats {
                rng: Some(rand_chacha::ChaCha8Rng::seed_from_u64(
                    sparsecode::seed::sub_seed(cfg.seed, j as u64),
                )),
                ..FeatureStats::default()
            })
            .collect();
        FeatureScan {
            rows: 0,
            features,
            cfg,
        }
    }

    /// Adds the activations of the next rows (`[rows, features]` dense or TopK slots).
    pub fn add(&mut self, codes: &Codes) {
        self.add_masked(codes, None)
    }

    /// Like [`FeatureScan::add`], but rows whose `keep` entry is false are counted in `rows` and
    /// otherwise ignored (e.g. rows without a full left context).
    pub fn add_masked(&mut self, codes: &Codes, keep: Option<&[bool]>) {
        let start = self.rows as u32;
        let kept = |r: usize| keep.is_none_or(|k| k[r]);
        let cfg = self.cfg;
        match codes {
            Codes::Dense(m) => {
                let n = m.cols();
                self.features.par_iter_mut().enumerate().for_each(|(j, f)| {
                    for r in (0..m.rows()).filter(|&r| kept(r)) {
                        f.push(m.as_slice()[r * n + j], start + r as u32, &cfg);
                    }
                });
                self.rows += m.rows() as u64;
            }
            Codes::Sparse(t) => {
                let rows = rows_of(t);
                // Bucket the slots by feature (rows stay in order), then update in parallel.
                let mut buckets: Vec<Vec<(f32, u32)>> = vec![Vec::new(); self.features.len()];
                for r in (0..rows).filter(|&r| kept(r)) {
                    for s in r * t.k..(r + 1) * t.k {
                        if t.values[s] > 0.0 {
                            buckets[t.indices[s] as usize].push((t.values[s], start + r as u32));
                        }
                    }
                }
                self.features
                    .par_iter_mut()
                    .zip(buckets.par_iter())
                    .for_each(|(f, b)| b.iter().for_each(|&(v, row)| f.push(v, row, &cfg)));
                self.rows += rows as u64;
            }
        }
    }

    /// Sorts the kept lists (top: largest first; sample: ascending) and drops the samplers.
    pub fn finish(mut self) -> Self {
        self.features.par_iter_mut().for_each(|f| {
            f.top
                .sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            f.sample
                .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            f.rng = None;
        });
        self
    }
}

fn rows_of(t: &TopK) -> usize {
    t.values.len().checked_div(t.k).unwrap_or(0)
}

/// Row filter of a scan: `keep(global_row)`.
pub type RowFilter<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// Scans the first `limit` rows of `source` (all if `None`) in chunks of `chunk` rows, turning
/// each chunk into feature activations with `encode`; rows `keep` rejects are skipped.
/// `on_chunk(rows_done)` reports progress.
#[allow(clippy::too_many_arguments)]
pub fn scan(
    source: &dyn RowSource,
    n_features: usize,
    limit: Option<u64>,
    chunk: usize,
    cfg: ScanConfig,
    encode: &(dyn Fn(&Matrix) -> Result<Codes> + Sync),
    keep: Option<RowFilter>,
    on_chunk: &mut (dyn FnMut(u64) + Send),
) -> Result<FeatureScan> {
    // Per feature: up to top_n + reservoir (value, row) pairs of 8 bytes; chunk rows of codes.
    let kept = cfg.top_n.saturating_add(cfg.reservoir);
    let what = "the feature scan (features x (top rows + reservoir), and a chunk of codes)";
    let summaries = sparsecode::memory::bytes_of(what, &[n_features, kept], 8)?;
    let codes = sparsecode::memory::bytes_of(what, &[n_features, chunk], 4)?;
    sparsecode::memory::admit(what, summaries.saturating_add(codes))?;
    cfg.par.install(|| {
        scan_on_pool(
            source, n_features, limit, chunk, cfg, encode, keep, on_chunk,
        )
    })
}

fn scan_on_pool(
    source: &dyn RowSource,
    n_features: usize,
    limit: Option<u64>,
    chunk: usize,
    cfg: ScanConfig,
    encode: &(dyn Fn(&Matrix) -> Result<Codes> + Sync),
    keep: Option<RowFilter>,
    on_chunk: &mut (dyn FnMut(u64) + Send),
) -> Result<FeatureScan> {
    let total = limit.unwrap_or(u64::MAX).min(source.rows());
    let d = source.cols();
    let mut scan = FeatureScan::new(n_features, cfg);
    let chunk = chunk.max(1);
    let mut buf = Vec::new();
    let mut done = 0u64;
    for (shard, &rows) in source.shard_rows().iter().enumerate() {
        let mut start = 0u64;
        while start < rows && done < total {
            let take = (rows - start).min(chunk as u64).min(total - done) as usize;
            buf.resize(take * d, 0.0);
            source.read(shard, start, &mut buf)?;
            let x = Matrix::from_vec(take, d, std::mem::take(&mut buf))?;
            let mask: Option<Vec<bool>> =
                keep.map(|k| (0..take as u64).map(|r| k(done + r)).collect());
            scan.add_masked(&encode(&x)?, mask.as_deref());
            buf = x.into_vec();
            start += take as u64;
            done += take as u64;
            on_chunk(done);
        }
    }
    Ok(scan.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_keeps_exact_top_rows_counts_and_a_uniform_sample() {
        // Feature 0 fires on every third row with value row index; feature 1 never.
        let rows = 3000usize;
        let x = Matrix::from_vec(
            rows,
            2,
            (0..rows)
                .flat_map(|r| [if r % 3 == 0 { r as f32 } else { 0.0 }, -1.0])
                .collect(),
        )
        .unwrap();
        let cfg = ScanConfig {
            top_n: 4,
            reservoir: 100,
            seed: 3,
            par: Parallelism::Threads(2),
        };
        let s = scan(
            &x,
            2,
            None,
            128,
            cfg,
            &|m| Ok(Codes::Dense(m.clone())),
            None,
            &mut |_| {},
        )
        .unwrap();
        let f = &s.features[0];
        assert_eq!(f.count, 999); // rows 3, 6, ..., 2997 (row 0 has value 0)
        assert_eq!(f.max, 2997.0);
        assert_eq!(
            f.top.iter().map(|t| t.1).collect::<Vec<_>>(),
            vec![2997, 2994, 2991, 2988]
        );
        assert_eq!(f.sample.len(), 100);
        // A uniform sample of 3..2997 has its median near the middle.
        let med = f.sample[50].0;
        assert!((1100.0..1900.0).contains(&med), "median {med}");
        assert!(f.sample.iter().all(|&(v, r)| v == r as f32 && r % 3 == 0));
        assert_eq!(s.features[1].count, 0);
        assert!((f.density(s.rows) - 0.333).abs() < 0.001);
        // A limit stops early; the same seed gives the same sample.
        let t = scan(
            &x,
            2,
            Some(300),
            64,
            cfg,
            &|m| Ok(Codes::Dense(m.clone())),
            None,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(t.rows, 300);
        let u = scan(
            &x,
            2,
            None,
            500,
            cfg,
            &|m| Ok(Codes::Dense(m.clone())),
            None,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(
            u.features[0].sample, f.sample,
            "chunking does not change the sample"
        );
        // A row filter drops rows from the summaries but not from the row count.
        let below_1000 = |r: u64| r < 1000;
        let dense = |m: &Matrix| Ok(Codes::Dense(m.clone()));
        let v = scan(
            &x,
            2,
            None,
            128,
            cfg,
            &dense,
            Some(&below_1000),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(v.rows, 3000);
        assert_eq!(v.features[0].max, 999.0);
        assert_eq!(v.features[0].count, 333);
    }

    #[test]
    fn sparse_codes_give_the_same_summary_as_dense() {
        let mut t = TopK::with_rows(3, 2);
        t.indices.copy_from_slice(&[0, 2, 1, 2, 0, 1]);
        t.values.copy_from_slice(&[1.0, 2.0, 3.0, 0.0, 5.0, 4.0]);
        let dense = t.to_dense(3);
        let cfg = ScanConfig::default();
        let mut a = FeatureScan::new(3, cfg);
        a.add(&Codes::Sparse(t));
        let mut b = FeatureScan::new(3, cfg);
        b.add(&Codes::Dense(dense));
        let (a, b) = (a.finish(), b.finish());
        for j in 0..3 {
            assert_eq!(a.features[j].top, b.features[j].top);
            assert_eq!(a.features[j].count, b.features[j].count);
        }
        assert_eq!(a.features[0].top, vec![(5.0, 2), (1.0, 0)]);
    }
}
