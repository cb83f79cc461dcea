//! Run records: what every command writes so a figure can be reproduced (tool, version, git
//! commit, host threads, time, and the command's own config and metrics).

use serde_json::{json, Value};

/// Provenance common to every record.
pub fn provenance(command: &str) -> Value {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "tool": "sparsecode",
        "version": crate::VERSION,
        "git_commit": option_env!("SPARSECODE_GIT_COMMIT").unwrap_or("unknown"),
        "command": command,
        "unix_time": unix,
        "available_threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    })
}

/// FNV-1a over the bytes of a string (see [`fingerprint`]).
pub fn fingerprint_str(s: &str) -> String {
    format!("{:016x}", fnv1a(s.bytes()))
}

fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// FNV-1a over the bytes of the values: a cheap fingerprint that tells whether the data given to
/// `--resume` is the data the run started with.
pub fn fingerprint(values: &[f32]) -> String {
    format!(
        "{:016x}",
        fnv1a(values.iter().flat_map(|v| v.to_le_bytes()))
    )
}
