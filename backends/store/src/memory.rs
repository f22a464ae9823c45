use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::{Compare, Entry, LeaseStore, Mutation, Revision, StoreError};

/// In-process store for tests and benchmarks. Same semantics as the durable backends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    map: BTreeMap<String, (Vec<u8>, Revision)>,
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
        if from >= to {
            return Ok(Vec::new());
        }
        let state = self.lock();
        let iter = state
            .map
            .range::<str, _>((Bound::Included(from), Bound::Excluded(to)))
            .map(|(k, (v, r))| Entry {
                key: k.clone(),
                value: v.clone(),
                revision: *r,
            });
        Ok(if limit == 0 {
            iter.collect()
        } else {
            iter.take(limit).collect()
        })
    }

    async fn count(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        if from >= to {
            return Ok(0);
        }
        let state = self.lock();
        Ok(state
            .map
            .range::<str, _>((Bound::Included(from), Bound::Excluded(to)))
            .count() as u64)
    }

    async fn commit(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let holds = compares.iter().all(|c| match c {
            Compare::Absent(k) => !state.map.contains_key(k),
            Compare::Revision(k, r) => state.map.get(k).is_some_and(|(_, have)| have == r),
        });
        if !holds {
            return Ok(false);
        }
        state.revision += 1;
        let rev = state.revision;
        for m in mutations {
            match m {
                Mutation::Put(k, v) => {
                    state.map.insert(k.clone(), (v.clone(), rev));
                }
                Mutation::Delete(k) => {
                    state.map.remove(k);
                }
            }
        }
        Ok(true)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
