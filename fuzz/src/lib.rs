//! The bodies of the fuzz targets: each takes the fuzzer's bytes, lays them out as the files a
//! user would hand sparsecode (a `.npy`, an SAE folder, a store, a GGUF model, a run folder to
//! resume) and calls the same public entry point the CLI calls. A target may return any error;
//! it must never panic, abort or allocate what it was not allowed to.
//!
//! The files go through the file system (a scratch folder on `/dev/shm` where there is one)
//! because every reader under test starts from a path: a memory map, a folder, a lock. Targets
//! that need several files split the input at [`SEPARATOR`]; `make-seeds` writes well-formed
//! examples of each. The binaries in `targets/` wrap these functions with libFuzzer
//! (`scripts/fuzz.sh`); `tests/replay.rs` runs every committed corpus file and regression
//! through them in the normal test suite.

use sparsecode::{Matrix, Parallelism};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Separates the files of a multi-file input (chosen to be unlikely inside JSON or tensors).
pub const SEPARATOR: &[u8] = b"\n%%sparsecode-fuzz%%\n";

/// What a target may allocate through admitted buffers: a crafted size above this must be an
/// error, and libFuzzer's `-rss_limit_mb` catches anything that allocates without asking.
const MEMORY_LIMIT: u64 = 256 << 20;

/// A target body: true when the input was accepted all the way (a seed must be).
pub type Target = fn(&[u8]) -> bool;

/// The names of every target, as `scripts/fuzz.sh` and the replay test know them.
pub const TARGETS: [(&str, Target); 8] = [
    ("npy", npy),
    ("safetensors", safetensors),
    ("saelens", saelens),
    ("sparsify", sparsify),
    ("store", store),
    ("token_shard", token_shard),
    ("gguf", gguf),
    ("checkpoint", checkpoint),
];

/// A fresh, empty folder for this call (one per thread, emptied each time).
fn scratch() -> PathBuf {
    static LIMIT: OnceLock<()> = OnceLock::new();
    LIMIT.get_or_init(|| sparsecode::memory::set_limit(Some(MEMORY_LIMIT)));
    thread_local! {
        static ROOT: tempfile::TempDir = {
            let shm = Path::new("/dev/shm");
            let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
            tempfile::Builder::new()
                .prefix("sparsecode-fuzz-")
                .tempdir_in(base)
                .expect("a scratch folder")
        };
    }
    let dir = ROOT.with(|r| r.path().join("case"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("empty the scratch folder");
    }
    std::fs::create_dir(&dir).expect("make the scratch folder");
    dir
}

/// The first `n - 1` parts of `data` split at [`SEPARATOR`] and the rest as the last part
/// (missing parts are empty).
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts.resize(n, &[][..]);
    parts
}

/// Joins files into one input, the inverse of [`split`].
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEPARATOR)
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("make a scratch subfolder");
    }
    std::fs::write(path, bytes).expect("write a scratch file");
}

/// Encodes one row of zeros with a loaded SAE: what loads must be usable.
fn use_sae(sae: &sparsecode::sae::Sae) -> bool {
    let z = sae.encode_dense(&Matrix::zeros(1, sae.d_in()), Parallelism::Serial);
    z.shape() == (1, sae.d_sae())
}

/// A `.npy` file: the matrix reader and the store importer (which reads `.npy` its own way).
pub fn npy(data: &[u8]) -> bool {
    let dir = scratch();
    let p = dir.join("x.npy");
    write(&p, data);
    let read = sparsecode::io::read_matrix(&p)
        .map(|m| assert_eq!(m.as_slice().len(), m.rows() * m.cols()))
        .is_ok();
    import(&dir, &p, None) && read
}

/// Imports `input` into a store of 3-row shards; a store that was made must open and verify.
fn import(dir: &Path, input: &Path, tensor: Option<&str>) -> bool {
    use sparsecode::data::store::{import_files, input_width, Store, StoreDType};
    if input_width(input, tensor).is_err() {
        return false;
    }
    let dest = dir.join("store");
    let made = import_files(
        &[input.to_path_buf()],
        &dest,
        StoreDType::F16,
        3,
        tensor,
        false,
        &mut |_, _| {},
    );
    if made.is_err() {
        return false;
    }
    let s = Store::open(&dest).expect("a store just made opens");
    s.verify().expect("a store just made verifies");
    true
}

