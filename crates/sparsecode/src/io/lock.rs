//! One writer per output: [`OutputLock`] holds an advisory lock (`flock`) on `PARENT/.NAME.lock`
//! for as long as a command writes the run, store, folder or file `PARENT/NAME`. The operating
//! system drops the lock when the process ends, however it ends, so a lock that can be taken
//! proves that no live process writes `NAME`: that, not a process id (meaningless across the
//! nodes sharing a cluster filesystem), is what allows removing the temporary files a killed run
//! left (`.NAME.partial-*`, `.NAME.tmp-*`, `.NAME.old-*`).
//!
//! The lock file says who holds it (process, host, command, start time) so that a refused command
//! can name the holder. It is removed when the lock is released; a contender that opened the
//! removed file checks, once it holds the lock, that the path still names that file, and retries
//! otherwise.

use crate::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Temporary siblings of `NAME` that only a writer of `NAME` creates.
const LEFTOVER_TAGS: [&str; 3] = ["partial-", "tmp-", "old-"];

/// An exclusive lock on an output path, released (and its lock file removed) on drop.
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Locks `dest` for writing, or fails with [`Error::Locked`] naming the holder. Creates the
    /// parent folder if needed, then removes what dead writers of `dest` left beside it.
    pub fn acquire(dest: &Path) -> Result<Self> {
        let (parent, name) = split(dest)?;
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let path = parent.join(format!(".{name}.lock"));
        let file = loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                Ok(()) if still_named(&file, &path) => break file,
                Ok(()) => continue,
                Err(TryLockError::WouldBlock) => {
                    return Err(Error::Locked {
                        path: dest.to_path_buf(),
                        holder: holder_of(file),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        };
        let lock = OutputLock { file, path };
        lock.write_holder()?;
        remove_leftovers(&parent, &name)?;
        Ok(lock)
    }

    fn write_holder(&self) -> Result<()> {
        let mut f = &self.file;
        let io = |e| Error::io(&self.path, e);
        f.set_len(0).map_err(io)?;
        f.rewind().map_err(io)?;
        f.write_all(holder_line().as_bytes()).map_err(io)?;
        f.flush().map_err(io)
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still held: a contender that opened it sees it gone and retries.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// `dest`'s folder and file name.
fn split(dest: &Path) -> Result<(PathBuf, String)> {
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::format(dest, "an output must end in a file or folder name"))?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_string()))
}

/// Whether `path` still names the open `file` (it was not removed and recreated meanwhile).
#[cfg(unix)]
fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_named(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// Who we are, for a contender's error message.
fn holder_line() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let command: Vec<String> = std::env::args().take(4).collect();
    format!(
        "process {} on {host}, `{}`, since unix time {since}",
        std::process::id(),
        command.join(" ")
    )
}

/// What the lock file of a held lock says.
fn holder_of(mut file: File) -> String {
    let mut s = String::new();
    let _ = file.read_to_string(&mut s);
    match s.trim() {
        "" => "another process, just starting".into(),
        line => line.to_string(),
    }
}

/// Removes `.NAME.partial-*`, `.NAME.tmp-*` and `.NAME.old-*` in `parent` (files or folders).
fn remove_leftovers(parent: &Path, name: &str) -> Result<()> {
    let prefix = format!(".{name}.");
    let entries = std::fs::read_dir(parent).map_err(|e| Error::io(parent, e))?;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        if LEFTOVER_TAGS.iter().any(|t| rest.starts_with(t)) {
            super::atomic::remove_file_or_dir(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_naming_the_first_and_the_lock_goes_with_it() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("run");
        let first = OutputLock::acquire(&dest).unwrap();
        let e = OutputLock::acquire(&dest).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Locked { .. }), "{msg}");
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        assert!(
            !t.path().join(".run.lock").exists(),
            "the lock file is removed on release"
        );
        let _again = OutputLock::acquire(&dest).unwrap();
    }

    #[test]
    fn what_dead_writers_left_is_removed_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        std::fs::create_dir(dir.join(".run.partial-123")).unwrap();
        std::fs::write(dir.join(".run.partial-123/x"), "x").unwrap();
        for f in [
            ".run.tmp-9",
            ".run.old-7",
            ".runner.tmp-1",
            "run.partial",
            ".run.keep",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let _lock = OutputLock::acquire(&dir.join("run")).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".run.keep", ".run.lock", ".runner.tmp-1", "run.partial"]
        );
    }
}
