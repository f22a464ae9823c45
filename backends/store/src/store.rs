use async_trait::async_trait;

use crate::StoreError;

/// A store-wide, monotonically increasing version of a key's last change
/// (etcd's `mod_revision`). Never 0 for a key that exists.
pub type Revision = u64;

/// One key with its value and the revision of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub revision: Revision,
}

/// One read of a [`LeaseStore::reads`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// [`LeaseStore::range`], or [`LeaseStore::range_keys`] when `keys_only`.
    Range {
        from: String,
        to: String,
        limit: usize,
        keys_only: bool,
    },
    /// [`LeaseStore::count`] of each `[from, to)` of `ranges`. A store may leave them out
    /// when `skip_if_present` is not empty and every key of it exists: a search counts where
    /// to look next in a range whose summary keys may well call it full already, and a
    /// store where counting costs can spare that work.
    Counts {
        ranges: Vec<(String, String)>,
        skip_if_present: Vec<String>,
    },
}

/// What one [`Read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Entries(Vec<Entry>),
    /// `None`: left out, as [`Read::Counts`] allows.
    Counts(Option<Vec<u64>>),
}

impl Answer {
    /// The entries of a [`Read::Range`].
    pub fn into_entries(self) -> Result<Vec<Entry>, StoreError> {
        match self {
            Answer::Entries(e) => Ok(e),
            Answer::Counts(_) => Err(mismatched("entries")),
        }
    }

    /// The figures of a [`Read::Counts`], if counted.
    pub fn into_counts(self) -> Result<Option<Vec<u64>>, StoreError> {
        match self {
            Answer::Counts(n) => Ok(n),
            Answer::Entries(_) => Err(mismatched("counts")),
        }
    }
}

fn mismatched(want: &str) -> StoreError {
    StoreError::Corrupt {
        key: "(a batch of reads)".into(),
        reason: format!("answered out of order where {want} were due"),
    }
}

/// What a [`LeaseStore::commit_and_read`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// `None`: a comparison failed and nothing was applied. Otherwise the store's revision
    /// just after the commit, which every key it put carries.
    pub revision: Option<Revision>,
    /// The answers to the reads, in order, made after the commit (or after the attempt).
    pub answers: Vec<Answer>,
}

/// A condition of a [`LeaseStore::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last changed at exactly this revision.
    Revision(String, Revision),
}

/// A change applied by a [`LeaseStore::commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Mutation {
    pub fn key(&self) -> &str {
        match self {
            Mutation::Put(k, _) | Mutation::Delete(k) => k,
        }
    }
}

/// One state of the whole store, read in as many requests as it takes.
///
/// Every read of a snapshot sees the store exactly as it was when the snapshot was taken,
/// whatever commits meanwhile, from this process or any other: a commit is in all of its
/// reads or in none. A scan of the whole store in pages therefore never sees one half of a
/// commit (an address record without the owner record written with it), which is what lets
/// a check hold one kind of record against another while ADDs and DELs go on. Taking and
/// reading a snapshot never holds up a commit.
///
/// A store may stop keeping the state before the snapshot is dropped (etcd compacts old
/// revisions away); its reads then fail with [`StoreError::Compacted`], never with a
/// different state, and the caller starts over on a new snapshot.
#[async_trait]
pub trait Snapshot: Send + Sync {
    /// Like [`LeaseStore::range`], in this state.
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// Like [`LeaseStore::get`], in this state.
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let mut end = key.to_owned();
        end.push('\0');
        Ok(self.range(key, &end, 1).await?.into_iter().next())
    }

    /// The store's revision in this state: that of the last commit it includes.
    fn revision(&self) -> Revision;
}

