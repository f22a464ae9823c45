use std::fmt;
use std::path::Path;

use kube_ipam_store::StoreError;
use rusqlite::{Connection, ErrorCode};

use crate::holders;

pub(crate) fn io_error(action: &str, path: &Path, e: impl fmt::Display) -> StoreError {
    StoreError::Io(format!("{action} {}: {e}", path.display()))
}

/// [`sqlite_error`], with the operating system's reason when SQLite's own text hides it
/// ("database or disk is full" for ENOSPC, "disk I/O error" for a failed fsync).
pub(crate) fn sqlite_error_on(
    conn: &Connection,
    action: &str,
    path: &Path,
    e: rusqlite::Error,
) -> StoreError {
    // SAFETY: the handle is only read by SQLite's own accessor while `conn` is borrowed, so
    // it is open and used by no one else for the duration of the call.
    let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
    if errno == 0 || e.sqlite_error_code().is_none() {
        return sqlite_error(action, path, e);
    }
    let os = std::io::Error::from_raw_os_error(errno);
    sqlite_error(action, path, e).with_reason(&os)
}

/// The one mapping from SQLite's answers to the store's errors.
pub(crate) fn sqlite_error(action: &str, path: &Path, e: rusqlite::Error) -> StoreError {
    let code = e.sqlite_error_code();
    match code {
        // Another process kept the write lock past our deadline.
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(format!(
            "{action} {}: another process held the store until the deadline ({e}): {}",
            path.display(),
            holders::describe(path)
        )),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt {
            key: path.display().to_string(),
            reason: format!("{action}: {e}"),
        },
        // SQLite keeps no errno for these two; say plainly what the operator has to fix.
        Some(ErrorCode::DiskFull) => {
            io_error(action, path, format!("{e}: No space left on device"))
        }
        Some(ErrorCode::ReadOnly) => io_error(
            action,
            path,
            format!("{e}: the file or its file system is read-only"),
        ),
        // I/O and fsync failures, permissions, and everything else the file system may answer.
        _ => io_error(action, path, e),
    }
}

trait WithReason {
    fn with_reason(self, os: &std::io::Error) -> StoreError;
}

impl WithReason for StoreError {
    fn with_reason(self, os: &std::io::Error) -> StoreError {
        match self {
            StoreError::Io(m) => StoreError::Io(format!("{m} ({os})")),
            // The errno of a lock refused is EAGAIN; who holds it is said already.
            other => other,
        }
    }
}
