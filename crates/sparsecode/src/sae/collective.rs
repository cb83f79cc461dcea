//! The seam between one process's part of a training step and the whole step.
//!
//! A step runs in phases: (1) a collective phase for whatever depends on the whole batch
//! (BatchTopK's batch-level threshold), (2) the loss and gradients of this process's rows into
//! buffers, with every mean taken over the whole step's rows, (3) [`Collective::reduce`]: the
//! gradients and step statistics summed over processes, (4) the update, identical everywhere.
//! In one process ([`SingleProcess`]) every phase is a no-op or a local computation; a
//! data-parallel implementation (MPI) sums across ranks in a fixed order. Because the loss
//! functions divide by the total row count, summing the parts' gradients gives the gradient of
//! the whole batch, which `train`'s tests check for every architecture.

use super::params::Grads;
use super::LossParts;

/// What a step measured on its rows, as sums that add across processes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepStats {
    /// Loss terms, each already divided by the step's total row count.
    pub parts: LossParts,
    /// Which latents fired on these rows (OR-reduced).
    pub fired: Vec<bool>,
    /// Per-dimension sums of the rows (for the batch's mean, hence its variance).
    pub x_sum: Vec<f64>,
    /// Sum of the squared norms of the rows.
    pub x_sq: f64,
    /// Rows seen.
    pub rows: u64,
    /// BatchTopK: the step's batch-level threshold from the collective phase (the same in every
    /// process, so not summed).
    pub batch_threshold: f32,
}

impl StepStats {
    /// Adds the rows of the row-major batch `x` (width `d`) to the moment sums.
    pub fn observe_rows(&mut self, x: &[f32], d: usize) {
        self.x_sum.clear();
        self.x_sum.resize(d, 0.0);
        self.x_sq = 0.0;
        self.rows = 0;
        for row in x.chunks_exact(d.max(1)) {
            for (s, v) in self.x_sum.iter_mut().zip(row) {
                *s += *v as f64;
                self.x_sq += (*v as f64) * (*v as f64);
            }
            self.rows += 1;
        }
    }

    /// Adds another part's statistics (the reduction of a data-parallel step).
    pub fn add(&mut self, other: &StepStats) {
        let (a, b) = (&mut self.parts, &other.parts);
        a.loss += b.loss;
        a.recon += b.recon;
        a.sparsity += b.sparsity;
        a.l0 += b.l0;
        self.fired
            .iter_mut()
            .zip(&other.fired)
            .for_each(|(x, y)| *x |= y);
        self.x_sum
            .iter_mut()
            .zip(&other.x_sum)
            .for_each(|(x, y)| *x += y);
        self.x_sq += other.x_sq;
        self.rows += other.rows;
    }

    /// Sets `parts.variance` (`1/B sum_b ||x_b - mean||^2`) from the summed moments.
    pub fn finish(&mut self) {
        let b = self.rows as f64;
        self.parts.variance = if b > 0.0 {
            let mean_sq = self.x_sum.iter().map(|s| s * s).sum::<f64>() / b;
            ((self.x_sq - mean_sq) / b).max(0.0)
        } else {
            0.0
        };
    }
}

/// The collective operations of a step: one implementation per way of splitting the batch.
pub trait Collective: Send {
    /// The `count`-th largest of all processes' `values` together (0 when there are no more
    /// than `count` of them, or `count` is 0). `values` may be reordered. A step may call it
    /// more than once (the certified BatchTopK asks for a lower bound first, retrying while it
    /// comes back 0); every process makes the same calls in the same order.
    fn kth_largest(&mut self, values: &mut Vec<f32>, count: usize) -> f32;

    /// Sums the gradients and statistics of every process into each process's buffers.
    fn reduce(&mut self, grads: &mut Grads, stats: &mut StepStats);

    /// This process's block of latents when the dictionary is split across processes (None:
    /// this process holds every latent).
    fn latent_shard(&mut self) -> Option<&mut dyn LatentShard> {
        None
    }

    /// Replaces `values` by their element-wise sum over every process, added in process order
    /// (the same bits everywhere; nothing to do in one process). For counts a step needs
    /// before its gradients, such as a Switch SAE's rows per expert.
    fn sum_f64(&mut self, _values: &mut [f64]) {}

    /// Processes taking part in every step (1 here).
    fn ranks(&self) -> usize {
        1
    }

    /// The rows of a `rows`-row batch this process computes (all of them in one process).
    fn part(&self, rows: usize) -> std::ops::Range<usize> {
        0..rows
    }

    /// True in every process when `flag` is true in any (a stop asked for in one process
    /// stops all at the same step).
    fn any(&mut self, flag: bool) -> bool {
        flag
    }

    /// Checks that every process holds the same weights after `step`, comparing the digests
    /// `digest` computes (not called in one process).
    fn agree(&mut self, _step: u64, _digest: &dyn Fn() -> [u8; 32]) -> crate::Result<()> {
        Ok(())
    }
}

/// One block of a dictionary whose latents are split across processes (latent sharding):
/// this process holds latents `offset..offset + d_sae` of `total_latents` and sees the whole
/// batch; the exchanges a step needs with the other blocks' processes, each made by every
/// process in the same order.
pub trait LatentShard: Send {
    /// Index of this block's first latent in the whole dictionary.
    fn offset(&self) -> usize;
    /// Latents in this block.
    fn latents(&self) -> usize;
    /// Latents in the whole dictionary.
    fn total_latents(&self) -> usize;
    /// Every block's `send`, in block order.
    fn all_gather_bytes(&mut self, send: &[u8]) -> Vec<Vec<u8>>;
    /// Replaces `values` by their element-wise sum over blocks (the same bits everywhere).
    fn sum_f32(&mut self, values: &mut [f32]);
    /// The `count`-th largest of every block's `values` together (as
    /// [`Collective::kth_largest`]).
    fn gathered_kth(&mut self, values: &mut Vec<f32>, count: usize) -> f32 {
        let all = self.all_gather_bytes(&crate::io::le::f32_bytes(values));
        values.clear();
        for b in &all {
            values.extend(crate::io::le::f32s(b));
        }
        kth_largest_local(values, count)
    }

    /// The sum of `count` over blocks.
    fn sum_count(&mut self, count: u64) -> u64 {
        self.all_gather_bytes(&count.to_le_bytes())
            .iter()
            .map(|b| crate::io::le::leading_u64(b))
            .sum()
    }
}

/// One process holds the whole batch: nothing to exchange.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn kth_largest(&mut self, values: &mut Vec<f32>, count: usize) -> f32 {
        kth_largest_local(values, count)
    }

    fn reduce(&mut self, _grads: &mut Grads, _stats: &mut StepStats) {}
}

/// The `count`-th largest of `values` in one process (0 when there are no more than `count`, or `count` is 0).
pub(crate) fn kth_largest_local(values: &mut [f32], count: usize) -> f32 {
    if values.len() <= count || count == 0 {
        return 0.0;
    }
    let at = values.len() - count;
    let (_, v, _) = values.select_nth_unstable_by(at, |a, b| a.total_cmp(b));
    *v
}
