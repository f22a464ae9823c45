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
