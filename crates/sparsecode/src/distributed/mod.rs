//! Training across processes.
//!
//! A group of processes (ranks `0..P`) talks through a [`Transport`]: MPI under `mpirun` or
//! Slurm's `srun` (feature `mpi`, [`mpi::MpiTransport`]), or threads of one process
//! ([`LocalGroup`], for tests). On it sit the sums every rank computes identically
//! ([`reduce`]) and the two ways of splitting a step:
//!
//! - **data parallel** ([`DataParallel`]): rank `r` computes rows `⌊rB/P⌋..⌊(r+1)B/P⌋` of every
//!   step's batch (the batch of a step is a pure function of seed and step), then the gradients
//!   are summed, the fired masks OR-ed and the statistics added, in rank order, so every rank
//!   steps the same weights. Repeating a run at the same `P` gives the same bytes; at another
//!   `P` the sums group differently, so the weights agree within float rounding.
//! - **latent sharding** ([`sharded`]): rank `r` owns a contiguous block of latents (their
//!   encoder and decoder rows and Adam moments) and sees the whole batch.
//!
//! Every collective call is made by every rank in the same order; a rank that fails or dies
//! ends the job through the launcher (`mpirun` aborts the job when a rank exits non-zero;
//! `srun --kill-on-bad-exit=1` likewise), never by a hang of the survivors at their next call.

mod data_parallel;
mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod reduce;
/// Latent sharding (see the module docs).
pub mod sharded;

pub use data_parallel::DataParallel;
pub use local::LocalGroup;
pub use sharded::{block_of, join_blocks, LatentSharded};

/// The exchanges a group of ranks needs, each a collective call every rank makes.
pub trait Transport: Send {
    /// This process's rank, `0..size`.
    fn rank(&self) -> usize;
    /// Ranks in the group.
    fn size(&self) -> usize;
    /// Every rank's `send` (lengths may differ), in rank order.
    fn all_gather_bytes(&mut self, send: &[u8]) -> Vec<Vec<u8>>;
    /// `send` holds `size` blocks of equal length; block `q` goes to rank `q`. `recv` (as long
    /// as `send`) receives this rank's block from every rank, in rank order.
    fn all_to_all_f32(&mut self, send: &[f32], recv: &mut [f32]);
    /// `recv` (`size` times as long as `send`) receives every rank's `send`, in rank order.
    fn all_gather_f32(&mut self, send: &[f32], recv: &mut [f32]);
}

/// Rows `part.0..part.1` of `rows` that rank `rank` of `size` takes: contiguous, in rank order,
/// sizes differing by at most one.
pub fn part_of(rows: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let at = |r: usize| ((rows as u128 * r as u128) / size.max(1) as u128) as usize;
    at(rank)..at(rank + 1)
}

#[cfg(test)]
mod tests;
