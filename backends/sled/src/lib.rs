//! Embedded sled backend for kube-ipam: one node, offline use, tests.
//!
//! Every plugin process on the node opens the same directory, one at a time. sled refuses a
//! second opener at once instead of waiting, so processes queue on a `flock` of their own
//! before sled is opened; a process that waits too long gets [`StoreError::Busy`], which the
//! plugin reports as "try again later".
//!
//! Each value is stored behind the 8-byte big-endian revision of the commit that wrote it.
//! The revision comes from a counter that every commit bumps inside its own transaction, so
//! revisions grow in commit order, as etcd's do, and survive restarts with the data.

mod lock;

use std::fmt;
use std::fs::{DirBuilder, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kube_ipam_store::{Compare, Entry, LeaseStore, Mutation, Revision, StoreError};
use sled::transaction::ConflictableTransactionError::Abort;
use sled::transaction::{TransactionError, Transactional};
use sled::{IVec, Tree};

/// Key of the last handed-out revision in the `meta` tree.
const REVISION: &[u8] = b"revision";

/// A [`LeaseStore`] in a local sled database, held exclusively by this process.
pub struct SledStore {
    leases: Tree,
    meta: Tree,
    db: sled::Db,
    /// Fields drop in order: the lock goes only after sled has closed its files, or the next
    /// process would get past our lock and fail on sled's.
    _lock: File,
    /// sled runs transactions one at a time but its iterators lock per item, so a range read
    /// could see half of a commit. Commits take this exclusively, range reads shared.
    gate: RwLock<()>,
    path: PathBuf,
}

impl SledStore {
    /// Opens the store in `dir`, creating it (mode 0700) if needed.
    ///
    /// Waits at most `lock_timeout` for other processes using the same directory, then fails
    /// with [`StoreError::Busy`]. The directory stays locked until the store is dropped.
    pub fn open(dir: &Path, lock_timeout: Duration) -> Result<SledStore, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error("creating", dir, e))?;
        let started = Instant::now();
        let lock = lock::acquire(dir, lock_timeout)?;
        let path = dir.join("db");
        let left = lock_timeout.saturating_sub(started.elapsed());
        lock::wait_released(&path.join("db"), dir, left)?;

        let opened = sled::Config::new()
            .path(&path)
            // Every commit flushes before it returns; a timer thread would add nothing.
            .flush_every_ms(None)
            .open()
            .and_then(|db| Ok((db.open_tree("leases")?, db.open_tree("meta")?, db)));
        let (leases, meta, db) = opened.map_err(|e| sled_error("opening", &path, e))?;
        Ok(SledStore {
            leases,
            meta,
            db,
            _lock: lock,
            gate: RwLock::new(()),
            path,
        })
    }

    fn error(&self, action: &str, e: sled::Error) -> StoreError {
        sled_error(action, &self.path, e)
    }

    fn scan(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let limit = if limit == 0 { usize::MAX } else { limit };
        self.leases
            .range(from.as_bytes()..to.as_bytes())
            .take(limit)
            .map(|item| {
                let (key, raw) = item.map_err(|e| self.error("reading", e))?;
                entry(key, &raw)
            })
            .collect()
    }

    fn count_keys(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        if from >= to {
            return Ok(0);
        }
        let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        self.leases
            .range(from.as_bytes()..to.as_bytes())
            .try_fold(0, |n, item| item.map(|_| n + 1))
            .map_err(|e| self.error("reading", e))
    }

    fn apply(&self, compares: &[Compare], mutations: &[Mutation]) -> Result<bool, StoreError> {
        let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        (&self.leases, &self.meta)
            .transaction(|(leases, meta)| {
                for c in compares {
                    let holds = match c {
                        Compare::Absent(k) => leases.get(k)?.is_none(),
                        Compare::Revision(k, want) => match leases.get(k)? {
                            Some(raw) => split(k.as_bytes(), &raw).map_err(Abort)?.0 == *want,
                            None => false,
                        },
                    };
                    if !holds {
                        return Ok(false);
                    }
                }
                if mutations.is_empty() {
                    return Ok(true);
                }
                let revision = match meta.get(REVISION)? {
                    Some(raw) => split(REVISION, &raw).map_err(Abort)?.0 + 1,
                    None => 1,
                };
                meta.insert(REVISION, &revision.to_be_bytes())?;
                for m in mutations {
                    match m {
                        Mutation::Put(k, v) => {
                            let mut stored = Vec::with_capacity(8 + v.len());
                            stored.extend_from_slice(&revision.to_be_bytes());
                            stored.extend_from_slice(v);
                            leases.insert(k.as_bytes(), stored)?;
                        }
                        Mutation::Delete(k) => {
                            leases.remove(k.as_bytes())?;
                        }
                    }
                }
                Ok(true)
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => self.error("writing", e),
            })
    }
}

#[async_trait]
impl LeaseStore for SledStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        match self.leases.get(key).map_err(|e| self.error("reading", e))? {
            Some(raw) => entry(IVec::from(key), &raw).map(Some),
            None => Ok(None),
        }
    }

    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.scan(from, to, limit)
    }

    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        self.count_keys(from, to)
    }

    async fn commit(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> Result<bool, StoreError> {
        let applied = self.apply(compares, mutations)?;
        // A failed flush leaves the commit visible here but perhaps not on disk; reporting
        // the error makes the caller treat it like an etcd request whose outcome is unknown.
        if applied && !mutations.is_empty() {
            self.db.flush().map_err(|e| self.error("flushing", e))?;
        }
        Ok(applied)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.meta
            .get(REVISION)
            .map(drop)
            .map_err(|e| self.error("reading", e))
    }
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn entry(key: IVec, raw: &[u8]) -> Result<Entry, StoreError> {
    let (revision, value) = split(&key, raw)?;
    let value = value.to_vec();
    let key = String::from_utf8(key.to_vec()).map_err(|_| corrupt(&key, "key is not UTF-8"))?;
    Ok(Entry {
        key,
        value,
        revision,
    })
}

fn split<'a>(key: &[u8], raw: &'a [u8]) -> Result<(Revision, &'a [u8]), StoreError> {
    match raw.split_first_chunk::<8>() {
        Some((rev, value)) => Ok((u64::from_be_bytes(*rev), value)),
        None => Err(corrupt(key, "value is shorter than its revision")),
    }
}

fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    }
}

pub(crate) fn io_error(action: &str, path: &Path, e: impl fmt::Display) -> StoreError {
    StoreError::Io(format!("{action} {}: {e}", path.display()))
}

fn sled_error(action: &str, path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(e) => io_error(action, path, e),
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            key: path.display().to_string(),
            reason: format!("sled found damaged data at {at:?}"),
        },
        other => io_error(action, path, other),
    }
}
