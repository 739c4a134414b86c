//! A peer store's lock and inbox: how tools reach the node that owns a store.
//!
//! - [`StoreLock`]: a running node holds an exclusive advisory lock on `<peer-store>/node.lock`
//!   for its lifetime, so that a second node cannot open the same store and tools can tell a
//!   running node from a stopped one (the lock dies with the process, even on SIGKILL).
//! - The inbox (`<peer-store>/inbox/`): `trac contract deploy` hands a running node a
//!   component to deploy by dropping it there ([`submit_component`]); the node runs it as
//!   `/deploy_contract` (its own checks: the node's key must be the subnet admin) on its next
//!   sync tick, writes the outcome next to it ([`finish`]) and removes the component; the tool
//!   waits for that outcome ([`wait_outcome`]). Files are written under a temporary name and
//!   renamed, so nobody reads half a file.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The lock file in a peer store.
pub const LOCK_FILE: &str = "node.lock";
/// The inbox folder in a peer store.
pub const INBOX_DIR: &str = "inbox";

/// Why the store lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("the store {0} is in use by a running node")]
    InUse(PathBuf),
    /// The lock file cannot be opened.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// An exclusive lock on a peer store, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the lock of `peer_store` without waiting.
    pub fn acquire(peer_store: &Path) -> Result<StoreLock, LockError> {
        let path = peer_store.join(LOCK_FILE);
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => Ok(StoreLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(LockError::InUse(peer_store.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(e)),
        }
    }
}

/// A component waiting in the inbox.
const COMPONENT: &str = "wasm";
/// The outcome of a processed component.
const OUTCOME: &str = "outcome";

/// Drops `component` into the inbox of `peer_store`; returns its path there.
pub fn submit_component(peer_store: &Path, component: &[u8]) -> io::Result<PathBuf> {
    let dir = peer_store.join(INBOX_DIR);
    std::fs::create_dir_all(&dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!(
        "{stamp:032}-{}",
        &crate::crypto::hash(component).to_hex()[..16]
    );
    let path = dir.join(format!("{name}.{COMPONENT}"));
    let temp = dir.join(format!("{name}.tmp"));
    std::fs::write(&temp, component)?;
    std::fs::rename(&temp, &path)?;
    Ok(path)
}

/// The components waiting in the inbox of `peer_store`, oldest first.
pub fn pending(peer_store: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(peer_store.join(INBOX_DIR)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == COMPONENT))
        .collect();
    files.sort();
    files
}

/// Records the outcome of the component at `path` (`Ok` text or the failure) and removes it.
pub fn finish(path: &Path, outcome: &Result<String, String>) {
    let text = match outcome {
        Ok(text) => format!("ok\n{text}"),
        Err(message) => format!("error\n{message}"),
    };
    let temp = path.with_extension("tmp");
    let written = std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, path.with_extension(OUTCOME)));
    if let Err(e) = written {
        tracing::warn!(file = %path.display(), "cannot write the inbox outcome: {e}");
    }
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(file = %path.display(), "cannot remove the inbox file: {e}");
    }
}

/// Waits up to `patience` for the outcome of the component submitted at `path`; reads and
/// removes it. `None` when it did not come in time (the component stays queued).
pub fn wait_outcome(path: &Path, patience: std::time::Duration) -> Option<Result<String, String>> {
    let outcome = path.with_extension(OUTCOME);
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Ok(text) = std::fs::read_to_string(&outcome) {
            let _ = std::fs::remove_file(&outcome);
            let (status, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
            return Some(if status == "ok" {
                Ok(rest.to_string())
            } else {
                Err(rest.to_string())
            });
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let lock = StoreLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            StoreLock::acquire(dir.path()),
            Err(LockError::InUse(_))
        ));
        drop(lock);
        StoreLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn components_wait_in_the_inbox_until_their_outcome_is_written() {
        let dir = tempfile::tempdir().unwrap();
        assert!(pending(dir.path()).is_empty());
        let first = submit_component(dir.path(), b"one").unwrap();
        let second = submit_component(dir.path(), b"two").unwrap();
        assert_eq!(pending(dir.path()), vec![first.clone(), second.clone()]);
        assert_eq!(std::fs::read(&first).unwrap(), b"one");
        finish(&first, &Ok("deployed".into()));
        finish(&second, &Err("Only the admin can deploy contracts.".into()));
        assert!(pending(dir.path()).is_empty());
        let quick = std::time::Duration::from_millis(10);
        assert_eq!(wait_outcome(&first, quick), Some(Ok("deployed".into())));
        assert_eq!(
            wait_outcome(&second, quick),
            Some(Err("Only the admin can deploy contracts.".into()))
        );
        assert_eq!(wait_outcome(&first, quick), None);
    }
}
