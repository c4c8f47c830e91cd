//! The durable store: SQLite through rusqlite (bundled), WAL, foreign keys on, versioned migrations.
//!
//! Opening never creates over, truncates or "repairs" an existing file: a file that is not a Tether
//! database, one from a newer Tether, or one that fails SQLite's integrity check is a clear
//! [`StoreError`]. A new database file is created with owner-only permissions.
//!
//! Every change that moves a message also writes the SM state it moved, in one transaction
//! ([`Store::mark_written`], [`Store::apply_acks`], [`Store::store_inbound`], ...).

mod accounts;
mod attachments;
pub mod blobs;
mod blocking;
mod bookmarks;
mod caps;
mod control;
mod lock;
mod login;
mod messages;
mod profiles;
mod push;
mod references;
mod rows;
mod schema;
mod search;
mod social;

pub use accounts::{Account, NewAccount};
pub use attachments::{Attachment, Download, InboundFile, NewFile, SlotNeeded, Upload};
pub use blobs::Blobs;
pub use blocking::{block_forms, BlockEntry, BlockState, BlockWant};
pub use bookmarks::{Bookmark, BookmarkWant};
pub use caps::{CapsIdentity, MAX_CAPS, MAX_PEER_CAPS};
pub use control::{ControlItem, ControlKind, ControlMove};
pub use lock::StreamLock;
pub use messages::{
    Action, Conversation, InboundMessage, MessageFilter, MessageRow, Move, OutboxItem, Quoted,
    ReactionCount, StateChange,
};
pub use profiles::{AvatarSource, AvatarUpdate, NameField, Profile, ProfileWish};
pub use push::{PushSettings, PushState, PushWant};
pub use references::{
    check_reactions, Edit, Reference, Refusal, Stored, Updated, MAX_REACTIONS, MAX_REACTION_BYTES,
};
pub use search::{
    fts_query, SearchHit, SearchQuery, MAX_QUERY_BYTES, MAX_QUERY_WORDS, MAX_SEARCH_PAGE,
};
pub use social::{Contact, Occupant, Room};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};

use crate::sm::SmSnapshot;

/// How hard SQLite syncs. `Full` (the default) survives power loss; `Normal` survives a killed
/// process (WAL) but may lose the last commits on power loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `PRAGMA synchronous=FULL`.
    #[default]
    Full,
    /// `PRAGMA synchronous=NORMAL`.
    Normal,
}

/// Options for [`Store::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Create the database if the file does not exist.
    pub create: bool,
    /// Run `PRAGMA quick_check` on open. It reads every page (about a second for a
    /// 1,000,000-message store), so [`crate::Client::open`] turns it off and runs
    /// [`Store::verify_file`] in the background instead. A store that still needs a migration is
    /// checked before it is migrated either way.
    pub check_integrity: bool,
    /// Sync level.
    pub durability: Durability,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            create: true,
            check_integrity: true,
            durability: Durability::Full,
        }
    }
}

