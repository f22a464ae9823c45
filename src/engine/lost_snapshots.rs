//! A store whose snapshots are lost after their first read, as etcd's are when a compaction
//! passes their revision: for tests of the reads that start over.

use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use kube_ipam_store::{
    Answer, Committed, Compare, Entry, LeaseStore, Mutation, Read, Revision, Snapshot, StoreError,
};

/// `inner`, with the next `lost` snapshots failing every read after their first.
pub(crate) struct LosesSnapshots<S> {
    pub inner: S,
    pub lost: AtomicU32,
}

impl<S> LosesSnapshots<S> {
    pub fn new(inner: S, lost: u32) -> Self {
        LosesSnapshots {
            inner,
            lost: AtomicU32::new(lost),
        }
    }
}

struct Losing<'a> {
    inner: Box<dyn Snapshot + 'a>,
    /// Reads made; `None` for a snapshot that is kept.
    reads: Option<AtomicU32>,
}

#[async_trait]
impl Snapshot for Losing<'_> {
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        if let Some(reads) = &self.reads {
            if reads.fetch_add(1, Ordering::SeqCst) > 0 {
                return Err(StoreError::Compacted(format!(
                    "range at revision {}: required revision has been compacted",
                    self.inner.revision()
                )));
            }
        }
        self.inner.range(from, to, limit).await
    }

    fn revision(&self) -> Revision {
        self.inner.revision()
    }
}

#[async_trait]
impl<S: LeaseStore> LeaseStore for LosesSnapshots<S> {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.inner.get(key).await
    }
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.inner.range(from, to, limit).await
    }
    async fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StoreError> {
        let lose = self
            .lost
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Ok(Box::new(Losing {
            inner: self.inner.snapshot().await?,
            reads: lose.then(|| AtomicU32::new(0)),
        }))
    }
    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        self.inner.count(from, to).await
    }
    async fn reads(&self, reads: &[Read]) -> Result<Vec<Answer>, StoreError> {
        self.inner.reads(reads).await
    }
    async fn commit(&self, c: &[Compare], m: &[Mutation]) -> Result<bool, StoreError> {
        self.inner.commit(c, m).await
    }
    async fn commit_and_read(
        &self,
        c: &[Compare],
        m: &[Mutation],
        r: &[Read],
    ) -> Result<Committed, StoreError> {
        self.inner.commit_and_read(c, m, r).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
