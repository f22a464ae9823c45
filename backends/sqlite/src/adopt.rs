//! Taking in the per-network databases of earlier releases, which kept each network in a
//! database of its own (`<dataDir>/<network>/store.db`), into the one database of the data
//! directory that every network of it shares.
//!
//! Plugins of the earlier release may still run on the node while the new binary takes over
//! (a call started before the binary was replaced). So the old database is fenced first: its
//! table is renamed, under its write lock, after which every statement of an old process
//! fails ("no such table") instead of writing where nobody reads; the runtime retries such a
//! call, with the new binary. Then every row is copied into the shared database, with the
//! network's marker key, in one transaction that does nothing if the marker is there
//! already (another process took the network in first). Each step is safe to run again after
//! an interruption at any point: the fence is kept, the copy happens once, and the old
//! directory is only renamed once the copy is in.

use std::path::{Path, PathBuf};

use kube_ipam_store::StoreError;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::errors::{io_error, sqlite_error, sqlite_error_on};
use crate::{SqliteStore, DB_FILE};

/// The table of the earlier releases, once fenced.
const FENCED: &str = "leases_moved";

/// The schema version a fenced database says it has: above what the earlier releases know,
/// so that one of them opening it refuses ("written by a newer kube-ipam").
const FENCED_VERSION: i64 = 100;

/// Where a taken-in directory is moved, kept for the operator to remove.
pub const ADOPTED_SUFFIX: &str = ".moved-to-shared-store";

impl SqliteStore {
    /// Takes the earlier release's database of one network, in `dir`, into this store,
    /// unless `marker` says the network is in already. Returns how many keys were copied.
    pub fn adopt(&self, dir: &Path, marker: &str) -> Result<u64, StoreError> {
        let old_db = dir.join(DB_FILE);
        if !old_db.exists() {
            return Ok(0);
        }
        crate::sled::refuse_unconverted(dir)?;
        let copied = if self.has(marker)? {
            0
        } else {
            match fence_and_read(&old_db, self.deadline) {
                Ok(rows) => self.copy_in(rows, marker)?,
                // Another process took it in and moved it aside meanwhile.
                Err(_) if !old_db.exists() && self.has(marker)? => 0,
                Err(e) => return Err(e),
            }
        };
        let moved: PathBuf = {
            let mut p = dir.as_os_str().to_owned();
            p.push(ADOPTED_SUFFIX);
            p.into()
        };
        // Another process may have moved it meanwhile; either way it is out of the way.
        match std::fs::rename(dir, &moved) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("moving aside", dir, e)),
        }
        Ok(copied)
    }

    fn has(&self, key: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        conn.prepare_cached("SELECT 1 FROM leases WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |_| Ok(())).optional())
            .map(|found| found.is_some())
            .map_err(|e| self.error(&conn, "reading", e))
    }

    /// Copies `rows` in, with the marker, at one new revision; nothing when the marker is
    /// there already.
    fn copy_in(&self, rows: Vec<(String, Vec<u8>)>, marker: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        conn.busy_timeout(left)
            .map_err(|e| sqlite_error("configuring", &self.path, e))?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sqlite_error("locking", &self.path, e))?;
        let write = || -> rusqlite::Result<u64> {
            let there: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM leases WHERE key = ?1")?
                .query_row([marker], |r| r.get(0))
                .optional()?;
            if there.is_some() {
                return Ok(0);
            }
            let current: i64 = tx
                .query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
                    r.get(0)
                })
                .optional()?
                .unwrap_or(0);
            let revision = current + 1;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('revision', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [revision],
            )?;
            let mut n = 0;
            {
                let mut put = tx.prepare_cached(
                    "INSERT INTO leases (key, revision, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO NOTHING",
                )?;
                for (k, v) in &rows {
                    n += put.execute(params![k, revision, v])? as u64;
                }
                put.execute(params![marker, revision, b"{}".as_slice()])?;
            }
            Ok(n)
        };
        let n = match write() {
            Ok(n) => n,
            Err(e) => return Err(sqlite_error_on(&tx, "copying into", &self.path, e)),
        };
        tx.commit()
            .map_err(|e| sqlite_error("committing", &self.path, e))?;
        Ok(n)
    }
}

/// Fences the old database (its table renamed, under its write lock) and reads every row.
fn fence_and_read(
    path: &Path,
    deadline: std::time::Instant,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let fail = |action: &'static str| move |e| sqlite_error(action, path, e);
    // Not `connect`: that would set a schema up in a file that has none.
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(fail("opening"))?;
    conn.busy_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        .map_err(fail("configuring"))?;
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(fail("locking"))?;
    let fenced = (|| -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
        let has = |name: &str| -> rusqlite::Result<bool> {
            conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        };
        if has("leases")? && !has(FENCED)? {
            conn.execute_batch(&format!(
                "ALTER TABLE leases RENAME TO {FENCED}; PRAGMA user_version = {FENCED_VERSION};"
            ))?;
        }
        let mut rows = Vec::new();
        let mut stmt = conn.prepare(&format!("SELECT key, value FROM {FENCED} ORDER BY key"))?;
        let mut it = stmt.query([])?;
        while let Some(r) = it.next()? {
            rows.push((r.get(0)?, r.get(1)?));
        }
        Ok(rows)
    })();
    match fenced {
        Ok(rows) => {
            conn.execute_batch("COMMIT").map_err(fail("committing"))?;
            Ok(rows)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(sqlite_error("fencing", path, e))
        }
    }
}
