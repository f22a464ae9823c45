//! Snapshots of the embedded store: one read transaction, on a connection of its own.
//!
//! In write-ahead-log mode a read transaction sees the database as of its first read, for
//! as long as it stays open, while writers go on committing to the log beside it: the
//! snapshot costs them nothing. It needs its own connection because the store's connection
//! takes the write lock for commits, which a connection inside a read transaction could not
//! do without giving that transaction up.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use kube_ipam_store::{Entry, Revision, Snapshot, StoreError};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::errors::{sqlite_error, sqlite_error_on};
use crate::rows::range_on;

pub(crate) struct SqliteSnapshot {
    conn: Mutex<Connection>,
    path: PathBuf,
    revision: Revision,
}

impl SqliteSnapshot {
    /// Begins a read transaction on the store at `path`, waiting for a writer that holds
    /// the log's index (it is starting the log over) until `deadline` at most.
    pub(crate) fn take(path: &Path, deadline: Instant) -> Result<SqliteSnapshot, StoreError> {
        // No CREATE: the store's own connection has set the file up.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| sqlite_error("opening", path, e))?;
        let fail = |action: &'static str| {
            let conn = &conn;
            move |e| sqlite_error_on(conn, action, path, e)
        };
        conn.busy_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(fail("configuring"))?;
        // As for the store's own connection: closing last must not checkpoint and delete
        // the log that the next process would then create again.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(fail("configuring"))?;
        // The transaction takes its view at this first read, and keeps it until the
        // connection closes with the snapshot.
        conn.execute_batch("BEGIN DEFERRED")
            .map_err(fail("reading"))?;
        let revision: i64 = conn
            .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(fail("reading"))?
            .unwrap_or(0);
        Ok(SqliteSnapshot {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            revision: revision as Revision,
        })
    }
}

#[async_trait]
impl Snapshot for SqliteSnapshot {
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        range_on(&conn, from, to, limit)
            .map_err(|e| sqlite_error_on(&conn, "reading", &self.path, e))
    }

    fn revision(&self) -> Revision {
        self.revision
    }
}
