//! Dense and sparse kernels: the row-major [`Matrix`], GEMM through the `gemm` crate with an explicit
//! [`Parallelism`] knob, per-row top-k selection, and small helpers (row norms, power iteration).

mod amx;
pub mod bf16;
pub mod cholesky;
mod gemm;
pub mod int16;
mod matrix;
mod pool;
mod power;
mod rows;
pub mod simd;
mod topk;

pub use self::gemm::{matmul, synthesize, MatRef};
pub use matrix::Matrix;
pub use power::spectral_norm_sq;
pub use rows::{cosine, normalize_rows, row_norms};
pub(crate) use topk::BestK;
pub use topk::{topk_row, topk_row_shifted, TopK};

/// How many threads a kernel may use. Results are identical for the same value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Parallelism {
    /// Run on the calling thread only.
    Serial,
    /// Use up to this many threads of the current rayon pool.
    Threads(usize),
}

impl Parallelism {
    /// `Serial` for 0 or 1 thread, else `Threads(n)`.
    pub fn threads(n: usize) -> Self {
        if n <= 1 {
            Parallelism::Serial
        } else {
            Parallelism::Threads(n)
        }
    }

    /// Number of threads this allows (at least 1).
    pub fn count(self) -> usize {
        match self {
            Parallelism::Serial => 1,
            Parallelism::Threads(n) => n.max(1),
        }
    }

    /// Runs `f` on exactly [`Parallelism::count`] threads: inside the rayon pool of that size
    /// (one per size, built at first use and kept), so every `par_*` call under it runs on
    /// those threads whatever pool, if any, the caller is on. Already on a pool of that size,
    /// `f` just runs. Every library entry point that computes in parallel goes through here:
    /// nothing depends on rayon's global pool.
    pub fn install<R: Send>(self, f: impl FnOnce() -> R + Send) -> R {
        let n = self.count();
        if rayon::current_thread_index().is_some() && rayon::current_num_threads() == n {
            return f();
        }
        pool::of_size(n).install(f)
    }
}
