//! Sums and gathers that every rank computes identically, in rank order.
//!
//! The `f32` sum is a reduce-scatter followed by an all-gather: the vector is cut into `P`
//! blocks, rank `q` receives block `q` of every rank and adds them in rank order, then the summed
//! blocks are shared. Each rank sends `2(P-1)/P` of the vector, the volume of a ring
//! all-reduce, and the result has the same bits on every rank and on every repeat of a run at
//! the same `P` (MPI's own all-reduce may choose its summation order by message size and
//! topology, so it promises neither).

use super::Transport;
use crate::io::le;

/// Buffers for [`Reducer::sum_f32`], kept between steps.
#[derive(Debug, Default)]
pub struct Reducer {
    send: Vec<f32>,
    recv: Vec<f32>,
}

/// Values summed per exchange: bounds the scratch buffers (two of this many floats, 512 MiB)
/// and keeps every MPI count far below its C-int limit.
const PIECE: usize = 1 << 26;

impl Reducer {
    /// Replaces `values` on every rank by the element-wise sum over ranks, added in rank order.
    pub fn sum_f32(&mut self, t: &mut dyn Transport, values: &mut [f32]) {
        if t.size() <= 1 {
            return;
        }
        for piece in values.chunks_mut(PIECE) {
            self.sum_piece(t, piece);
        }
    }

    fn sum_piece(&mut self, t: &mut dyn Transport, values: &mut [f32]) {
        let p = t.size();
        let n = values.len();
        let block = n.div_ceil(p);
        self.send.clear();
        self.send.extend_from_slice(values);
        self.send.resize(block * p, 0.0);
        self.recv.resize(block * p, 0.0);
        t.all_to_all_f32(&self.send, &mut self.recv);
        let (acc, rest) = self.recv.split_at_mut(block);
        for from in rest.chunks_exact(block) {
            acc.iter_mut().zip(from).for_each(|(a, b)| *a += b);
        }
        t.all_gather_f32(acc, &mut self.send);
        values.copy_from_slice(&self.send[..n]);
    }
}

/// Every rank's `values`, in rank order.
pub fn gather_f64(t: &mut dyn Transport, values: &[f64]) -> Vec<Vec<f64>> {
    t.all_gather_bytes(&le::f64_bytes(values))
        .iter()
        .map(|b| le::f64s(b).collect())
        .collect()
}

/// Replaces `values` by every rank's values, in rank order.
pub fn gather_f32(t: &mut dyn Transport, values: &mut Vec<f32>) {
    let all = t.all_gather_bytes(&le::f32_bytes(values));
    values.clear();
    for b in &all {
        values.extend(le::f32s(b));
    }
}

/// Returns on every rank once every rank has called it (what one rank wrote to a shared file
/// system before is there for the others after).
pub fn barrier(t: &mut dyn Transport) {
    t.all_gather_bytes(&[]);
}

/// True on every rank when `flag` is true on any.
pub fn any(t: &mut dyn Transport, flag: bool) -> bool {
    t.all_gather_bytes(&[flag as u8])
        .iter()
        .any(|b| b.first() == Some(&1))
}

/// `flags` OR-ed over ranks (sent as bits).
pub fn or_bits(t: &mut dyn Transport, flags: &mut [bool]) {
    let mut bits = vec![0u8; flags.len().div_ceil(8)];
    for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
        bits[i / 8] |= 1 << (i % 8);
    }
    for other in t.all_gather_bytes(&bits) {
        for (i, f) in flags.iter_mut().enumerate() {
            *f |= other.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
        }
    }
}

/// A [`Transport`] that counts the bytes this rank sends to others (the payload: a gather
/// sends its buffer to each of the `P-1` others, an all-to-all all blocks but its own).
pub struct Metered<'a> {
    inner: &'a mut dyn Transport,
    /// Bytes sent so far.
    pub sent: u64,
}

impl<'a> Metered<'a> {
    /// Counts what goes through `inner`.
    pub fn new(inner: &'a mut dyn Transport) -> Self {
        Metered { inner, sent: 0 }
    }

    fn count(&mut self, bytes: usize, copies: usize) {
        self.sent += (bytes as u64).saturating_mul(copies as u64);
    }
}

impl Transport for Metered<'_> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_gather_bytes(&mut self, send: &[u8]) -> Vec<Vec<u8>> {
        self.count(send.len(), self.size() - 1);
        self.inner.all_gather_bytes(send)
    }
    fn all_to_all_f32(&mut self, send: &[f32], recv: &mut [f32]) {
        let p = self.size();
        self.count(send.len() / p * 4, p - 1);
        self.inner.all_to_all_f32(send, recv)
    }
    fn all_gather_f32(&mut self, send: &[f32], recv: &mut [f32]) {
        self.count(send.len() * 4, self.size() - 1);
        self.inner.all_gather_f32(send, recv)
    }
}
