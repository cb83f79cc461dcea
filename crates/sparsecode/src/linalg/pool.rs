//! One rayon pool per thread count, built at first use and kept for the life of the process
//! (building a pool spawns its threads; experiments call kernels thousands of times).

use rayon::{ThreadPool, ThreadPoolBuilder};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

static POOLS: OnceLock<Mutex<BTreeMap<usize, Arc<ThreadPool>>>> = OnceLock::new();

/// The pool of `n` threads. A pool that the system refuses to build (no threads left) falls back
/// to one of a single thread, which always works: the results are those of that count.
pub(super) fn of_size(n: usize) -> Arc<ThreadPool> {
    let pools = POOLS.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
    pools
        .entry(n)
        .or_insert_with(|| {
            let build = |threads: usize| {
                ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |i| format!("sparsecode-{threads}-{i}"))
                    .build()
            };
            Arc::new(build(n).or_else(|_| build(1)).expect("a one-thread pool"))
        })
        .clone()
}
