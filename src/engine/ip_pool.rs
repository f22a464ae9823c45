//! Address pools named on a pod template (`kube-ipam.ip-pool`): the replicas of one workload
//! share a short list of fixed addresses, one each.
//!
//! Every replica carries the same annotation, so a pool is read whole (one request for all of
//! its records in this network) and the first free address is claimed like any other, with a
//! create-if-absent: two replicas racing for one address cannot both win, and the loser looks
//! again. A StatefulSet's pod N tries the pool's Nth address first, so that replicas keep the
//! addresses their ordinals give them on a fresh start; every other pod starts at a random
//! spot, so that replicas starting at once spread over the pool instead of queueing on its
//! first address.

use std::collections::HashMap;

use kube_ipam_store::records::decode;
use kube_ipam_store::{Compare, Entry, Holder, IpRecord, LeaseStore, PodRef, Read, Revision};
use rand::Rng;

use super::allocator::{Allocator, Candidate, PoolRequest, Wanted};
use super::original::OriginalHeld;
use super::pool::{from_u128, to_u128};
use crate::config::RequestedIp;
use crate::{Error, Result};

/// Holders named in the error of a pool with nothing free; the rest are counted.
const NAMED_HOLDERS: usize = 8;

/// What a search of the pool found.
pub(super) enum Pooled {
    /// Free, if the record is still as read when the claim commits.
    Free(Candidate, Compare),
    /// A holder Kubernetes has given up was released: look again.
    TookOver,
}

impl<S: LeaseStore> Allocator<S> {
    /// The pool's addresses that lie in each range set, in the pool's order, each checked as
    /// an address asked for by name. Addresses in no subnet of this network belong to other
    /// networks that the same annotation serves.
    pub(super) fn pool_candidates(&self, pool: &PoolRequest) -> Result<Vec<Vec<Candidate>>> {
        let mut out = vec![Vec::new(); self.sets.len()];
        for span in &pool.spans {
            let v6 = span.first.is_ipv6();
            for v in to_u128(span.first)..=to_u128(span.last) {
                let addr = from_u128(v, v6);
                let Some((set, range)) = self.find_range(addr) else {
                    continue;
                };
                let asked = Wanted {
                    source: pool.source.clone(),
                    ip: RequestedIp {
                        address: addr,
                        prefix_len: span.prefix_len,
                    },
                    mask_source: Some(pool.mask_source.clone()),
                    gateway: span.gateway.map(|g| (pool.gateway_source.clone(), g)),
                };
                self.check_named(&asked, set, range)?;
                out[set].push(Candidate {
                    pool: range,
                    addr,
                    gateway: span.gateway,
                });
            }
        }
        Ok(out)
    }

    /// The first address of `candidates` that nobody holds, in the order the pod prefers.
    /// When every one is held, a holder that Kubernetes has given up is released instead;
    /// else "try again later", naming the holders.
    pub(super) async fn pick_pooled(
        &self,
        pool: &PoolRequest,
        candidates: &[Candidate],
        me: &Holder,
        bound_to: Option<&PodRef>,
        original: &OriginalHeld,
    ) -> Result<Pooled> {
        let records = self.pool_records(candidates).await?;
        let mut held: Vec<(Candidate, IpRecord, Revision)> = Vec::new();
        let mut named: Vec<String> = Vec::new();
        for c in preference(candidates, pool.ordinal) {
            let key = self.keys.ip(c.addr);
            if let Some(container) = original.get(&c.addr) {
                named.push(format!(
                    "{} by container {container} in the original plugin's records",
                    c.addr
                ));
                continue;
            }
            let Some(e) = records.get(&key) else {
                return Ok(Pooled::Free(c, Compare::Absent(key)));
            };
            let rec: IpRecord = decode(&key, &e.value)?;
            if !self.mine(&rec) {
                named.push(format!(
                    "{} by {} in network {}",
                    c.addr, rec.holder, rec.network
                ));
                continue;
            }
            let ours = rec.holder.same_attachment(me)
                || (rec.holder.is_binding()
                    && bound_to.is_some_and(|p| rec.holder.same_pod_name(p)));
            if ours {
                return Ok(Pooled::Free(c, Compare::Revision(key, e.revision)));
            }
            named.push(format!("{} by {}", c.addr, rec.holder));
            if !rec.holder.is_binding() {
                held.push((c, rec, e.revision));
            }
        }
        for (c, rec, rev) in &held {
            if let Some(why) = self.holder_gone(&rec.holder).await? {
                self.take_over(c.addr, rec, *rev, &why).await?;
                return Ok(Pooled::TookOver);
            }
        }
        let more = named.len().saturating_sub(NAMED_HOLDERS);
        named.truncate(NAMED_HOLDERS);
        if more > 0 {
            named.push(format!("and {more} more"));
        }
        Err(Error::TryAgain(format!(
            "no address of {} is free in network {}: {}",
            pool.source,
            self.keys.network(),
            named.join("; ")
        )))
    }

