//! Keeping the write-ahead log short, and every commit's sync a rewrite in place.

use std::cell::Cell;
use std::ffi::c_int;
use std::time::Duration;

use rusqlite::hooks::Wal;
use rusqlite::Connection;

/// Pages in the write-ahead log past which a commit copies them into the database and starts
/// the log over. Few, because every process that opens the store first reads the log back
/// (up to where it was last started over) to rebuild its index.
const CHECKPOINT_FRAMES: c_int = 64;

thread_local! {
    /// Pages in the log after this thread's last commit, as SQLite reported it.
    static LOG_FRAMES: Cell<c_int> = const { Cell::new(0) };
}

/// SQLite's log hook, run after each commit: how long it left the log.
pub(crate) fn note_log_frames(_: &Wal, frames: c_int) -> rusqlite::Result<()> {
    LOG_FRAMES.with(|f| f.set(frames));
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
pub(crate) fn if_long(conn: &Connection) {
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
