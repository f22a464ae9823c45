use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use kube_ipam_store::StoreError;

use crate::io_error;

/// Takes an exclusive `flock` on `<dir>/lock`, waiting at most `timeout`.
///
/// The lock lives as long as the returned file. The kernel has no timed `flock`, so a
/// contended lock is waited for on a helper thread that hands the locked file back over a
/// channel. When the caller gives up first, the hand-over fails, the file drops and the lock
/// is released the moment it was won: a late winner never keeps the store from others.
pub(crate) fn acquire(dir: &Path, timeout: Duration) -> Result<File, StoreError> {
    let path = &dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error("opening lock file", path, e))?;
    wait(file, path, dir, timeout)
}

/// Waits, at most `timeout`, until nobody holds sled's own lock on `db_file`.
///
/// Our lock on `<dir>/lock` is released before sled's in two cases: a killed process has its
/// files closed in descriptor order, and sled's worker threads may still hold the database
/// open for a moment after the last handle is dropped. sled gives up at once on a held lock,
/// so the next process waits here for it instead of failing.
pub(crate) fn wait_released(
    db_file: &Path,
    dir: &Path,
    timeout: Duration,
) -> Result<(), StoreError> {
    match OpenOptions::new().read(true).open(db_file) {
        Ok(file) => wait(file, db_file, dir, timeout).map(drop),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("opening", db_file, e)),
    }
}

fn wait(file: File, path: &Path, dir: &Path, timeout: Duration) -> Result<File, StoreError> {
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(io_error("locking", path, e)),
    }

    let (tx, rx) = mpsc::sync_channel(1);
    thread::Builder::new()
        .name("store-lock".into())
        .spawn(move || {
            let _ = tx.send(file.lock().map(|()| file));
        })
        .map_err(|e| io_error("starting the lock waiter for", path, e))?;

    match rx.recv_timeout(timeout) {
        Ok(Ok(file)) => Ok(file),
        Ok(Err(e)) => Err(io_error("locking", path, e)),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(StoreError::Busy(format!(
            "{} is locked by another process; gave up after {timeout:?}",
            dir.display()
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::Io(format!(
            "locking {}: the lock waiter stopped without an answer",
            path.display()
        ))),
    }
}
