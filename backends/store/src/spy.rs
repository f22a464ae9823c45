//! A store that tallies what is asked of it, and lets a test act just before or after a
//! commit: for the tests and benches that measure what a search reads and how many requests
//! an ADD sends, or that make a release land between two commits of one search.
//!
//! Behind the `testing` feature; tests and benches enable it through their dev-dependency.

use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::{
    Answer, Committed, Compare, Entry, LeaseStore, MemoryStore, Mutation, Read, Snapshot,
    StoreError,
};

/// What was asked of a [`Spy`] since its tally was last taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Requests: each call is one, and a batch of reads ([`LeaseStore::reads`],
    /// [`LeaseStore::counts`], [`LeaseStore::commit_and_read`]) is one, as a store that
    /// batches sends it. Taking a snapshot is one; the snapshot's own reads are not tallied.
    pub trips: usize,
    /// Keys looked up one by one, found or not.
    pub gets: usize,
    /// Range reads, alone or in a batch.
    pub ranges: usize,
    /// Those of [`Tally::ranges`] that found nothing.
    pub empty_ranges: usize,
    /// Entries the range reads returned.
    pub entries: usize,
    /// Figures counted: one per range of a count.
    pub counts: usize,
    /// Commits, alone or with reads; not those of the hooks.
    pub commits: usize,
}

/// A commit as a [`Spy`] hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    pub compares: &'a [Compare],
    pub mutations: &'a [Mutation],
    /// The reads of a [`LeaseStore::commit_and_read`]; `None` for a [`LeaseStore::commit`].
    pub reads: Option<&'a [Read]>,
}

