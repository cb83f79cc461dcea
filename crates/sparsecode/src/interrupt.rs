//! Stopping long computations from outside: a process-wide request, like the signal that
//! usually raises it. A caller that catches Ctrl-C (the Python binding's main thread) calls
//! [`request`]; loops that can stop between units of work (an alternation of dictionary
//! learning, an online mini-batch) call [`check`], which then fails with
//! [`Error::Interrupted`]; the caller [`reset`]s the request once the work has returned.
//!
//! Training has its own, finer channel (an [`crate::train::Observer`] returning
//! `Control::Stop` keeps the state learned so far); this one is for work that has no state worth
//! keeping half-done.

use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// A stop request: the process-wide one is [`GLOBAL`].
#[derive(Debug, Default)]
pub struct Interrupt(AtomicBool);

impl Interrupt {
    /// No stop requested.
    pub const fn new() -> Self {
        Interrupt(AtomicBool::new(false))
    }

    /// Asks every loop checking this to stop at its next check.
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Withdraws the request.
    pub fn reset(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    /// Fails with [`Error::Interrupted`] naming `what` when a stop was requested.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.0.load(Ordering::Relaxed) {
            return Err(Error::Interrupted {
                what: what.to_string(),
            });
        }
        Ok(())
    }
}

/// The process-wide request the library's loops check.
pub static GLOBAL: Interrupt = Interrupt::new();

/// [`Interrupt::request`] on [`GLOBAL`].
pub fn request() {
    GLOBAL.request();
}

/// [`Interrupt::reset`] on [`GLOBAL`] (after the interrupted work has returned).
pub fn reset() {
    GLOBAL.reset();
}

/// [`Interrupt::check`] on [`GLOBAL`].
pub fn check(what: &str) -> Result<()> {
    GLOBAL.check(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A local request: the global one would stop other tests running beside this one.
    #[test]
    fn a_request_fails_checks_until_reset() {
        let i = Interrupt::new();
        assert!(i.check("work").is_ok());
        i.request();
        let e = i.check("dictionary learning").unwrap_err();
        assert!(matches!(e, Error::Interrupted { .. }));
        assert!(e.to_string().contains("dictionary learning"), "{e}");
        i.reset();
        assert!(i.check("work").is_ok());
    }
}
