//! Embedded SQLite backend for kube-ipam: one node, offline use, tests.
//!
//! Every plugin process on the node opens the same database file. SQLite's write-ahead log
//! lets readers run beside the one writer, and its own file locks queue writers across
//! processes: a commit begins with `BEGIN IMMEDIATE`, which waits (SQLite's busy timeout) for
//! the writer ahead of it; a process that waits past its deadline gets [`StoreError::Busy`],
//! which the plugin reports as "try again later".
//!
//! Each row carries the revision of the commit that wrote it. The revision comes from a
//! counter that every commit bumps inside its own transaction, so revisions grow in commit
//! order, as etcd's do, and survive restarts with the data.

mod adopt;
mod errors;
mod holders;
pub mod legacy;
mod snapshot;

use std::cell::Cell;
use std::ffi::c_int;
use std::fmt;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kube_ipam_store::{
    Committed, Compare, Entry, LeaseStore, Mutation, Read, Revision, Snapshot, StoreError,
};
use rusqlite::config::DbConfig;
use rusqlite::hooks::Wal;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

pub use adopt::ADOPTED_SUFFIX;
pub(crate) use errors::{io_error, sqlite_error, sqlite_error_on};
pub use legacy::refuse_unconverted;
use snapshot::SqliteSnapshot;

/// File name of the database inside the store directory.
pub const DB_FILE: &str = "store.db";

/// Bumped when the schema changes; 0 is a file no kube-ipam has set up yet.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS leases (
        key TEXT PRIMARY KEY NOT NULL,
        revision INTEGER NOT NULL,
        value BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS meta (
        name TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
";

/// Pages in the write-ahead log past which a commit copies them into the database and starts
/// the log over. Few, because every process that opens the store first reads the log back
/// (up to where it was last started over) to rebuild its index.
const CHECKPOINT_FRAMES: c_int = 64;

/// Size the log file is cut back to when it is started over after a burst made it larger.
const LOG_FILE_LIMIT: u64 = 512 << 10;

thread_local! {
    /// Pages in the log after this thread's last commit, as SQLite reported it.
    static LOG_FRAMES: Cell<c_int> = const { Cell::new(0) };
}

fn note_log_frames(_: &Wal, frames: c_int) -> rusqlite::Result<()> {
    LOG_FRAMES.with(|f| f.set(frames));
    Ok(())
}

/// A [`LeaseStore`] in a local SQLite database shared with other processes.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// No wait for another writer goes past this.
    deadline: Instant,
    /// Directories that gained an entry (the store's directory, its files) since they were
    /// last synced. SQLite syncs a directory after creating its log but ignores a failure to,
    /// so a commit into new files is reported only once these are synced here.
    unsynced: Mutex<Vec<PathBuf>>,
}

