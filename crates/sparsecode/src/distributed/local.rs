//! Ranks as threads of one process: a [`Transport`] for tests, and for running the distributed
//! code paths without MPI.

use super::Transport;
use std::sync::{Arc, Barrier, Mutex};

/// What the ranks of a [`LocalGroup`] share: one slot per rank and a barrier.
struct Shared {
    barrier: Barrier,
    bytes: Mutex<Vec<Vec<u8>>>,
    floats: Mutex<Vec<Vec<f32>>>,
}

/// One rank of a group of threads (made by [`LocalGroup::new`]; move each into its own thread).
pub struct LocalGroup {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl LocalGroup {
    /// The `size` ranks of a new group.
    pub fn new(size: usize) -> Vec<LocalGroup> {
        let size = size.max(1);
        let shared = Arc::new(Shared {
            barrier: Barrier::new(size),
            bytes: Mutex::new(vec![Vec::new(); size]),
            floats: Mutex::new(vec![Vec::new(); size]),
        });
        (0..size)
            .map(|rank| LocalGroup {
                rank,
                size,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Publishes `value` in this rank's slot of `slots`, waits for every rank, reads them all
    /// with `read`, and waits again so that no slot is overwritten before all have read.
    fn exchange<T: Clone, R>(
        &self,
        slots: &Mutex<Vec<Vec<T>>>,
        value: &[T],
        read: impl FnOnce(&[Vec<T>]) -> R,
    ) -> R {
        slots.lock().unwrap_or_else(|e| e.into_inner())[self.rank] = value.to_vec();
        self.shared.barrier.wait();
        let out = read(&slots.lock().unwrap_or_else(|e| e.into_inner()));
        self.shared.barrier.wait();
        out
    }
}

impl Transport for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather_bytes(&mut self, send: &[u8]) -> Vec<Vec<u8>> {
        self.exchange(&self.shared.bytes, send, |all| all.to_vec())
    }

    fn all_to_all_f32(&mut self, send: &[f32], recv: &mut [f32]) {
        let (rank, size) = (self.rank, self.size);
        let block = send.len() / size;
        self.exchange(&self.shared.floats, send, |all| {
            for (q, from) in all.iter().enumerate() {
                recv[q * block..(q + 1) * block]
                    .copy_from_slice(&from[rank * block..(rank + 1) * block]);
            }
        })
    }

    fn all_gather_f32(&mut self, send: &[f32], recv: &mut [f32]) {
        let n = send.len();
        self.exchange(&self.shared.floats, send, |all| {
            for (q, from) in all.iter().enumerate() {
                recv[q * n..(q + 1) * n].copy_from_slice(from);
            }
        })
    }
}
