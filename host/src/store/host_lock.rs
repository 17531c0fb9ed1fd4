//! One scheduling host per SQLite database.
//!
//! SQLite has no way for several hosts to share the work safely (no row
//! locks to claim with, no leases), and a second host would also take the
//! first one's running executions for crashed ones. So a scheduling host
//! holds an exclusive lock on `<database>.host-lock` for as long as it runs;
//! a second one on the same file refuses to start and says who holds it.
//! The operating system releases the lock when the holder dies, `kill -9`
//! included. One-shot commands (`sundial run`, `jobs`, `history`) do not
//! schedule and take no lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Another host holds the database.
#[derive(Debug, thiserror::Error)]
pub enum HostLockError {
    /// Another scheduling host runs on this database.
    #[error(
        "another Sundial host is already scheduling jobs on {} ({holder}); SQLite supports one \
         scheduling host per database file: stop that host first, or use one-shot commands \
         (`sundial run`, `jobs`, `history`) alongside it",
        database.display()
    )]
    Held {
        /// The database file.
        database: PathBuf,
        /// What the holder wrote about itself.
        holder: String,
    },
    /// The lock file cannot be used.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct HostLock {
    _file: File,
}

impl HostLock {
    /// Takes the lock of the database at `database`, writing who holds it.
    pub fn acquire(database: &Path, node: &str) -> Result<HostLock, HostLockError> {
        let mut name = database.as_os_str().to_owned();
        name.push(".host-lock");
        let path = PathBuf::from(name);
        let io = |source| HostLockError::Io { path: path.clone(), source };
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "holder unknown".to_string() } else { holder.to_string() };
                return Err(HostLockError::Held { database: database.to_path_buf(), holder });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let about =
            format!("pid {} on {node}, since {}", std::process::id(), chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"));
        file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(about.as_bytes())).map_err(io)?;
        Ok(HostLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sundial.db");
        let first = HostLock::acquire(&db, "node-a").unwrap();
        let err = HostLock::acquire(&db, "node-b").unwrap_err().to_string();
        assert!(err.contains("already scheduling jobs on") && err.contains("on node-a, since"), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        let again = HostLock::acquire(&db, "node-b");
        assert!(again.is_ok(), "released when the holder lets go");
    }
}