impl SqliteStore {
    /// Opens the store in `dir`, creating it (mode 0700) if needed.
    ///
    /// Waits for other processes writing to the same store at most until `lock_timeout`
    /// from now, counted over every call on the returned store, then fails with
    /// [`StoreError::Busy`].
    ///
    /// A directory still holding the store of kube-ipam's former sled engine is refused with
    /// [`StoreError::Io`] naming the command that converts it: opening an empty store beside
    /// it would hand out the addresses it holds.
    pub fn open(dir: &Path, lock_timeout: Duration) -> Result<SqliteStore, StoreError> {
        let deadline = Instant::now() + lock_timeout;
        legacy::refuse_unconverted(dir)?;
        // Each directory about to be made is a new entry in its parent.
        let mut unsynced: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .filter_map(|d| d.parent().map(Path::to_owned))
            .collect();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error("creating", dir, e))?;
        let path = dir.join(DB_FILE);
        if !wal_path(&path).exists() && !unsynced.iter().any(|d| d == dir) {
            unsynced.push(dir.to_owned());
        }
        let conn = connect(&path, deadline)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
            deadline,
            unsynced: Mutex::new(unsynced),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, conn: &Connection, action: &str, e: rusqlite::Error) -> StoreError {
        sqlite_error_on(conn, action, &self.path, e)
    }

    /// The revision after the commit, or `None` when a comparison fails.
    fn apply(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> Result<Option<Revision>, StoreError> {
        let conn = self.conn();
        let left = self.deadline.saturating_duration_since(Instant::now());
        conn.busy_timeout(left)
            .map_err(|e| self.error(&conn, "configuring", e))?;
        // IMMEDIATE takes the write lock before the comparisons are read, so nothing can
        // change between checking them and applying the mutations.
        let tx = Transaction::new_unchecked(&conn, TransactionBehavior::Immediate)
            .map_err(|e| self.error(&conn, "locking", e))?;
        for c in compares {
            let (key, want) = match c {
                Compare::Absent(k) => (k, None),
                Compare::Revision(k, r) => (k, Some(*r)),
            };
            let have = revision_of(&tx, key).map_err(|e| self.error(&tx, "reading", e))?;
            if have != want {
                return Ok(None);
            }
        }
        let current: i64 = tx
            .prepare_cached("SELECT value FROM meta WHERE name = 'revision'")
            .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
            .map_err(|e| self.error(&tx, "reading", e))?
            .unwrap_or(0);
        if mutations.is_empty() {
            return Ok(Some(current as Revision));
        }
        let revision = current + 1;
        let write = || -> rusqlite::Result<()> {
            tx.prepare_cached(
                "INSERT INTO meta (name, value) VALUES ('revision', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?
            .execute([revision])?;
            for m in mutations {
                match m {
                    Mutation::Put(k, v) => tx
                        .prepare_cached(
                            "INSERT INTO leases (key, revision, value) VALUES (?1, ?2, ?3)
                             ON CONFLICT (key) DO UPDATE
                             SET revision = excluded.revision, value = excluded.value",
                        )?
                        .execute(params![k, revision, v])?,
                    Mutation::Delete(k) => tx
                        .prepare_cached("DELETE FROM leases WHERE key = ?1")?
                        .execute([k])?,
                };
            }
            Ok(())
        };
        write().map_err(|e| self.error(&tx, "writing", e))?;
        // With synchronous=FULL the log is on disk when COMMIT returns. A failed fsync comes
        // back here as an error, and the caller treats the commit's outcome as unknown.
        if let Err(e) = tx.commit() {
            return Err(self.error(&conn, "committing", e));
        }
        self.sync_new_entries()?;
        self.checkpoint_if_long(&conn);
        Ok(Some(revision as Revision))
    }

    fn sync_new_entries(&self) -> Result<(), StoreError> {
        let mut unsynced = self.unsynced.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(dir) = unsynced.last() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("syncing", dir, e))?;
            unsynced.pop();
        }
        Ok(())
    }

    /// Copies the log into the database once the last commit left it past
    /// [`CHECKPOINT_FRAMES`], then makes a write that starts it over at its beginning.
    ///
    /// SQLite's own automatic checkpoint does not suit processes that each make one commit:
    /// only the process that checkpointed knows the log is copied (a process that opens the
    /// store later rebuilds its index from the log and must assume nothing is), so only its
    /// next write may start the log over, and every new process would read the whole log back.
    /// Started over, the log keeps its size and later commits overwrite it in place, so the
    /// fsync of each commit has file data to write and no change of size.
    ///
    /// The commit is already durable: a checkpoint that cannot finish (a reader in the way, a
    /// full disk) changes nothing and is tried again after a later commit.
    fn checkpoint_if_long(&self, conn: &Connection) {
        let frames = LOG_FRAMES.with(|f| f.replace(0));
        if frames < CHECKPOINT_FRAMES || conn.busy_timeout(Duration::ZERO).is_err() {
            return;
        }
        let copied = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        if !matches!(copied, Ok((0, log, done)) if log == done) {
            return;
        }
        // Any write that changes a page will do (SQLite skips rewriting a row as it was): a
        // count of these restarts, which nothing else reads.
        let restarted = conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO meta (name, value) VALUES ('log_restarts', 1)
             ON CONFLICT (name) DO UPDATE SET value = value + 1;
             COMMIT;",
        );
        if restarted.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

/// Opens `path` and makes it a kube-ipam store if it is not one yet, waiting for other
/// writers until `deadline` at most, over all steps together.
fn connect(path: &Path, deadline: Instant) -> Result<Connection, StoreError> {
    let fail = |action: &'static str| move |e| sqlite_error(action, path, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(fail("opening"))?;
    let fail = |action: &'static str| {
        let conn = &conn;
        move |e| sqlite_error_on(conn, action, path, e)
    };
    let wait = || {
        conn.busy_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(fail("configuring"))
    };
    wait()?;
    // FULL: a commit's log frames are fsynced before COMMIT returns (NORMAL would only sync
    // at checkpoints and could lose an address already handed out).
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = {LOG_FILE_LIMIT};"
    ))
    .map_err(fail("configuring"))?;
    // After the pragma above, which clears any log hook: checkpoints follow commits.
    conn.wal_hook(Some(note_log_frames));
    // Left to its default, the last process to close the store would checkpoint and delete
    // the log, and the next one would create it again: an fsync of the database paid by every
    // short-lived call. Checkpoints happen as commits grow the log.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(fail("configuring"))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(fail("reading"))?;
    if version == 0 {
        wait()?;
        set_up(&conn, path)?;
    } else if version > SCHEMA_VERSION {
        return Err(StoreError::Config(format!(
            "{} was written by a newer kube-ipam (schema {version}, this one knows {SCHEMA_VERSION})",
            path.display()
        )));
    }
    wait()?;
    wal_mode(&conn, path)?;
    Ok(conn)
}

