//! `reuseDelay`: an address just released is not handed to another attachment while another
//! address of its range is free.
//!
//! On macvlan and ipvlan networks the ARP caches of neighbours, conntrack entries and firewall
//! rules written for the pod that held an address outlive it by seconds to minutes; handing
//! the address to the next pod at once lets those reach the wrong pod. So every release leaves a cooling mark beside
//! the address (`<prefix>/_space/cool/...`, the release time in it) in its own commit, and a
//! search counts a marked address as taken for the delay. A claim of the address deletes the
//! mark in its commit. Nothing else is shared: no key that every claim or release writes.
//!
//! When every free address of a range set is cooling, the one released longest ago goes at
//! once: the delay never turns into "no free address".
//!
//! The delay is judged by the clock of the node asking against the release time the node
//! releasing wrote; nodes kept within a second of each other (NTP) keep it to a second.

use std::collections::BTreeSet;

use kube_ipam_store::{LeaseStore, Mutation, Read};

use super::allocator::Allocator;
use super::original::OriginalHeld;
use super::pool::{to_u128, Pool};
use super::search::Cooling;
use crate::Result;
use serde::{Deserialize, Serialize};

/// Marks whose addresses are looked up in one request when every free address is cooling.
const MARK_BATCH: usize = 64;

/// What a cooling mark holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    /// Unix milliseconds: releases within one second are still told apart, so the one
    /// released longest ago goes first.
    pub released_ms: u64,
}

/// The release time of a mark's value; one that cannot be read cools nothing (a mark is a
/// preference, never the truth about whether an address is taken).
pub fn released(value: &[u8]) -> u64 {
    serde_json::from_slice::<Mark>(value)
        .map(|m| m.released_ms)
        .unwrap_or(0)
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl<S: LeaseStore> Allocator<S> {
    /// The reuse delay as a search applies it now, if there is one.
    pub(super) fn cooling(&self) -> Option<Cooling> {
        (self.reuse_delay_secs > 0).then(|| Cooling {
            delay_ms: self.reuse_delay_secs.saturating_mul(1000),
            now_ms: now_ms(),
        })
    }

    /// The mark a release of `addr` leaves, with the commit that releases it.
    pub(super) fn cool(&self, addr: std::net::IpAddr) -> Option<Mutation> {
        (self.reuse_delay_secs > 0).then(|| {
            let mark = Mark {
                released_ms: now_ms(),
            };
            Mutation::Put(
                self.keys.cool(addr),
                serde_json::to_vec(&mark).unwrap_or_default(),
            )
        })
    }

    /// The free address of `set` whose mark is the oldest, when a search found every free
    /// address cooling. Only addresses without a record qualify; the claim that follows is
    /// conditional on that as every claim is.
    pub(super) async fn coolest<'p>(
        &self,
        set: &'p [Pool],
        original: &OriginalHeld,
    ) -> Result<Option<(&'p Pool, u128)>> {
        let reads: Vec<Read> = set
            .iter()
            .map(|p| {
                let (from, to) = self.keys.cool_range(p.addr(p.start), p.addr(p.end));
                Read::Range {
                    from,
                    to,
                    limit: 0,
                    keys_only: false,
                }
            })
            .collect();
        let avoid: BTreeSet<u128> = original.keys().map(|ip| to_u128(*ip)).collect();
        let mut marks: Vec<(u64, usize, u128)> = Vec::new();
        for (i, answer) in self.store.reads(&reads).await?.into_iter().enumerate() {
            for e in answer.into_entries()? {
                let Some(ip) = self.keys.parse_cool(&e.key) else {
                    continue;
                };
                let v = to_u128(ip);
                if set[i].contains_dynamic(v) && !avoid.contains(&v) {
                    marks.push((released(&e.value), i, v));
                }
            }
        }
        marks.sort_unstable();
        // The oldest first, a batch of them per request: which have a record again. Marks
        // of addresses held again (taken by a bulk fill or an import, which write no marks'
        // deletes) are dropped on the way, so they cost this once.
        for batch in marks.chunks(MARK_BATCH) {
            let reads: Vec<Read> = batch
                .iter()
                .map(|&(_, i, v)| {
                    let key = self.keys.ip(set[i].addr(v));
                    Read::Range {
                        to: format!("{key}\0"),
                        from: key,
                        limit: 1,
                        keys_only: true,
                    }
                })
                .collect();
            let answers = self.store.reads(&reads).await?;
            let mut stale = Vec::new();
            for (&(when, i, v), answer) in batch.iter().zip(answers) {
                if answer.into_entries()?.is_empty() {
                    if !stale.is_empty() {
                        // Best effort: a mark is a preference, never the truth.
                        let _ = self.store.commit(&[], &stale).await;
                    }
                    tracing::debug!(
                        address = %set[i].addr(v),
                        released_ms_ago = now_ms().saturating_sub(when),
                        "every free address is cooling down: handing out the one released \
                         longest ago"
                    );
                    return Ok(Some((&set[i], v)));
                }
                stale.push(Mutation::Delete(self.keys.cool(set[i].addr(v))));
            }
            let _ = self.store.commit(&[], &stale).await;
        }
        Ok(None)
    }
}