/// A storage error. Every variant names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file does not exist and creation was not asked for.
    #[error("database {0} does not exist (add an account first: tether --db {0} account add ...)")]
    Missing(PathBuf),
    /// The file exists but is not a Tether database.
    #[error("{path} is not a Tether database ({why}); refusing to touch it")]
    NotTether {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        why: String,
    },
    /// The file is from a newer Tether.
    #[error("database {path} has schema version {found}, newer than this Tether supports ({supported}); upgrade Tether")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// SQLite's integrity check failed.
    #[error("database {path} is damaged: {detail}; restore it from a backup (the file was not modified)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// SQLite's report.
        detail: String,
    },
    /// No account is configured.
    #[error("no account in this database (add one: tether --db PATH account add --jid JID --password-env VAR)")]
    NoAccount,
    /// The account is in the store already.
    #[error("{0} is already an account here")]
    AccountExists(String),
    /// The store holds several accounts and the caller did not say which one.
    #[error("this store holds several accounts ({}): choose one with --account JID", .0.join(", "))]
    WhichAccount(Vec<String>),
    /// No account with this JID is in the store.
    #[error("no account {0} in this store (tether account list shows them)")]
    UnknownAccount(String),
    /// A message id the user named does not exist.
    #[error("no message with id {0}")]
    UnknownMessage(String),
    /// A message is not in a state the request applies to.
    #[error("message {id} is {state}, not {expected}")]
    WrongState {
        /// The message id.
        id: String,
        /// Its state.
        state: String,
        /// The state the request needs.
        expected: String,
    },
    /// The request is not allowed (correcting someone else's message, an invalid reaction, ...);
    /// nothing was stored.
    #[error("{0}")]
    Refused(String),
    /// A group commit could not start, or SQLite rolled it back after an error: nothing of it was
    /// stored.
    #[error("database group commit failed: {0}; nothing of it was stored")]
    Group(&'static str),
    /// Any other SQLite error (disk full, read-only, locked, ...).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A file-system error while creating the database.
    #[error("cannot create database {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the cause lies outside the file and may go away: a full disk, a read-only file or
    /// directory, a lock held by another process, an I/O error. A damaged, foreign or newer file
    /// is not transient.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                C::DiskFull
                    | C::ReadOnly
                    | C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::SystemIoFailure
                    | C::CannotOpen
                    | C::PermissionDenied
            ),
            StoreError::Io { .. } | StoreError::Group(_) => true,
            _ => false,
        }
    }
}

/// A result with [`StoreError`].
pub type Result<T> = std::result::Result<T, StoreError>;

/// The store: one SQLite connection. Not `Sync`; the client guards it with a mutex.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The blob store beside the database (files sent and received).
    blobs: Blobs,
    /// The thread that opened the group commit in progress, if one is.
    group_owner: Option<std::thread::ThreadId>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// `PRAGMA quick_check` on `conn`: every page and index entry is readable and consistent.
fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let mut stmt = conn.prepare("PRAGMA quick_check")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| corrupt(e.to_string()))?;
    if rows != ["ok"] {
        return Err(corrupt(rows.join("; ")));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, the store's time unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (or, with `opts.create`, creates) the database at `path`, applies pending migrations and
    /// checks integrity.
    pub fn open(path: impl AsRef<Path>, opts: &StoreOptions) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let exists = path.exists();
        if !exists {
            if !opts.create {
                return Err(StoreError::Missing(path));
            }
            create_private_file(&path)?;
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mut store = Store {
            conn,
            blobs: Blobs::for_db(&path),
            path,
            group_owner: None,
        };
        store.check_header()?;
        store.conn.pragma_update(None, "foreign_keys", true)?;
        let mode: String =
            store
                .conn
                .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
        if mode != "wal" {
            tracing::warn!(mode, "could not switch the database to WAL");
        }
        store.conn.pragma_update(
            None,
            "synchronous",
            match opts.durability {
                Durability::Full => "FULL",
                Durability::Normal => "NORMAL",
            },
        )?;
        // Nothing is written to a file before it passed the check: a store that needs a migration
        // is checked first even when the caller defers the check.
        if opts.check_integrity || schema::needs_migration(&store.conn, &store.path)? {
            quick_check(&store.conn, &store.path)?;
        }
        schema::migrate(&mut store.conn, &store.path)?;
        Ok(store)
    }

    /// Runs SQLite's `PRAGMA quick_check` on `path` over a read-only connection of its own, so a
    /// store open in this process stays usable meanwhile. [`StoreError::Corrupt`] when it fails.
    pub fn verify_file(path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        quick_check(&conn, path)
    }

    /// Folds the write-ahead log into the database file (`wal_checkpoint(TRUNCATE)`). Every
    /// commit is durable without this; it leaves one self-contained file for a process that is
    /// about to be suspended. Returns false when another connection kept it from finishing.
    pub fn checkpoint(&self) -> Result<bool> {
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        Ok(busy == 0)
    }

    /// Opens a group commit: every change made until [`Self::commit_group`] or
    /// [`Self::rollback_group`] shares one transaction, so a burst of inbound stanzas costs one
    /// fsync instead of one each. A method that fails inside a group may leave part of its writes
    /// in it: the caller then rolls the whole group back. Takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so no statement of the group waits on another writer halfway.
    ///
    /// The calling thread owns the group until it ends ([`Self::group_owner`]): whoever shares
    /// this connection must keep other threads out meanwhile, or their writes would join a
    /// transaction that may be rolled back (the client's store lock does).
    pub fn begin_group(&mut self) -> Result<()> {
        if self.group_owner.is_some() || !self.conn.is_autocommit() {
            return Err(StoreError::Group("a transaction is already open"));
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        self.group_owner = Some(std::thread::current().id());
        Ok(())
    }

    /// The thread whose group commit is open, if one is.
    pub fn group_owner(&self) -> Option<std::thread::ThreadId> {
        self.group_owner
    }

    /// Commits the open group. `Ok(false)` when SQLite had already rolled it back (after an error
    /// a statement of the group returned): nothing of the group is stored. A failed commit is
    /// rolled back, and nothing of the group is stored either.
    pub fn commit_group(&mut self) -> Result<bool> {
        if self.conn.is_autocommit() {
            self.group_owner = None;
            return Ok(false);
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            self.rollback_group();
            return Err(e.into());
        }
        self.group_owner = None;
        Ok(true)
    }

    /// Rolls back the open group, if SQLite has not already.
    pub fn rollback_group(&mut self) {
        self.group_owner = None;
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!("rolling back a group commit: {e}");
            }
        }
    }

    /// Runs SQL on the connection: the engine tests' fault injection (triggers).
    #[cfg(test)]
    pub(crate) fn execute_batch_for_tests(&self, sql: &str) -> Result<()> {
        Ok(self.conn.execute_batch(sql)?)
    }

    /// The integer `sql` returns: the engine tests' bookkeeping of fault-injection triggers.
    #[cfg(test)]
    pub(crate) fn query_i64_for_tests(&self, sql: &str) -> Result<i64> {
        Ok(self.conn.query_row(sql, [], |r| r.get(0))?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's `data_version`: it changes when another connection (another process, or another
    /// connection of this one) commits to the file.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    /// Distinguishes a Tether database (or an empty file) from anything else, before writing.
    fn check_header(&mut self) -> Result<()> {
        let not_db = |e: rusqlite::Error| match e {
            rusqlite::Error::SqliteFailure(ref f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
                ) =>
            {
                StoreError::NotTether {
                    path: self.path.clone(),
                    why: e.to_string(),
                }
            }
            e => StoreError::Sqlite(e),
        };
        let app_id: i64 = self
            .conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(not_db)?;
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(not_db)?;
        if app_id != schema::APPLICATION_ID && !(app_id == 0 && tables == 0) {
            return Err(StoreError::NotTether {
                path: self.path.clone(),
                why: format!("application_id {app_id:#x}, {tables} schema objects"),
            });
        }
        Ok(())
    }

    /// The persisted SM state of an account.
    pub fn load_sm(&self, account: i64) -> Result<SmSnapshot> {
        let snap = self
            .conn
            .query_row(
                "SELECT stream_id, resumable, location, max, inbound_h, outbound_count, acked_h
                 FROM sm_state WHERE account_id = ?1",
                [account],
                |r| {
                    Ok(SmSnapshot {
                        stream_id: r.get(0)?,
                        resumable: r.get(1)?,
                        location: r.get(2)?,
                        max: r.get(3)?,
                        inbound_h: r.get(4)?,
                        outbound_count: r.get(5)?,
                        acked_h: r.get(6)?,
                    })
                },
            )
            .optional()?;
        Ok(snap.unwrap_or_default())
    }

    /// Message moves and control moves with the SM snapshot, in one transaction.
    pub fn apply_all(
        &mut self,
        account: i64,
        moves: &[Move],
        control: &[ControlMove],
        snap: Option<&SmSnapshot>,
    ) -> Result<Vec<StateChange>> {
        let tx = Tx::begin(&mut self.conn)?;
        let changes = messages::apply_moves(&tx, moves)?;
        control::apply_moves(&tx, control)?;
        if let Some(snap) = snap {
            save_sm(&tx, account, snap)?;
        }
        tx.commit()?;
        Ok(changes)
    }

    /// Writes the SM state. Public for the rare change that moves no message (a presence written,
    /// a new stream enabled); every other change writes it inside its own transaction.
    pub fn save_sm(&mut self, account: i64, snap: &SmSnapshot) -> Result<()> {
        save_sm(&self.conn, account, snap)
    }
}

pub(crate) fn save_sm(conn: &Connection, account: i64, snap: &SmSnapshot) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO sm_state (account_id, stream_id, resumable, location, max, inbound_h,
                               outbound_count, acked_h, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(account_id) DO UPDATE SET
           stream_id = excluded.stream_id, resumable = excluded.resumable,
           location = excluded.location, max = excluded.max, inbound_h = excluded.inbound_h,
           outbound_count = excluded.outbound_count, acked_h = excluded.acked_h,
           updated_at = excluded.updated_at",
    )?
    .execute(rusqlite::params![
        account,
        snap.stream_id,
        snap.resumable,
        snap.location,
        snap.max,
        snap.inbound_h,
        snap.outbound_count,
        snap.acked_h,
        now_ms()
    ])?;
    Ok(())
}

