//! The stream lock: at most one process drives an account's stream at a time.
//!
//! The store may be open in several processes at once (the app, the CLI's `send` beside a `run`,
//! an iOS Notification Service Extension or an Android push receiver calling
//! [`crate::Client::wake`] while the app is dead or suspended). Each of them may read and commit
//! rows; SQLite serialises that. Only one may hold the stream: two would resume the same
//! XEP-0198 session against each other, each acking what the other stored. The holder keeps an
//! exclusive OS file lock on `DB.<account>.lock` beside the database (one per account: the
//! store holds several, and each account's stream is driven on its own) (`flock` on unix, `LockFileEx` on
//! Windows, through the standard library); the OS releases it when the process dies, however it
//! dies, so a killed holder never leaves the account locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::{Result, StoreError};

/// The stream lock, held while this value lives.
#[derive(Debug)]
pub struct StreamLock {
    _file: File,
    path: PathBuf,
}

impl StreamLock {
    /// The lock file of account row `account` in the database at `db`.
    pub fn path_for(db: &Path, account: i64) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(format!(".{account}.lock"));
        PathBuf::from(name)
    }

    /// Takes the lock of account row `account` in the database at `db` if no other holder has
    /// it: `None` when one has (in this process or another).
    pub fn try_take(db: &Path, account: i64) -> Result<Option<StreamLock>> {
        let path = Self::path_for(db, account);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StreamLock { _file: file, path })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(source)) => Err(StoreError::Io { path, source }),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One holder at a time (a second handle, as a second process would have, is refused), and
    /// the lock is free again once the holder is gone.
    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let first = StreamLock::try_take(&db, 1).unwrap().expect("free");
        assert!(StreamLock::try_take(&db, 1).unwrap().is_none(), "held");
        assert_eq!(first.path(), dir.path().join("a.db.1.lock"));
        let other = StreamLock::try_take(&db, 2).unwrap();
        assert!(
            other.is_some(),
            "another account's stream is not held by this one"
        );
        drop(first);
        assert!(
            StreamLock::try_take(&db, 1).unwrap().is_some(),
            "free again"
        );
    }

    /// A directory in the lock file's place is an I/O error, not "held".
    #[test]
    fn an_unusable_lock_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("b.db");
        std::fs::create_dir(StreamLock::path_for(&db, 1)).unwrap();
        assert!(matches!(
            StreamLock::try_take(&db, 1),
            Err(StoreError::Io { .. })
        ));
    }
}
