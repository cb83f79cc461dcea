//! The [`Transport`] over MPI (feature `mpi`): the world of `mpirun` or Slurm's `srun`.
//!
//! MPI is initialised with `MPI_THREAD_SERIALIZED`: training runs its collective calls from a
//! worker thread of the run's pool (one call at a time, never concurrently), and the
//! [`MpiWorld`] that initialised MPI finalises it when dropped on the main thread.

use super::Transport;
use crate::{Error, Result};
use mpi::datatype::PartitionMut;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

/// Environment variables that a launcher sets for each process it starts: Open MPI's
/// `mpirun`, and PMI/PMIx (MPICH's launchers, Slurm's `srun`).
const LAUNCHER_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"];

/// MPI, initialised for this process; finalised when dropped.
pub struct MpiWorld {
    universe: Universe,
}

impl MpiWorld {
    /// Initialises MPI when a launcher started this process (None when run directly: one
    /// process, no MPI).
    pub fn from_launcher() -> Result<Option<Self>> {
        if !LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            return Ok(None);
        }
        let (universe, level) =
            mpi::initialize_with_threading(Threading::Serialized).ok_or_else(|| Error::Ranks {
                reason: "MPI was already initialised in this process".into(),
            })?;
        if level < Threading::Serialized {
            return Err(Error::Ranks {
                reason: format!(
                    "the MPI library grants thread level {level:?}; sparsecode needs Serialized"
                ),
            });
        }
        Ok(Some(MpiWorld { universe }))
    }

    /// A transport over every process of the job.
    pub fn transport(&self) -> MpiTransport {
        let world = self.universe.world();
        MpiTransport {
            rank: world.rank() as usize,
            size: world.size() as usize,
            world,
        }
    }

    /// Ends every process of the job with `code` (`MPI_Abort`): what a rank does on an error,
    /// so that the others do not wait for it at their next collective call.
    pub fn abort(&self, code: i32) -> ! {
        self.universe.world().abort(code)
    }
}

/// The world communicator as a [`Transport`].
pub struct MpiTransport {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
}

// SAFETY: MPI was initialised with MPI_THREAD_SERIALIZED, which allows calls from any thread
// as long as no two are concurrent; every call goes through `&mut self`, so they cannot be.
unsafe impl Send for MpiTransport {}

/// MPI counts are C ints: a message of more elements is refused (the job aborts with a message)
/// rather than truncated. The reductions cut their vectors into pieces well below this.
fn count(n: usize, what: &str) -> i32 {
    i32::try_from(n).unwrap_or_else(|_| {
        eprintln!("error: an MPI {what} of {n} elements exceeds MPI's count limit");
        std::process::exit(2)
    })
}

impl Transport for MpiTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_gather_bytes(&mut self, send: &[u8]) -> Vec<Vec<u8>> {
        // Every message carries one leading byte: an empty Vec<u8>'s dangling pointer is 1,
        // which Open MPI reads as MPI_IN_PLACE.
        let send: Vec<u8> = std::iter::once(0).chain(send.iter().copied()).collect();
        let mut counts = vec![0i32; self.size];
        self.world
            .all_gather_into(&count(send.len(), "gather"), &mut counts[..]);
        let mut displs = Vec::with_capacity(self.size);
        let mut total = 0usize;
        for &c in &counts {
            displs.push(count(total, "gather"));
            total += c.max(0) as usize;
        }
        let mut recv = vec![0u8; total];
        {
            let mut part = PartitionMut::new(&mut recv[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(&send[..], &mut part);
        }
        let mut out = Vec::with_capacity(self.size);
        let mut at = 0;
        for &c in &counts {
            let c = c.max(1) as usize;
            out.push(recv[at + 1..at + c].to_vec());
            at += c;
        }
        out
    }

    fn all_to_all_f32(&mut self, send: &[f32], recv: &mut [f32]) {
        count(send.len(), "all-to-all");
        self.world.all_to_all_into(send, recv);
    }

    fn all_gather_f32(&mut self, send: &[f32], recv: &mut [f32]) {
        count(recv.len(), "gather");
        self.world.all_gather_into(send, recv);
    }
}
