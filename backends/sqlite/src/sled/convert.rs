//! The conversion of a sled store into the SQLite store, in place.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use kube_ipam_store::StoreError;
use rusqlite::params;

use super::SLED_DIR;
use crate::connection::connect;
use crate::errors::{io_error, sqlite_error};
use crate::DB_FILE;

/// Where a converted sled database is moved, kept for the operator to remove.
const SLED_CONVERTED: &str = "db.sled-converted";
/// Key of the last handed-out revision in the sled `meta` tree.
const SLED_REVISION: &[u8] = b"revision";

/// Copies the sled store in `dir` into a new SQLite store there, keeping every key, value and
/// revision, then moves the sled database aside. Returns how many keys were copied.
///
/// Safe to run again after an interruption at any point: until the sled database has been
/// moved aside no plugin opens the new file, so an unfinished copy is simply made anew.
pub fn convert(dir: &Path) -> Result<u64, StoreError> {
    let sled_dir = dir.join(SLED_DIR);
    if !sled_dir.is_dir() {
        return Err(StoreError::Io(format!(
            "{} holds no sled store to convert (no directory {})",
            dir.display(),
            sled_dir.display()
        )));
    }
    // Plugins of the earlier release may still be running: they queue on this lock.
    let _lock = old_lock(dir)?;
    let db = ::sled::Config::new()
        .path(&sled_dir)
        .open()
        .map_err(|e| io_error("opening", &sled_dir, e))?;
    let sled_error = |e: ::sled::Error| io_error("reading", &sled_dir, e);
    let leases = db.open_tree("leases").map_err(sled_error)?;
    let meta = db.open_tree("meta").map_err(sled_error)?;

    let tmp = dir.join(format!("{DB_FILE}.converting"));
    remove(&tmp)?;
    remove_with_sidecars(&tmp)?;
    let at = tmp.as_path();
    let fail = |action: &'static str| move |e| sqlite_error(action, at, e);
    let mut conn = connect(&tmp, Instant::now() + Duration::from_secs(10))?;
    let tx = conn.transaction().map_err(fail("writing"))?;
    let mut copied = 0u64;
    let mut last = 0u64;
    for item in leases.iter() {
        let (key, raw) = item.map_err(sled_error)?;
        let (revision, value) = split(&key, &raw)?;
        let key = String::from_utf8(key.to_vec()).map_err(|_| StoreError::Corrupt {
            key: String::from_utf8_lossy(&key).into_owned(),
            reason: "key is not UTF-8".into(),
        })?;
        tx.execute(
            "INSERT INTO leases (key, revision, value) VALUES (?1, ?2, ?3)",
            params![key, revision as i64, value],
        )
        .map_err(fail("writing"))?;
        last = last.max(revision);
        copied += 1;
    }
    if let Some(raw) = meta.get(SLED_REVISION).map_err(sled_error)? {
        last = last.max(split(SLED_REVISION, &raw)?.0);
    }
    tx.execute(
        "INSERT INTO meta (name, value) VALUES ('revision', ?1)",
        [last as i64],
    )
    .map_err(fail("writing"))?;
    tx.commit().map_err(fail("writing"))?;
    // Everything into the main file, so that renaming that one file moves the whole store.
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .map_err(fail("checkpointing"))?;
    if busy != 0 {
        return Err(StoreError::Busy(format!(
            "checkpointing {}: another process has it open",
            tmp.display()
        )));
    }
    conn.close().map_err(|(_, e)| fail("closing")(e))?;
    drop(db);

    let target = dir.join(DB_FILE);
    // Sidecars of an earlier try would be read as part of the new file.
    remove_with_sidecars(&target)?;
    remove_with_sidecars(&tmp)?;
    fs::rename(&tmp, &target).map_err(|e| io_error("renaming", &target, e))?;
    sync_dir(dir)?;
    let aside = dir.join(SLED_CONVERTED);
    fs::rename(&sled_dir, &aside).map_err(|e| io_error("moving aside", &sled_dir, e))?;
    sync_dir(dir)?;
    Ok(copied)
}

fn old_lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error("opening", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Busy(format!(
            "{} is in use by a running kube-ipam of the earlier release; try again",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(io_error("locking", &path, e)),
    }
}

fn split<'a>(key: &[u8], raw: &'a [u8]) -> Result<(u64, &'a [u8]), StoreError> {
    match raw.split_first_chunk::<8>() {
        Some((rev, value)) => Ok((u64::from_be_bytes(*rev), value)),
        None => Err(StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "value is shorter than its revision".into(),
        }),
    }
}

fn remove_with_sidecars(db: &Path) -> Result<(), StoreError> {
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        remove(Path::new(&name))?;
    }
    Ok(())
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("removing", path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing", dir, e))
}