/// Ordered key-value storage with conditional multi-key commits.
///
/// Keys are ASCII and compare bytewise. Implementations must make `commit` atomic (all
/// mutations or none), conditional (applied only if every comparison holds at the moment of
/// applying) and durable before it returns `Ok(true)`.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// The entry at `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Entries with `from <= key < to`, in key order, at most `limit` of them (0: no limit).
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// Like [`LeaseStore::range`], but values may be left empty: for callers that only need
    /// to know which keys exist. Backends that can skip transferring values should.
    async fn range_keys(
        &self,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.range(from, to, limit).await
    }

    /// One state of the whole store, as it is now, for reads in many requests: see
    /// [`Snapshot`]. The store keeps that state until the snapshot is dropped.
    async fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StoreError>;

    /// How many keys lie in `from <= key < to`.
    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError>;

    /// [`LeaseStore::count`] of each `[from, to)` of `ranges`, in one round trip where the
    /// store can: a search narrows a block down by counting its parts all at once.
    async fn counts(&self, ranges: &[(String, String)]) -> Result<Vec<u64>, StoreError> {
        let read = Read::Counts {
            ranges: ranges.to_vec(),
            skip_if_present: Vec::new(),
        };
        let answer = self.reads(&[read]).await?.into_iter().next();
        match answer.map(Answer::into_counts).transpose()?.flatten() {
            Some(counts) if counts.len() == ranges.len() => Ok(counts),
            _ => Err(mismatched("counts")),
        }
    }

    /// Every read of `reads`, answered in order, in as few round trips as the store can (etcd:
    /// one, up to its limit on a transaction's operations): the first steps of the searches
    /// of several ranges (summary keys, counts, a window) go out together, so a range behind
    /// a full one costs no extra trip. Reads in different round trips may see different
    /// revisions.
    async fn reads(&self, reads: &[Read]) -> Result<Vec<Answer>, StoreError> {
        let mut out = Vec::with_capacity(reads.len());
        for r in reads {
            out.push(match r {
                Read::Range {
                    from,
                    to,
                    limit,
                    keys_only: true,
                } => Answer::Entries(self.range_keys(from, to, *limit).await?),
                Read::Range {
                    from, to, limit, ..
                } => Answer::Entries(self.range(from, to, *limit).await?),
                Read::Counts {
                    ranges,
                    skip_if_present,
                } => {
                    let mut present = !skip_if_present.is_empty();
                    for key in skip_if_present {
                        present = present && self.get(key).await?.is_some();
                    }
                    if present {
                        out.push(Answer::Counts(None));
                        continue;
                    }
                    let mut counts = Vec::with_capacity(ranges.len());
                    for (from, to) in ranges {
                        counts.push(self.count(from, to).await?);
                    }
                    Answer::Counts(Some(counts))
                }
            });
        }
        Ok(out)
    }

    /// Applies `mutations` if and only if every comparison in `compares` holds.
    /// Returns whether they were applied.
    async fn commit(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> Result<bool, StoreError>;

    /// [`LeaseStore::commit`], then [`LeaseStore::reads`] of `reads` whether or not it was
    /// applied, in one round trip where the store can. This is how a search claims blocks
    /// with placeholders and counts their records at once: the counts must come after the
    /// placeholders are in place, and the revision they carry is what the search's later
    /// "full" is conditional on. Reads see the store no earlier than the commit.
    async fn commit_and_read(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
        reads: &[Read],
    ) -> Result<Committed, StoreError>;

    /// Cheap round trip proving the store can serve requests now.
    async fn ping(&self) -> Result<(), StoreError>;
}

#[async_trait]
impl<S: LeaseStore + ?Sized> LeaseStore for std::sync::Arc<S> {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        (**self).get(key).await
    }
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        (**self).range(from, to, limit).await
    }
    async fn range_keys(
        &self,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        (**self).range_keys(from, to, limit).await
    }
    async fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StoreError> {
        (**self).snapshot().await
    }
    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        (**self).count(from, to).await
    }
    async fn reads(&self, reads: &[Read]) -> Result<Vec<Answer>, StoreError> {
        (**self).reads(reads).await
    }
    async fn commit(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> Result<bool, StoreError> {
        (**self).commit(compares, mutations).await
    }
    async fn commit_and_read(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
        reads: &[Read],
    ) -> Result<Committed, StoreError> {
        (**self).commit_and_read(compares, mutations, reads).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        (**self).ping().await
    }
}

#[async_trait]
impl<S: LeaseStore + ?Sized> LeaseStore for Box<S> {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        (**self).get(key).await
    }
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        (**self).range(from, to, limit).await
    }
    async fn range_keys(
        &self,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        (**self).range_keys(from, to, limit).await
    }
    async fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StoreError> {
        (**self).snapshot().await
    }
    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        (**self).count(from, to).await
    }
    async fn reads(&self, reads: &[Read]) -> Result<Vec<Answer>, StoreError> {
        (**self).reads(reads).await
    }
    async fn commit(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> Result<bool, StoreError> {
        (**self).commit(compares, mutations).await
    }
    async fn commit_and_read(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
        reads: &[Read],
    ) -> Result<Committed, StoreError> {
        (**self).commit_and_read(compares, mutations, reads).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        (**self).ping().await
    }
}
