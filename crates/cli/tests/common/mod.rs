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

/// The fetched-assets folder (scripts/fetch-assets) if `relative` exists in it. Without it the
/// caller skips, printing why, unless `SPARSECODE_REQUIRE_ASSETS` is set (CI), where a missing
/// asset is a failure.
pub fn asset(relative: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let p = root.join(relative);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("SPARSECODE_REQUIRE_ASSETS").is_some() {
        panic!("{} is missing: run scripts/fetch-assets", p.display());
    }
    eprintln!("skipped: {} absent (scripts/fetch-assets)", p.display());
    None
}

/// Headless Chromium (Debian's `chromium`), if installed; same skip/require rule with
/// `SPARSECODE_REQUIRE_BROWSER`.
pub fn chromium() -> Option<std::path::PathBuf> {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(p).exists() {
            return Some(p.into());
        }
    }
    if std::env::var_os("SPARSECODE_REQUIRE_BROWSER").is_some() {
        panic!("chromium is not installed (apt-get install chromium)");
    }
    eprintln!("skipped: chromium not installed");
    None
}

/// Loads `page` in headless Chromium: returns the DOM after its scripts ran, and fails the test
/// on any console message (errors and uncaught exceptions are logged as CONSOLE lines).
/// With `screenshot`, also writes a PNG of the page.
pub fn load_page(
    browser: &std::path::Path,
    page: &std::path::Path,
    screenshot: Option<&std::path::Path>,
) -> String {
    load_url(
        browser,
        &format!("file://{}", page.canonicalize().unwrap().display()),
        screenshot,
    )
}

/// [`load_page`] for a URL (e.g. a page with a `#fragment`).
pub fn load_url(
    browser: &std::path::Path,
    url: &str,
    screenshot: Option<&std::path::Path>,
) -> String {
    let profile = tempfile::tempdir().unwrap();
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut c = Command::new(browser);
    base(&mut c);
    let o = c
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium runs");
    let err = String::from_utf8_lossy(&o.stderr);
    let console: Vec<&str> = err.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages on {url}: {console:?}");
    assert!(o.status.success(), "chromium failed on {url}: {err}");
    if let Some(png) = screenshot {
        let mut c = Command::new(browser);
        base(&mut c);
        let o = c
            .arg("--window-size=1200,1000")
            .arg(format!("--screenshot={}", png.display()))
            .arg(url)
            .output()
            .expect("chromium runs");
        assert!(o.status.success(), "screenshot of {url} failed");
        let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "screenshot of {url} is {size} bytes");
    }
    String::from_utf8_lossy(&o.stdout).into_owned()
}
