//! The processes of a job started by `mpirun` or Slurm's `srun`: with the `mpi` feature, MPI
//! is initialised here (on the main thread, finalised when [`Ranks`] drops) and commands that
//! run across ranks get its transport. Started directly, or built without MPI, one process.

use anyhow::{bail, Result};
use sparsecode::distributed::Transport;

/// This process's place in the job.
pub struct Ranks {
    /// Processes in the job.
    size: usize,
    #[cfg(feature = "mpi")]
    world: Option<sparsecode::distributed::mpi::MpiWorld>,
}

/// The job's size as Open MPI's or PMI's launcher variables give it (1 when started directly).
#[cfg(not(feature = "mpi"))]
fn launched_size() -> usize {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(1)
}

impl Ranks {
    /// Joins the job the launcher started (one process when there is none).
    #[cfg(feature = "mpi")]
    pub fn init() -> Result<Self> {
        let world = sparsecode::distributed::mpi::MpiWorld::from_launcher()?;
        let size = world.as_ref().map_or(1, |w| w.transport().size());
        Ok(Ranks { size, world })
    }

    /// Joins the job the launcher started (one process when there is none).
    #[cfg(not(feature = "mpi"))]
    pub fn init() -> Result<Self> {
        let size = launched_size();
        if size > 1 {
            bail!("started as one of {size} processes (mpirun/srun), but this sparsecode was built without MPI; build it with `cargo build --release --features mpi` (needs libopenmpi-dev and libclang-dev)");
        }
        Ok(Ranks { size })
    }

    /// The transport between the job's processes (None for a job of one).
    pub fn transport(&self) -> Option<Box<dyn Transport>> {
        #[cfg(feature = "mpi")]
        if let (Some(w), true) = (&self.world, self.size > 1) {
            return Some(Box::new(w.transport()));
        }
        None
    }

    /// Refuses `command` in a job of several processes (each would do the whole work and
    /// write the same outputs).
    pub fn refuse_if_many(&self, command: &str) -> Result<()> {
        if self.size > 1 {
            bail!("`{command}` does not run across processes; start it without mpirun/srun (`train`, `harvest`, `encode`, `eval` and `bench train` do)");
        }
        Ok(())
    }

    /// Ends the process with `code`, and every other process of the job with it (so none waits
    /// for this one at its next collective call).
    pub fn exit(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if let (Some(w), true) = (&self.world, self.size > 1) {
            w.abort(code);
        }
        std::process::exit(code)
    }
}
