//! Atomic outputs: every file is written under a temporary name in the same folder, synced, then
//! renamed over its final name, so a crash leaves either the old file or the new one, never half.
//! [`OutputDir`] does the same for whole folders.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) fn tmp_sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{tag}-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Writes what `write` puts into a buffered writer to `path` atomically (temp file, fsync,
/// rename): for files built piece by piece rather than in memory.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = tmp_sibling(path, "tmp");
    let result = (|| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        write(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::format(path, format!("cannot serialise JSON: {e}")))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads and parses a JSON file, naming the file in every error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))
}

/// A folder built under a temporary name and moved into place by [`OutputDir::commit`].
/// Dropped without commit, the temporary folder is removed and the destination is untouched.
#[derive(Debug)]
pub struct OutputDir {
    /// Held until the folder is committed or abandoned.
    _lock: super::OutputLock,
    tmp: PathBuf,
    dest: PathBuf,
    force: bool,
    committed: bool,
}

impl OutputDir {
    /// Starts a new output folder for `dest`, locked against other writers ([`super::OutputLock`],
    /// which also removes what a killed writer left). Fails when `dest` exists and `force` is
    /// false, or when another process writes it.
    pub fn create(dest: &Path, force: bool) -> Result<Self> {
        let lock = super::OutputLock::acquire(dest)?;
        if dest.exists() && !force {
            return Err(Error::OutputExists {
                path: dest.to_path_buf(),
            });
        }
        // The lock made the parent folder and removed any `.NAME.partial-*` a killed run left.
        let tmp = tmp_sibling(dest, "partial");
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(OutputDir {
            _lock: lock,
            tmp,
            dest: dest.to_path_buf(),
            force,
            committed: false,
        })
    }

    /// Where to write the folder's files until commit.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Path of a file inside the temporary folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// Moves the finished folder to its destination, replacing an old one only now (with `force`).
    pub fn commit(mut self) -> Result<PathBuf> {
        replace_dir(&self.tmp, &self.dest, self.force)?;
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Renames folder `from` to `dest`. An existing `dest` is refused unless `force`, in which case it
/// is first moved aside and deleted only after the new folder is in place.
pub fn replace_dir(from: &Path, dest: &Path, force: bool) -> Result<()> {
    if dest.exists() {
        if !force {
            return Err(Error::OutputExists {
                path: dest.to_path_buf(),
            });
        }
        let old = tmp_sibling(dest, "old");
        std::fs::rename(dest, &old).map_err(|e| Error::io(dest, e))?;
        if let Err(e) = std::fs::rename(from, dest) {
            let _ = std::fs::rename(&old, dest);
            return Err(Error::io(dest, e));
        }
        return remove_file_or_dir(&old);
    }
    std::fs::rename(from, dest).map_err(|e| Error::io(dest, e))
}

/// Removes `path`, a file or a whole folder.
pub(crate) fn remove_file_or_dir(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_dir_refuses_then_replaces_with_force() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("old.txt"), "old").unwrap();
        assert!(matches!(
            OutputDir::create(&dest, false),
            Err(Error::OutputExists { .. })
        ));
        // A dropped (failed) output leaves the old folder intact.
        {
            let o = OutputDir::create(&dest, true).unwrap();
            std::fs::write(o.join("new.txt"), "new").unwrap();
        }
        assert!(dest.join("old.txt").exists());
        let o = OutputDir::create(&dest, true).unwrap();
        std::fs::write(o.join("new.txt"), "new").unwrap();
        o.commit().unwrap();
        assert!(dest.join("new.txt").exists());
        assert!(!dest.join("old.txt").exists());
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            1,
            "no temp folders left"
        );
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.json");
        write_json_atomic(&p, &serde_json::json!({"a": 1})).unwrap();
        write_json_atomic(&p, &serde_json::json!({"a": 2})).unwrap();
        let v: serde_json::Value = read_json(&p).unwrap();
        assert_eq!(v["a"], 2);
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }
}
