//! Admission of allocations sized by input or flags: before a large buffer is made, its size is
//! computed with checked arithmetic and compared with the memory there is, so that a flag like
//! `--latents 100000000000` or a crafted header is a typed error saying how much is needed and
//! how much there is, not an abort ("memory allocation of N bytes failed").
//!
//! "The memory there is" is the smallest of: `MemAvailable` from `/proc/meminfo`, the cgroup v2
//! limit left (`memory.max - memory.current`) and a limit set with [`set_limit`] (the CLI's
//! `--memory-limit`). Where none can be read (not Linux), only the checked size is enforced.

use crate::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};

/// 0: no limit set.
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Caps what [`admit`] lets through at `bytes` (None: only the machine's free memory counts).
pub fn set_limit(bytes: Option<u64>) {
    LIMIT.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// Bytes an allocation may take now, if anything is known.
pub fn available() -> Option<u64> {
    let limit = Some(LIMIT.load(Ordering::Relaxed)).filter(|&l| l > 0);
    [limit, mem_available(), cgroup_left()]
        .into_iter()
        .flatten()
        .min()
}

/// The bytes of `count` elements of `size` bytes each, or an error naming `what` if that
/// overflows.
pub fn bytes_of(what: &str, dims: &[usize], size: usize) -> Result<u64> {
    dims.iter()
        .try_fold(size as u64, |a, &d| a.checked_mul(d as u64))
        .ok_or_else(|| Error::Memory {
            what: what.into(),
            needed: format!("more than {} bytes ({dims:?} x {size})", u64::MAX),
            available: available().map_or("unknown".into(), human),
        })
}

/// Fails with [`Error::Memory`] unless `bytes` fit in the memory there is.
pub fn admit(what: &str, bytes: u64) -> Result<()> {
    match available() {
        Some(have) if bytes > have => Err(Error::Memory {
            what: what.into(),
            needed: human(bytes),
            available: human(have),
        }),
        _ => Ok(()),
    }
}

/// [`bytes_of`] then [`admit`].
pub fn admit_array(what: &str, dims: &[usize], size: usize) -> Result<()> {
    admit(what, bytes_of(what, dims, size)?)
}

/// Parses a size like `512M`, `8G`, `1.5T` or a plain byte count (K, M, G, T are powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit
        .trim_end_matches(['B', 'b', 'i'])
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("'{s}': expected a size like 512M, 8G or 1.5T")),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}': expected a size like 512M, 8G or 1.5T"))?;
    let bytes = v * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("'{s}': expected a positive size"));
    }
    Ok(bytes as u64)
}

fn human(bytes: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// What the cgroup's memory limit leaves: cgroup v2 (`memory.max`), else the process's v1
/// memory group (`memory.limit_in_bytes`, as HPC batch systems still set per job or rank).
fn cgroup_left() -> Option<u64> {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    let v2 = || -> Option<u64> {
        let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max" does not parse: no limit
        let current: u64 = read("memory.current")?.trim().parse().ok()?;
        Some(max.saturating_sub(current))
    };
    let v1 = || -> Option<u64> {
        let groups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = groups.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        })?;
        let limit: u64 = read(&format!("memory{path}/memory.limit_in_bytes"))?
            .trim()
            .parse()
            .ok()?;
        let usage: u64 = read(&format!("memory{path}/memory.usage_in_bytes"))?
            .trim()
            .parse()
            .ok()?;
        Some(limit.saturating_sub(usage))
    };
    v2().or_else(v1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(
            parse_size("lots").is_err() && parse_size("0").is_err() && parse_size("-1G").is_err()
        );
    }

    #[test]
    fn oversized_and_overflowing_requests_are_refused_with_both_numbers() {
        let e = admit_array("test buffer", &[1 << 40, 1 << 10], 4)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test buffer") && e.contains("needs 4.0 PiB"),
            "{e}"
        );
        let e = bytes_of("huge", &[usize::MAX, 3], 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("huge") && e.contains("more than"), "{e}");
        admit_array("small", &[1024, 1024], 4).unwrap();
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
