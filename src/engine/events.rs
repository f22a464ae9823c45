//! Counters of things short-lived CNI processes do: leaks released by the GC verb, fixed
//! addresses taken over. The process that counts is gone by the next scrape, so each count
//! is an event record written in the very commit that released or took over the addresses:
//! it exists exactly when the thing it counts happened. Every event has a key of its own, so
//! concurrent releases never meet on a shared counter key. The collector folds events into
//! one totals record from time to time, so they do not pile up.

use std::collections::BTreeMap;

use kube_ipam_store::records::{decode, encode};
use kube_ipam_store::{Compare, Entry, Keys, LeaseStore, Mutation, Snapshot};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::unix_now;
use crate::Result;

/// Events folded into the totals per commit: well under etcd's default 128 operations.
const FOLD_BATCH: usize = 100;
/// Folds lost to a concurrent writer of the totals before a pass gives up folding.
const FOLD_ATTEMPTS: u32 = 4;

/// What an event counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Counter {
    /// Addresses of attachments released by the collector (`kube-ipam gc`).
    LeaksGc,
    /// Addresses of attachments released by the CNI GC verb.
    LeaksCniGc,
    /// Named addresses taken over from a pod Kubernetes has given up.
    Takeovers,
}

/// Counts per counter, then per range id.
pub type Tally = BTreeMap<Counter, BTreeMap<String, u64>>;

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    counter: Counter,
    /// Addresses per range id.
    ranges: BTreeMap<String, u64>,
    created: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Totals {
    counts: Tally,
}

/// The write of one event counting one address per entry of `ranges`, to go into the
/// commit that does what it counts.
pub fn event<'a>(keys: &Keys, counter: Counter, ranges: impl Iterator<Item = &'a str>) -> Mutation {
    let mut counts = BTreeMap::new();
    for r in ranges {
        *counts.entry(r.to_owned()).or_insert(0) += 1;
    }
    let e = Event {
        counter,
        ranges: counts,
        created: unix_now(),
    };
    // Time first so a listing is in order; pid and randomness keep concurrent writers apart.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = format!(
        "{nanos:024x}-{:08x}-{:016x}",
        std::process::id(),
        rand::rng().random::<u64>()
    );
    Mutation::Put(keys.event(&id), encode(&e))
}

fn add(into: &mut Tally, e: &Event) {
    for (range, n) in &e.ranges {
        *into
            .entry(e.counter)
            .or_default()
            .entry(range.clone())
            .or_insert(0) += n;
    }
}

/// A damaged event counts nothing rather than stopping every pass; it is logged.
fn decode_event(entry: &Entry) -> Option<Event> {
    match decode::<Event>(&entry.key, &entry.value) {
        Ok(e) => Some(e),
        Err(err) => {
            tracing::warn!(error = %err, "ignoring an unreadable counter event");
            None
        }
    }
}

async fn totals<S: LeaseStore + ?Sized>(store: &S, keys: &Keys) -> Result<(Totals, Compare)> {
    let key = keys.totals();
    Ok(match store.get(&key).await? {
        Some(e) => (decode(&key, &e.value)?, Compare::Revision(key, e.revision)),
        None => (Totals::default(), Compare::Absent(key)),
    })
}

/// Every count so far: the totals plus the events not folded into them yet, in one state
/// of the store, so a fold going on meanwhile counts its events exactly once.
pub async fn read(snap: &dyn Snapshot, keys: &Keys) -> Result<Tally> {
    let key = keys.totals();
    let mut tally = match snap.get(&key).await? {
        Some(e) => decode::<Totals>(&key, &e.value)?.counts,
        None => Tally::default(),
    };
    let (from, to) = keys.events();
    for entry in snap.range(&from, &to, 0).await? {
        if let Some(e) = decode_event(&entry) {
            add(&mut tally, &e);
        }
    }
    Ok(tally)
}

/// Moves pending events into the totals, a batch per commit, each commit conditional on the
/// totals and the events being as read, so a count is never lost nor counted twice.
pub async fn fold<S: LeaseStore + ?Sized>(store: &S, keys: &Keys) -> Result<()> {
    let (from, to) = keys.events();
    let mut lost = 0;
    loop {
        let batch = store.range(&from, &to, FOLD_BATCH).await?;
        if batch.is_empty() {
            return Ok(());
        }
        let (mut t, guard) = totals(store, keys).await?;
        let mut compares = vec![guard];
        let mut mutations = Vec::with_capacity(batch.len() + 1);
        for entry in &batch {
            if let Some(e) = decode_event(entry) {
                add(&mut t.counts, &e);
            }
            compares.push(Compare::Revision(entry.key.clone(), entry.revision));
            mutations.push(Mutation::Delete(entry.key.clone()));
        }
        mutations.push(Mutation::Put(keys.totals(), encode(&t)));
        if !store.commit(&compares, &mutations).await? {
            // Another collector folded at the same moment; events stay readable unfolded.
            lost += 1;
            if lost == FOLD_ATTEMPTS {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kube_ipam_store::MemoryStore;

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn folding_keeps_every_count_and_empties_the_events() {
        let store = MemoryStore::default();
        let keys = Keys::new("/p", "n");
        rt().block_on(async {
            for i in 0..250 {
                let ranges = if i % 2 == 0 {
                    vec!["a", "a"]
                } else {
                    vec!["b"]
                };
                let m = event(&keys, Counter::LeaksCniGc, ranges.into_iter());
                assert!(store.commit(&[], &[m]).await.unwrap());
            }
            let m = event(&keys, Counter::Takeovers, ["a"].into_iter());
            assert!(store.commit(&[], &[m]).await.unwrap());
            let before = read(&*store.snapshot().await.unwrap(), &keys)
                .await
                .unwrap();
            assert_eq!(before[&Counter::LeaksCniGc]["a"], 250);
            assert_eq!(before[&Counter::LeaksCniGc]["b"], 125);
            assert_eq!(before[&Counter::Takeovers]["a"], 1);
            fold(&store, &keys).await.unwrap();
            let (from, to) = keys.events();
            assert_eq!(store.count(&from, &to).await.unwrap(), 0);
            assert_eq!(
                read(&*store.snapshot().await.unwrap(), &keys)
                    .await
                    .unwrap(),
                before
            );
        });
    }

    #[test]
    fn an_unreadable_event_counts_nothing_and_is_folded_away() {
        let store = MemoryStore::default();
        let keys = Keys::new("/p", "n");
        rt().block_on(async {
            let bad = Mutation::Put(keys.event("x"), b"{".to_vec());
            let good = event(&keys, Counter::LeaksGc, ["r"].into_iter());
            assert!(store.commit(&[], &[bad, good]).await.unwrap());
            assert_eq!(
                read(&*store.snapshot().await.unwrap(), &keys)
                    .await
                    .unwrap()[&Counter::LeaksGc]["r"],
                1
            );
            fold(&store, &keys).await.unwrap();
            let (from, to) = keys.events();
            assert_eq!(store.count(&from, &to).await.unwrap(), 0);
            assert_eq!(
                read(&*store.snapshot().await.unwrap(), &keys)
                    .await
                    .unwrap()[&Counter::LeaksGc]["r"],
                1
            );
        });
    }
}
