//! Helpers shared by the CLI integration tests: run the binary with two threads, expect success
//! or a clean failure.
#![allow(dead_code)] // each test file uses a different subset

use std::process::{Command, Output};

/// The binary with `--threads 2`.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sparsecode"));
    c.arg("--threads").arg("2");
    c
}

/// Runs the binary with `args`.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

/// Runs, expects success, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs, expects exit status 2, and returns stderr.
pub fn fails(args: &[&str]) -> String {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{args:?} should fail with 2; stderr:\n{err}"
    );
    err
}