type Before = Box<dyn Fn(&Commit<'_>) -> Vec<Mutation> + Send + Sync>;
type After = Box<dyn Fn(&Commit<'_>, bool) + Send + Sync>;

/// `inner` (the memory store unless named), with a [`Tally`] of every call and two hooks.
///
/// A batch of reads is answered one read at a time, through `inner`, as the default
/// [`LeaseStore::reads`] does: the tally then says which keys a store without batching would
/// read, the summary keys that may spare a count included. A commit with reads goes to
/// `inner` whole, and only its answers are tallied.
pub struct Spy<S = MemoryStore> {
    inner: S,
    tally: Mutex<Tally>,
    before: Option<Before>,
    after: Option<After>,
}

impl Default for Spy<MemoryStore> {
    fn default() -> Self {
        Spy::new(MemoryStore::new())
    }
}

impl<S: LeaseStore> Spy<S> {
    pub fn new(inner: S) -> Self {
        Spy {
            inner,
            tally: Mutex::new(Tally::default()),
            before: None,
            after: None,
        }
    }

    /// Just before each commit reaches `inner`, `hook`'s mutations are committed there,
    /// unconditionally and untallied, as another client's commit that lands first.
    pub fn before_commit(
        mut self,
        hook: impl Fn(&Commit<'_>) -> Vec<Mutation> + Send + Sync + 'static,
    ) -> Self {
        self.before = Some(Box::new(hook));
        self
    }

    /// `hook` sees each commit once `inner` has answered it, with whether it was applied.
    pub fn after_commit(
        mut self,
        hook: impl Fn(&Commit<'_>, bool) + Send + Sync + 'static,
    ) -> Self {
        self.after = Some(Box::new(hook));
        self
    }

    /// The store behind the spy, for what a test writes or reads without being tallied.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The tally since the last call, which starts a new one.
    pub fn take(&self) -> Tally {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        // A poisoned tally only means another test thread panicked while counting.
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn trip(&self) {
        self.lock().trips += 1;
    }

    fn ranged(&self, entries: &[Entry]) {
        let mut t = self.lock();
        t.ranges += 1;
        t.entries += entries.len();
        if entries.is_empty() {
            t.empty_ranges += 1;
        }
    }

    async fn get_tallied(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.lock().gets += 1;
        self.inner.get(key).await
    }

    async fn range_tallied(
        &self,
        from: &str,
        to: &str,
        limit: usize,
        keys_only: bool,
    ) -> Result<Vec<Entry>, StoreError> {
        let entries = if keys_only {
            self.inner.range_keys(from, to, limit).await?
        } else {
            self.inner.range(from, to, limit).await?
        };
        self.ranged(&entries);
        Ok(entries)
    }

    async fn count_tallied(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        self.lock().counts += 1;
        self.inner.count(from, to).await
    }

    /// Runs the hook before `commit`, then `send`, then the hook after it.
    async fn committing<T>(
        &self,
        commit: Commit<'_>,
        applied: impl Fn(&T) -> bool,
        send: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        {
            let mut t = self.lock();
            t.trips += 1;
            t.commits += 1;
        }
        if let Some(before) = &self.before {
            let first = before(&commit);
            if !first.is_empty() {
                self.inner.commit(&[], &first).await?;
            }
        }
        let done = send.await?;
        if let Some(after) = &self.after {
            after(&commit, applied(&done));
        }
        Ok(done)
    }
}

#[async_trait]
impl<S: LeaseStore> LeaseStore for Spy<S> {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.trip();
        self.get_tallied(key).await
    }

    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.trip();
        self.range_tallied(from, to, limit, false).await
    }

    async fn range_keys(
        &self,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.trip();
        self.range_tallied(from, to, limit, true).await
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StoreError> {
        self.trip();
        self.inner.snapshot().await
    }

    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        self.trip();
        self.count_tallied(from, to).await
    }

    async fn reads(&self, reads: &[Read]) -> Result<Vec<Answer>, StoreError> {
        self.trip();
        let mut out = Vec::with_capacity(reads.len());
        for r in reads {
            out.push(match r {
                Read::Range {
                    from,
                    to,
                    limit,
                    keys_only,
                } => Answer::Entries(self.range_tallied(from, to, *limit, *keys_only).await?),
                Read::Counts {
                    ranges,
                    skip_if_present,
                } => {
                    // As the default `reads`: the first key missing ends the look.
                    let mut present = !skip_if_present.is_empty();
                    for key in skip_if_present {
                        present = present && self.get_tallied(key).await?.is_some();
                    }
                    if present {
                        Answer::Counts(None)
                    } else {
                        let mut counts = Vec::with_capacity(ranges.len());
                        for (from, to) in ranges {
                            counts.push(self.count_tallied(from, to).await?);
                        }
                        Answer::Counts(Some(counts))
                    }
                }
            });
        }
        Ok(out)
    }

    async fn commit(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> Result<bool, StoreError> {
        let commit = Commit {
            compares,
            mutations,
            reads: None,
        };
        self.committing(commit, |ok| *ok, self.inner.commit(compares, mutations))
            .await
    }

    async fn commit_and_read(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
        reads: &[Read],
    ) -> Result<Committed, StoreError> {
        let commit = Commit {
            compares,
            mutations,
            reads: Some(reads),
        };
        let done = self
            .committing(
                commit,
                |c: &Committed| c.revision.is_some(),
                self.inner.commit_and_read(compares, mutations, reads),
            )
            .await?;
        for a in &done.answers {
            match a {
                Answer::Entries(e) => self.ranged(e),
                Answer::Counts(n) => self.lock().counts += n.as_ref().map_or(0, Vec::len),
            }
        }
        Ok(done)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.trip();
        self.inner.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn put(k: &str) -> Mutation {
        Mutation::Put(k.into(), b"v".to_vec())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_conformance_suite() {
        crate::conformance::run(Arc::new(Spy::default()), "/spy")
            .await
            .unwrap();
    }

    #[test]
    fn a_batch_is_one_trip_and_its_reads_are_tallied_one_by_one() {
        let spy = Spy::default();
        rt().block_on(async {
            spy.inner()
                .commit(&[], &[put("a/1"), put("a/2")])
                .await
                .unwrap();
            let reads = [
                Read::Range {
                    from: "a/".into(),
                    to: "a0".into(),
                    limit: 0,
                    keys_only: true,
                },
                Read::Range {
                    from: "b/".into(),
                    to: "b0".into(),
                    limit: 0,
                    keys_only: false,
                },
                // "x" is missing: the look at "a/2" after it is not made.
                Read::Counts {
                    ranges: vec![("a/".into(), "a0".into()), ("b/".into(), "b0".into())],
                    skip_if_present: vec!["a/1".into(), "x".into(), "a/2".into()],
                },
                Read::Counts {
                    ranges: vec![("a/".into(), "a0".into())],
                    skip_if_present: vec!["a/1".into()],
                },
            ];
            let answers = spy.reads(&reads).await.unwrap();
            assert_eq!(answers[2], Answer::Counts(Some(vec![2, 0])));
            assert_eq!(answers[3], Answer::Counts(None));
            let want = Tally {
                trips: 1,
                gets: 3,
                ranges: 2,
                empty_ranges: 1,
                entries: 2,
                counts: 2,
                commits: 0,
            };
            assert_eq!(spy.take(), want);
            assert_eq!(spy.take(), Tally::default());
            spy.counts(&[("a/".into(), "a0".into())]).await.unwrap();
            spy.get("a/1").await.unwrap();
            let t = spy.take();
            assert_eq!((t.trips, t.gets, t.counts), (2, 1, 1));
        });
    }

    #[test]
    fn a_commit_with_reads_is_one_trip_and_tallies_its_answers() {
        let spy = Spy::default();
        rt().block_on(async {
            let reads = [
                Read::Range {
                    from: "a/".into(),
                    to: "a0".into(),
                    limit: 0,
                    keys_only: false,
                },
                Read::Counts {
                    ranges: vec![("a/".into(), "a0".into()), ("b/".into(), "b0".into())],
                    skip_if_present: Vec::new(),
                },
            ];
            let done = spy
                .commit_and_read(&[], &[put("a/1")], &reads)
                .await
                .unwrap();
            assert!(done.revision.is_some());
            let t = spy.take();
            assert_eq!(
                (t.trips, t.commits, t.ranges, t.entries, t.counts),
                (1, 1, 1, 1, 2)
            );
        });
    }

    #[test]
    fn hooks_see_each_commit_and_land_a_commit_before_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let armed = Arc::new(AtomicBool::new(true));
        let spy = Spy::default()
            .before_commit({
                let armed = armed.clone();
                move |c| {
                    if c.reads.is_none() && armed.swap(false, Ordering::SeqCst) {
                        vec![put("k")]
                    } else {
                        Vec::new()
                    }
                }
            })
            .after_commit({
                let seen = seen.clone();
                move |c, applied| {
                    seen.lock()
                        .unwrap()
                        .push((c.mutations.len(), c.reads.is_some(), applied))
                }
            });
        rt().block_on(async {
            // The hook's put lands first, so this create-if-absent fails.
            let k = Compare::Absent("k".into());
            assert!(!spy.commit(&[k], &[put("k")]).await.unwrap());
            assert!(spy.inner().get("k").await.unwrap().is_some());
            let done = spy
                .commit_and_read(&[], &[put("j"), put("l")], &[])
                .await
                .unwrap();
            assert!(done.revision.is_some());
            assert_eq!(spy.take().commits, 2);
        });
        assert_eq!(*seen.lock().unwrap(), [(1, false, false), (2, true, true)]);
    }
}