/// The transaction a store method writes in: its own, or the group commit in progress.
///
/// Inside a group a method writes straight into the group's transaction (a savepoint per method
/// would copy every page it touches into a sub-journal, which cost more than the writes): if it
/// fails, the caller rolls the whole group back ([`Store::rollback_group`]).
pub(crate) enum Tx<'c> {
    /// A transaction of the method's own, committed by [`Tx::commit`] (rolled back if dropped).
    Own(rusqlite::Transaction<'c>),
    /// The group's transaction: [`Tx::commit`] leaves it to the group.
    Group(&'c Connection),
}

impl<'c> Tx<'c> {
    /// Starts the method's transaction, or joins the group in progress.
    ///
    /// `BEGIN IMMEDIATE`: the write lock is taken first, waiting on another writer (another
    /// process: the CLI beside a running client, a wake beside the app) for the busy timeout. A
    /// deferred transaction that read first would instead fail at once with `SQLITE_BUSY` when
    /// another connection committed since its read began (WAL gives it no way to wait; seen in
    /// the fault campaign, `tether send` while `run` committed a burst).
    pub(crate) fn begin(conn: &'c mut Connection) -> rusqlite::Result<Tx<'c>> {
        if conn.is_autocommit() {
            conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map(Tx::Own)
        } else {
            Ok(Tx::Group(conn))
        }
    }

    /// Commits the method's own transaction; in a group, nothing yet.
    pub(crate) fn commit(self) -> rusqlite::Result<()> {
        match self {
            Tx::Own(tx) => tx.commit(),
            Tx::Group(_) => Ok(()),
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Tx::Own(tx) => tx,
            Tx::Group(conn) => conn,
        }
    }
}

/// Creates the database file readable and writable by its owner only: mode 0600 on Unix. On other
/// platforms (Windows) a new file inherits its folder's access list, which for the app's data
/// folder (under the user's profile) is the user, the administrators and SYSTEM: the file is
/// created there without a mode of its own, and the front end keeps the password in the OS
/// keyring (the desktop app does on every platform).
fn create_private_file(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map(|_| ())
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod references_tests;
#[cfg(test)]
mod search_tests;
#[cfg(test)]
mod tests;
