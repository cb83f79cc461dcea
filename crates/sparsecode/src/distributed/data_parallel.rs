//! Data parallelism: every rank a slice of each step's batch, the same weights everywhere.

use super::reduce::{any, gather_f32, gather_f64, or_bits, Reducer};
use super::{part_of, Transport};
use crate::sae::{Collective, Grads, StepStats};
use crate::{Error, Result};

/// The [`Collective`] of a data-parallel run over `transport`'s ranks.
pub struct DataParallel<'a> {
    transport: &'a mut dyn Transport,
    reducer: Reducer,
}

impl<'a> DataParallel<'a> {
    /// Splits every step's batch over `transport`'s ranks.
    pub fn new(transport: &'a mut dyn Transport) -> Self {
        DataParallel {
            transport,
            reducer: Reducer::default(),
        }
    }
}

/// A step's statistics as numbers that add: the loss terms, the rows and the moment sums.
fn stats_to_f64(s: &StepStats) -> Vec<f64> {
    let p = &s.parts;
    let mut v = vec![p.loss, p.recon, p.sparsity, p.l0, s.x_sq, s.rows as f64];
    v.extend_from_slice(&s.x_sum);
    v
}

/// The inverse of [`stats_to_f64`] (the fired mask and threshold left as they are).
fn add_f64(s: &mut StepStats, v: &[f64]) {
    let p = &mut s.parts;
    if let [loss, recon, sparsity, l0, x_sq, rows, x_sum @ ..] = v {
        p.loss += loss;
        p.recon += recon;
        p.sparsity += sparsity;
        p.l0 += l0;
        s.x_sq += x_sq;
        s.rows += *rows as u64;
        s.x_sum.resize(x_sum.len(), 0.0);
        s.x_sum.iter_mut().zip(x_sum).for_each(|(a, b)| *a += b);
    }
}

impl Collective for DataParallel<'_> {
    fn kth_largest(&mut self, values: &mut Vec<f32>, count: usize) -> f32 {
        gather_f32(self.transport, values);
        crate::sae::kth_largest_local(values, count)
    }

    fn reduce(&mut self, grads: &mut Grads, stats: &mut StepStats) {
        for (_, g) in grads.named_mut() {
            self.reducer.sum_f32(self.transport, g);
        }
        or_bits(self.transport, &mut stats.fired);
        let all = gather_f64(self.transport, &stats_to_f64(stats));
        let mut sum = StepStats {
            fired: std::mem::take(&mut stats.fired),
            batch_threshold: stats.batch_threshold,
            ..StepStats::default()
        };
        for v in &all {
            add_f64(&mut sum, v);
        }
        *stats = sum;
    }

    fn sum_f64(&mut self, values: &mut [f64]) {
        let all = gather_f64(self.transport, values);
        values.fill(0.0);
        for v in &all {
            values.iter_mut().zip(v).for_each(|(a, b)| *a += b);
        }
    }

    fn ranks(&self) -> usize {
        self.transport.size()
    }

    fn part(&self, rows: usize) -> std::ops::Range<usize> {
        part_of(rows, self.transport.rank(), self.transport.size())
    }

    fn any(&mut self, flag: bool) -> bool {
        any(self.transport, flag)
    }

    fn agree(&mut self, step: u64, digest: &dyn Fn() -> [u8; 32]) -> Result<()> {
        let all = self.transport.all_gather_bytes(&digest());
        let differ: Vec<usize> = (0..all.len())
            .filter(|&r| all[r][..] != all[0][..])
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        Err(Error::Ranks {
            reason: format!(
                "after step {step} the weights of rank(s) {differ:?} differ from rank 0's (ranks running different binaries, or on CPUs whose kernels round differently)"
            ),
        })
    }
}
