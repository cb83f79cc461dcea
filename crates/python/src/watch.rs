//! Long native work with the GIL released and Ctrl-C still heard. The work runs on a worker
//! thread; the calling thread (Python's main thread: only it may run signal handlers) wakes
//! when the work ends or every [`POLL`], runs `tick` (e.g. hands progress to a callback) and
//! checks Python's signals. The first exception from either is kept and `stop` is called, so
//! the work can end early; the caller decides what to do with the work's result and that
//! exception.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::sync::Mutex;
use std::time::Duration;

/// How often the calling thread wakes while the work runs.
pub const POLL: Duration = Duration::from_millis(20);

/// Runs `work` on a worker thread; returns its result and the exception raised meanwhile (by
/// `tick` or a signal handler), if any.
pub fn watch<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> T + Send,
    mut tick: impl FnMut(Python<'_>) -> PyResult<()>,
    stop: impl Fn(),
) -> PyResult<(T, Option<PyErr>)> {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // The receiver waits inside `py.detach`, which needs what it borrows to be Sync.
    let done_rx = Mutex::new(done_rx);
    let mut raised: Option<PyErr> = None;
    let out = std::thread::scope(|s| {
        let worker = s.spawn(move || {
            let out = work();
            let _ = done_tx.send(());
            out
        });
        loop {
            let finished = worker.is_finished();
            if raised.is_none() {
                raised = tick(py).and_then(|_| py.check_signals()).err();
                if raised.is_some() {
                    stop();
                }
            }
            if finished {
                break;
            }
            // Wakes at once when the work ends, else after POLL.
            py.detach(|| {
                if let Ok(rx) = done_rx.lock() {
                    let _ = rx.recv_timeout(POLL);
                }
            });
        }
        worker.join()
    });
    let out = out.map_err(|_| {
        PyRuntimeError::new_err("sparsecode: a worker thread panicked (a defect: please report it)")
    })?;
    Ok((out, raised))
}

/// Runs library work that checks [`sparsecode::interrupt`]: Ctrl-C requests a stop, and once the
/// work has returned the request is withdrawn and `KeyboardInterrupt` raised.
pub fn interruptible<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> sparsecode::Result<T> + Send,
) -> PyResult<T> {
    let (out, raised) = watch(py, work, |_| Ok(()), sparsecode::interrupt::request)?;
    if let Some(e) = raised {
        sparsecode::interrupt::reset();
        return Err(e);
    }
    out.map_err(crate::to_py)
}
