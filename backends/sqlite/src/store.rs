//! The store: one connection to the database, each commit one write transaction.

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
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::connection::{connect, wal_path};
use crate::errors::{io_error, sqlite_error_on};
use crate::rows::{range_on, revision_of, row_entry};
use crate::snapshot::SqliteSnapshot;
use crate::{checkpoint, sled, DB_FILE};

/// A [`LeaseStore`] in a local SQLite database shared with other processes.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    pub(crate) path: PathBuf,
    /// No wait for another writer goes past this.
    pub(crate) deadline: Instant,
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
    /// A directory still holding the sled store of earlier releases is refused with
    /// [`StoreError::Io`] naming the command that converts it: opening an empty store beside
    /// it would hand out the addresses it holds.
    pub fn open(dir: &Path, lock_timeout: Duration) -> Result<SqliteStore, StoreError> {
        let deadline = Instant::now() + lock_timeout;
        sled::refuse_unconverted(dir)?;
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

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn error(&self, conn: &Connection, action: &str, e: rusqlite::Error) -> StoreError {
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
        checkpoint::if_long(&conn);
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
