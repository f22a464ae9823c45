//! Healing a range without hints: a nearly full range that nothing has summarised yet (filled by
//! an older version, or imported) is counted and marked in bulk.

use kube_ipam_store::{Answer, Compare, LeaseStore, Mutation, Read};

use super::{Search, WINDOW};
use crate::engine::hints;
use crate::Result;

/// Windows without a hint a search finds full in a row before it counts the rest at once.
pub(super) const HEAL_AFTER: usize = 2;

/// Windows claimed and counted in one request when healing: a placeholder and a count
/// each, within etcd's 128 operations of a transaction.
pub(super) const HEAL_CHUNK: usize = 60;

impl<S: LeaseStore + ?Sized, R: FnMut() -> u128> Search<'_, S, R> {
    /// Claims the windows at `firsts` (seen without a hint) with placeholders and counts
    /// their records, a chunk per request, then writes "full" over those with a record at
    /// every address, conditional on their placeholders, and takes the others back. A
    /// nearly full range without hints (filled by an older version, or imported) heals in
    /// two requests per [`HEAL_CHUNK`] windows, not five per window and search. Returns which
    /// of `firsts` (indexes) it marked full.
    pub(super) async fn heal(&mut self, firsts: &[u128]) -> Result<Vec<usize>> {
        let v6 = self.space.pool.v6;
        let mut marked = Vec::new();
        for (c, chunk) in firsts.chunks(HEAL_CHUNK).enumerate() {
            let keys: Vec<String> = chunk
                .iter()
                .map(|&f| self.space.keys.hint(v6, 0, f))
                .collect();
            let ranges = chunk
                .iter()
                .map(|&f| {
                    let (a, b) = hints::block(0, f);
                    self.space
                        .keys
                        .ip_range(self.space.pool.addr(a), self.space.pool.addr(b))
                })
                .collect();
            let claim: Vec<Compare> = keys.iter().map(|k| Compare::Absent(k.clone())).collect();
            let pending: Vec<Mutation> = keys
                .iter()
                .map(|k| Mutation::Put(k.clone(), hints::PENDING.to_vec()))
                .collect();
            let read = Read::Counts {
                ranges,
                skip_if_present: Vec::new(),
            };
            let done = self
                .store
                .commit_and_read(&claim, &pending, &[read])
                .await?;
            // Another search holds one of them: this chunk is left to the searches.
            let Some(revision) = done.revision else {
                continue;
            };
            let counts = done.answers.into_iter().next().map(Answer::into_counts);
            let counts = match counts.transpose()?.flatten() {
                Some(n) if n.len() == chunk.len() => n,
                _ => {
                    return Err(crate::Error::Internal(
                        "a commit's counts came back short".into(),
                    ))
                }
            };
            let mut ours = Vec::with_capacity(keys.len());
            let mut outcome = Vec::with_capacity(keys.len());
            for (j, (key, n)) in keys.into_iter().zip(counts).enumerate() {
                ours.push(Compare::Revision(key.clone(), revision));
                if u128::from(n) >= WINDOW {
                    outcome.push(Mutation::Put(key, hints::encode(&[])));
                    marked.push(c * HEAL_CHUNK + j);
                } else {
                    outcome.push(Mutation::Delete(key));
                }
            }
            if self.store.commit(&ours, &outcome).await? {
                continue;
            }
            // A release took one placeholder with it (and freed an address there): the
            // others one by one.
            for (j, (cond, m)) in ours.into_iter().zip(outcome).enumerate() {
                let put = matches!(m, Mutation::Put(..));
                if !self.store.commit(&[cond], &[m]).await? && put {
                    marked.retain(|&x| x != c * HEAL_CHUNK + j);
                }
            }
        }
        Ok(marked)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use kube_ipam_store::spy::Spy;
    use kube_ipam_store::{Compare, Keys, LeaseStore, MemoryStore, Mutation};

    use crate::engine::hints::{self, Hint};
    use crate::engine::pool::Pool;
    use crate::engine::search::tests::{big_pool, fill_all_but, hints_hold, lcg};
    use crate::engine::search::{find_free, WINDOW};

    /// A nearly full range that carries no hints is summarised by the first search that
    /// meets it, in bulk, instead of five requests per window and search.
    #[test]
    fn a_nearly_full_range_without_hints_heals_in_one_search() {
        let p = big_pool(0, 1 << 16, None);
        let keys = Keys::new("/t", "n");
        let store = MemoryStore::new();
        let free = [
            p.start + 10 * 1024 + 7,
            p.start + 20 * 1024,
            p.start + 30 * 1024 + 1023,
        ];
        let mut rnd = lcg(3);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            fill_all_but(&store, &keys, &p, &free).await;
            let found = find_free(&store, &keys, &p, &mut rnd).await.unwrap();
            assert!(found.is_some_and(|v| free.contains(&v)), "{found:?}");
            // Every window with a record at each address now says so; the three with room
            // and the first (the network address and the gateway have no record) do not.
            for w in 1..64u128 {
                let first = p.start + w * WINDOW;
                let hint = store.get(&keys.hint(false, 0, first)).await.unwrap();
                let full = hint.is_some_and(|e| hints::decode(&e.value) == Hint::Full(vec![]));
                assert_eq!(full, ![10, 20, 30].contains(&w), "window {w}");
            }
            hints_hold(&store, &keys).await;
            // Each free address is found in turn, then none.
            for _ in 0..3 {
                let v = find_free(&store, &keys, &p, &mut rnd)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(free.contains(&v), "{v}");
                let key = keys.ip(p.addr(v));
                store
                    .commit(
                        &[Compare::Absent(key.clone())],
                        &[Mutation::Put(key, vec![])],
                    )
                    .await
                    .unwrap();
            }
            assert_eq!(find_free(&store, &keys, &p, &mut rnd).await.unwrap(), None);
            hints_hold(&store, &keys).await;
        });
    }

    /// A release lands between a heal's placeholders and its "full" hints, in a window it
    /// counted full: that window's hint is not written, and the address is found.
    #[test]
    fn a_release_while_healing_is_never_hidden() {
        let p = big_pool(0, 1 << 16, None);
        let keys = Keys::new("/t", "n");
        let released = Arc::new(Mutex::new(None));
        let store = releasing_in_the_first_heal(&keys, &p, released.clone());
        let mut rnd = lcg(5);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            fill_all_but(store.inner(), &keys, &p, &[p.start + 40 * 1024 + 9]).await;
            let found = find_free(&store, &keys, &p, &mut rnd).await.unwrap();
            assert!(found.is_some());
            let released = released.lock().unwrap().expect("a heal ran");
            let window = hints::block(0, released).0;
            assert_eq!(
                store
                    .inner()
                    .get(&keys.hint(false, 0, window))
                    .await
                    .unwrap(),
                None
            );
            hints_hold(store.inner(), &keys).await;
            let mut seen = BTreeSet::new();
            while let Some(v) = find_free(&store, &keys, &p, &mut rnd).await.unwrap() {
                assert!(seen.insert(v), "{v} found twice");
                let key = keys.ip(p.addr(v));
                store
                    .commit(
                        &[Compare::Absent(key.clone())],
                        &[Mutation::Put(key, vec![])],
                    )
                    .await
                    .unwrap();
            }
            assert!(seen.contains(&released), "{released} never found");
        });
    }

    /// The memory store, releasing an address (as the engine does, hints with it) of the
    /// first window a bulk claim of placeholders took, just before the commit that follows;
    /// the address goes into `released`.
    fn releasing_in_the_first_heal(
        keys: &Keys,
        pool: &Pool,
        released: Arc<Mutex<Option<u128>>>,
    ) -> Spy {
        let victim = Arc::new(Mutex::new(None));
        // Until the first bulk claim.
        let armed = AtomicBool::new(true);
        let (k, p) = (keys.clone(), pool.clone());
        let take = victim.clone();
        Spy::new(MemoryStore::new())
            .after_commit({
                let keys = keys.clone();
                move |c, applied| {
                    if c.reads.is_some()
                        && c.mutations.len() > 1
                        && applied
                        && armed.swap(false, Ordering::Relaxed)
                    {
                        let first = keys.parse_hint(false, 0, c.mutations[0].key()).unwrap();
                        *victim.lock().unwrap() = Some(first + 100);
                    }
                }
            })
            .before_commit(move |c| {
                if c.reads.is_some() {
                    return Vec::new();
                }
                let Some(v) = take.lock().unwrap().take() else {
                    return Vec::new();
                };
                let addr = p.addr(v);
                let mut release = vec![Mutation::Delete(k.ip(addr))];
                release.extend(hints::freed(&k, addr));
                *released.lock().unwrap() = Some(v);
                release
            })
    }
}
