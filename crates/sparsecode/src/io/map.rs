//! Read-only memory maps of input files, with the file named in every error and a folder, a
//! device or an empty file refused in words (mapping a folder fails with "No such device").

use crate::{Error, Result};
use std::path::Path;

/// Maps `path` read-only; `what` says what the file should be (e.g. "a .npy file").
pub fn map_file(path: &Path, what: &str) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::format(path, format!("is a folder, expected {what}")));
    }
    if !meta.is_file() {
        return Err(Error::format(
            path,
            format!("is not a regular file, expected {what}"),
        ));
    }
    if meta.len() == 0 {
        return Err(Error::format(
            path,
            format!("the file is empty, expected {what}"),
        ));
    }
    // SAFETY: a read-only map; a concurrent writer truncating the file is outside what any
    // mmap reader can defend against (the store's shards are only ever renamed into place).
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}
