//! Opening the database file: the settings every connection needs, the schema of a new file,
//! and write-ahead-log mode.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kube_ipam_store::StoreError;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::checkpoint;
use crate::errors::{io_error, sqlite_error, sqlite_error_on};

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

/// Size the log file is cut back to when it is started over after a burst made it larger.
const LOG_FILE_LIMIT: u64 = 512 << 10;

/// Opens `path` and makes it a kube-ipam store if it is not one yet, waiting for other
/// writers until `deadline` at most, over all steps together.
pub(crate) fn connect(path: &Path, deadline: Instant) -> Result<Connection, StoreError> {
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
    conn.wal_hook(Some(checkpoint::note_log_frames));
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

pub(crate) fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}