/// Creates the schema in a new file. Many processes may race here on a new network; the
/// write lock orders them and the later ones find the work done.
fn set_up(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    wal_mode(conn, path)?;
    schema(conn).map_err(|e| sqlite_error_on(conn, "creating", path, e))
}

/// Puts the file in write-ahead-log mode unless it is already.
///
/// The mode is recorded in the file itself. On a new file SQLite only records the wish and
/// writes it with the first transaction; if that write fails (a full disk, a failed fsync),
/// the file silently stays in rollback-journal mode, in which readers and writers block each
/// other. So every opener checks, and the next one after such a failure finishes the switch.
fn wal_mode(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mode = |sql: &str| -> Result<String, StoreError> {
        conn.query_row(sql, [], |r| r.get::<_, String>(0))
            .map_err(|e| sqlite_error_on(conn, "setting the log mode of", path, e))
    };
    if mode("PRAGMA journal_mode")?.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let now = mode("PRAGMA journal_mode = WAL")?;
    if now.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(io_error(
            "setting the log mode of",
            path,
            format!("could not switch to write-ahead logging (mode is still {now})"),
        ))
    }
}

fn schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let created = (|| {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == 0 {
            conn.execute_batch(SCHEMA)?;
            conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        }
        conn.execute_batch("COMMIT")
    })();
    if created.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    created
}

fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

fn revision_of(conn: &Connection, key: &str) -> rusqlite::Result<Option<Revision>> {
    conn.prepare_cached("SELECT revision FROM leases WHERE key = ?1")?
        .query_row([key], |r| r.get::<_, i64>(0))
        .optional()
        .map(|r| r.map(|r| r as Revision))
}

/// Entries with `from <= key < to` in key order, at most `limit` (0: all).
fn range_on(conn: &Connection, from: &str, to: &str, limit: usize) -> rusqlite::Result<Vec<Entry>> {
    if from >= to {
        return Ok(Vec::new());
    }
    // A negative LIMIT is SQLite's "no limit".
    let limit = if limit == 0 {
        -1
    } else {
        i64::try_from(limit).unwrap_or(i64::MAX)
    };
    conn.prepare_cached(
        "SELECT key, revision, value FROM leases
         WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3",
    )?
    .query_map(params![from, to, limit], row_entry)?
    .collect()
}

fn row_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        key: r.get(0)?,
        revision: r.get::<_, i64>(1)? as Revision,
        value: r.get(2)?,
    })
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let conn = self.conn();
        conn.prepare_cached("SELECT key, revision, value FROM leases WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], row_entry).optional())
            .map_err(|e| self.error(&conn, "reading", e))
    }

    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let conn = self.conn();
        range_on(&conn, from, to, limit).map_err(|e| self.error(&conn, "reading", e))
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StoreError> {
        Ok(Box::new(SqliteSnapshot::take(&self.path, self.deadline)?))
    }

    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        if from >= to {
            return Ok(0);
        }
        let conn = self.conn();
        conn.prepare_cached("SELECT count(*) FROM leases WHERE key >= ?1 AND key < ?2")
            .and_then(|mut s| s.query_row([from, to], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
            .map_err(|e| self.error(&conn, "reading", e))
    }

    async fn commit(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> Result<bool, StoreError> {
        Ok(self.apply(compares, mutations)?.is_some())
    }

    async fn commit_and_read(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
        reads: &[Read],
    ) -> Result<Committed, StoreError> {
        let revision = self.apply(compares, mutations)?;
        Ok(Committed {
            revision,
            answers: self.reads(reads).await?,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.query_row("SELECT count(*) FROM meta", [], |_| Ok(()))
            .map_err(|e| self.error(&conn, "reading", e))
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