    /// The records of every candidate, in one request: a range read per run of consecutive
    /// addresses.
    async fn pool_records(&self, candidates: &[Candidate]) -> Result<HashMap<String, Entry>> {
        let mut sorted: Vec<u128> = candidates.iter().map(|c| to_u128(c.addr)).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let v6 = candidates.first().is_some_and(|c| c.addr.is_ipv6());
        let mut reads = Vec::new();
        let mut i = 0;
        while i < sorted.len() {
            let mut j = i;
            while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
                j += 1;
            }
            let (from, to) = self
                .keys
                .ip_range(from_u128(sorted[i], v6), from_u128(sorted[j], v6));
            reads.push(Read::Range {
                from,
                to,
                limit: 0,
                keys_only: false,
            });
            i = j + 1;
        }
        let mut out = HashMap::new();
        for answer in self.store.reads(&reads).await? {
            for e in answer.into_entries()? {
                out.insert(e.key.clone(), e);
            }
        }
        Ok(out)
    }
}

/// The order in which a pod tries the pool: a StatefulSet's pod N its Nth address, then the
/// lowest; any other pod from a random spot on.
fn preference(candidates: &[Candidate], ordinal: Option<u64>) -> Vec<Candidate> {
    match ordinal {
        Some(n) => {
            let first = usize::try_from(n)
                .ok()
                .and_then(|n| candidates.get(n))
                .copied();
            let mut rest: Vec<Candidate> = candidates
                .iter()
                .filter(|c| Some(**c) != first)
                .copied()
                .collect();
            rest.sort_by_key(|c| to_u128(c.addr));
            first.into_iter().chain(rest).collect()
        }
        None => {
            let start = match candidates.len() {
                0 => 0,
                n => rand::rng().random_range(0..n),
            };
            candidates[start..]
                .iter()
                .chain(&candidates[..start])
                .copied()
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn cands(n: u8) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                pool: 0,
                addr: IpAddr::from([10, 0, 0, 20 - i]),
                gateway: None,
            })
            .collect()
    }

    #[test]
    fn a_stateful_pod_tries_its_ordinal_then_the_lowest() {
        let c = cands(4); // .20 .19 .18 .17, in the pool's order
        let order = |n| -> Vec<u8> {
            preference(&c, n)
                .iter()
                .map(|c| match c.addr {
                    IpAddr::V4(a) => a.octets()[3],
                    IpAddr::V6(_) => 0,
                })
                .collect()
        };
        assert_eq!(order(Some(1)), [19, 17, 18, 20]);
        assert_eq!(order(Some(0)), [20, 17, 18, 19]);
        assert_eq!(
            order(Some(9)),
            [17, 18, 19, 20],
            "past the pool: lowest first"
        );
    }

    #[test]
    fn any_other_pod_tries_every_address_once_from_anywhere() {
        let c = cands(5);
        let mut starts = std::collections::HashSet::new();
        for _ in 0..200 {
            let order = preference(&c, None);
            let mut seen: Vec<IpAddr> = order.iter().map(|c| c.addr).collect();
            starts.insert(seen[0]);
            seen.sort();
            let mut all: Vec<IpAddr> = c.iter().map(|c| c.addr).collect();
            all.sort();
            assert_eq!(seen, all);
        }
        assert!(starts.len() > 1, "always the same start: {starts:?}");
    }
}