/// A safetensors file: the tensor reader and the store importer's tensor path.
pub fn safetensors(data: &[u8]) -> bool {
    let dir = scratch();
    let p = dir.join("x.safetensors");
    write(&p, data);
    let read = sparsecode::io::tensors::read_tensors(&p).is_ok();
    import(&dir, &p, Some("x")) && read
}

/// An SAE folder of two files (`cfg.json` and the weights named `weights`), loaded the way
/// every command loads one (the format is detected from `cfg.json`).
fn sae_folder(data: &[u8], cfg_name: &str, weights_name: &str) -> bool {
    let dir = scratch();
    let [cfg, weights] = split(data, 2)[..] else {
        unreachable!("split returns 2 parts")
    };
    write(&dir.join(cfg_name), cfg);
    write(&dir.join(weights_name), weights);
    sparsecode::sae::load(&dir).is_ok_and(|sae| use_sae(&sae))
}

/// A SAELens folder: `cfg.json`, then `sae_weights.safetensors`.
pub fn saelens(data: &[u8]) -> bool {
    use sparsecode::sae::saelens::{CFG_FILE, WEIGHTS_FILE};
    sae_folder(data, CFG_FILE, WEIGHTS_FILE)
}

/// A sparsify folder: `cfg.json`, then `sae.safetensors`.
pub fn sparsify(data: &[u8]) -> bool {
    use sparsecode::sae::sparsify::{CFG_FILE, WEIGHTS_FILE};
    sae_folder(data, CFG_FILE, WEIGHTS_FILE)
}

/// A store: `manifest.json`, its first activation shard, its first token shard, its vocabulary.
pub fn store(data: &[u8]) -> bool {
    use sparsecode::data::store::{shard_name, Store, MANIFEST};
    use sparsecode::data::tokens::{token_shard_name, verify_token_shards, TokenTable};
    let dir = scratch();
    let [manifest, shard, tokens, vocab] = split(data, 4)[..] else {
        unreachable!("split returns 4 parts")
    };
    write(&dir.join(MANIFEST), manifest);
    write(&dir.join(shard_name(0)), shard);
    write(&dir.join(token_shard_name(0)), tokens);
    write(&dir.join("vocab.json"), vocab);
    let Ok(mut s) = Store::open(&dir) else {
        return false;
    };
    let verified = s.verify().is_ok();
    let tokens_ok = match verify_token_shards(&s) {
        Ok(0) => true,
        Ok(_) => TokenTable::open(&s).is_ok(),
        Err(_) => false,
    };
    s.set_verify_reads(true);
    let head = s.head(5).is_ok();
    verified && tokens_ok && head
}

/// One token shard read on its own: two bytes of expected row count, then the file.
pub fn token_shard(data: &[u8]) -> bool {
    let dir = scratch();
    let (rows, file) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) as u64, rest),
        _ => (0, data),
    };
    let p = dir.join("tokens.bin");
    write(&p, file);
    sparsecode::data::tokens::read_token_shard(&p, rows).is_ok_and(|r| r.len() as u64 == rows)
}

/// A GGUF model: header, metadata, tensor table, tokenizer, weights.
pub fn gguf(data: &[u8]) -> bool {
    let dir = scratch();
    let p = dir.join("model.gguf");
    write(&p, data);
    sparsecode_harvest::llama::Llama::load(&p).is_ok_and(|m| {
        sparsecode_harvest::CausalLm::tokenizer(&m)
            .encode("a b")
            .is_ok()
    })
}

/// A run folder to resume: `train_config.json`, `checkpoint/state.json`,
/// `checkpoint/state.safetensors`, `metrics.jsonl`.
pub fn checkpoint(data: &[u8]) -> bool {
    use sparsecode::train::{RunDir, RUN_PARTIAL_SUFFIX};
    let dir = scratch();
    let [job, state, tensors, metrics] = split(data, 4)[..] else {
        unreachable!("split returns 4 parts")
    };
    let partial = dir.join(format!("run{RUN_PARTIAL_SUFFIX}"));
    write(&partial.join("train_config.json"), job);
    write(&partial.join("checkpoint/state.json"), state);
    write(&partial.join("checkpoint/state.safetensors"), tensors);
    write(&partial.join("metrics.jsonl"), metrics);
    match RunDir::resume(&dir.join("run")) {
        Ok((_run, job, Some(state))) => {
            assert_eq!(state.since_fired.len(), job.config.latents);
            use_sae(&state.sae)
        }
        _ => false,
    }
}
