use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::{
    Answer, Committed, Compare, Entry, LeaseStore, Mutation, Read, Revision, Snapshot, StoreError,
};

/// In-process store for tests and benchmarks. Same semantics as the durable backends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

type Map = BTreeMap<String, (Vec<u8>, Revision)>;

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    /// Shared with the snapshots taken since the last commit; a commit copies it first
    /// while any of them is alive, so they keep the state they were taken in.
    map: Arc<Map>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another test thread panicked; the map itself is
        // always left consistent because every commit is applied in one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn range(map: &Map, from: &str, to: &str, limit: usize) -> Vec<Entry> {
    if from >= to {
        return Vec::new();
    }
    let iter = map
        .range::<str, _>((Bound::Included(from), Bound::Excluded(to)))
        .map(|(k, (v, r))| Entry {
            key: k.clone(),
            value: v.clone(),
            revision: *r,
        });
    if limit == 0 {
        iter.collect()
    } else {
        iter.take(limit).collect()
    }
}

impl State {
    fn range(&self, from: &str, to: &str, limit: usize) -> Vec<Entry> {
        range(&self.map, from, to, limit)
    }

    fn count(&self, from: &str, to: &str) -> u64 {
        if from >= to {
            return 0;
        }
        self.map
            .range::<str, _>((Bound::Included(from), Bound::Excluded(to)))
            .count() as u64
    }

    fn answer(&self, read: &Read) -> Answer {
        match read {
            Read::Range {
                from, to, limit, ..
            } => Answer::Entries(self.range(from, to, *limit)),
            Read::Counts {
                ranges,
                skip_if_present,
            } => {
                if !skip_if_present.is_empty()
                    && skip_if_present.iter().all(|k| self.map.contains_key(k))
                {
                    return Answer::Counts(None);
                }
                Answer::Counts(Some(ranges.iter().map(|(f, t)| self.count(f, t)).collect()))
            }
        }
    }

    /// The revision after the commit, or `None` when a comparison fails.
    fn apply(&mut self, compares: &[Compare], mutations: &[Mutation]) -> Option<Revision> {
        let holds = compares.iter().all(|c| match c {
            Compare::Absent(k) => !self.map.contains_key(k),
            Compare::Revision(k, r) => self.map.get(k).is_some_and(|(_, have)| have == r),
        });
        if !holds {
            return None;
        }
        self.revision += 1;
        let rev = self.revision;
        let map = Arc::make_mut(&mut self.map);
        for m in mutations {
            match m {
                Mutation::Put(k, v) => {
                    map.insert(k.clone(), (v.clone(), rev));
                }
                Mutation::Delete(k) => {
                    map.remove(k);
                }
            }
        }
        Some(rev)
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.lock().map.get(key).map(|(v, r)| Entry {
            key: key.to_owned(),
            value: v.clone(),
            revision: *r,
        }))
    }

    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        Ok(self.lock().range(from, to, limit))
    }

    async fn snapshot(&self) -> Result<Box<dyn Snapshot + '_>, StoreError> {
        let state = self.lock();
        Ok(Box::new(Frozen {
            map: state.map.clone(),
            revision: state.revision,
        }))
    }

    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        Ok(self.lock().count(from, to))
    }

    async fn reads(&self, reads: &[Read]) -> Result<Vec<Answer>, StoreError> {
        let state = self.lock();
        Ok(reads.iter().map(|r| state.answer(r)).collect())
    }

    async fn commit(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> Result<bool, StoreError> {
        Ok(self.lock().apply(compares, mutations).is_some())
    }

    async fn commit_and_read(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
        reads: &[Read],
    ) -> Result<Committed, StoreError> {
        let mut state = self.lock();
        let revision = state.apply(compares, mutations);
        let answers = reads.iter().map(|r| state.answer(r)).collect();
        Ok(Committed { revision, answers })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A [`MemoryStore`] state: the map as it was, which later commits copy before changing.
struct Frozen {
    map: Arc<Map>,
    revision: Revision,
}

#[async_trait]
impl Snapshot for Frozen {
    async fn range(&self, from: &str, to: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        Ok(range(&self.map, from, to, limit))
    }

    fn revision(&self) -> Revision {
        self.revision
    }
}
