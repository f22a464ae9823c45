//! The allocation engine: claims, releases and inspects addresses over any [`LeaseStore`].
//!
//! Every claim is one conditional commit that creates the address records and the owner
//! index together, each only if absent. Every release is a compare-and-delete against the
//! revisions just read. Nothing else is ever trusted to say whether an address is taken.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kube_ipam_store::{
    AttachedIp, Compare, Holder, IpRecord, Keys, Kind, LeaseStore, Mutation, OriginalKeys,
    StoreError,
};

use super::hints::freed;
use super::original::Original;
use super::pool::Pool;
use crate::config::{IpamConf, PoolSpan, RequestedIp};
use crate::pod::lost::Policy;
use crate::pod::PodDirectory;

/// Claims lost to concurrent allocators before ADD gives up with "try again later".
pub(super) const MAX_ATTEMPTS: u32 = 12;
/// Releases retried when the records change between read and delete.
pub(super) const MAX_RELEASE_ATTEMPTS: u32 = 8;

/// An address asked for by name, with where it came from for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub source: String,
    pub ip: RequestedIp,
    /// Where a prefix length that must match the subnet came from (a pod's netmask). Runtime
    /// requests carry none: their prefix length is ignored, as host-local ignores it.
    pub mask_source: Option<String>,
    /// A gateway asked for with it (pod annotation), and where that came from.
    pub gateway: Option<(String, IpAddr)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    pub holder: Holder,
    pub wanted: Vec<Wanted>,
    /// Keep the dynamic addresses for the pod (by namespace/name) across recreations.
    pub sticky: bool,
    /// Addresses to take one of per range set, where `wanted` names none.
    pub pool: Option<PoolRequest>,
}

/// A pod's address pool: one address of it per range set whose subnets it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRequest {
    /// Where the pool and its netmask and gateway came from, for error messages.
    pub source: String,
    pub mask_source: String,
    pub gateway_source: String,
    pub spans: Vec<PoolSpan>,
    /// The pod's ordinal in its StatefulSet. Such a pod prefers the pool's address at that
    /// position and keeps what it got across recreations, as a sticky address is kept.
    pub ordinal: Option<u64>,
}

/// What ADD decided for one range set.
#[derive(Debug, Clone)]
pub(super) enum Choice {
    Fixed {
        pool: usize,
        addr: IpAddr,
        gateway: Option<IpAddr>,
    },
    /// Any one of the pod's pool addresses that lie in the set, in the pool's order.
    Pool(Vec<Candidate>),
    Dynamic,
}

/// A pool address that may be handed out in one range set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    /// The range of the set it lies in.
    pub pool: usize,
    pub addr: IpAddr,
    pub gateway: Option<IpAddr>,
}

/// What a release does with sticky addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The attachment ends but the pod may come back (DEL, the GC verb): sticky addresses
    /// stay reserved for the pod's binding.
    Park,
    /// Everything goes back to the pool (an operator's release).
    Free,
}

/// Whether a named address (fixed, or sticky from a binding) can be claimed now.
pub(super) enum Claim {
    /// Yes, if the record is still as read when the claim commits.
    Free(Compare),
    /// The holder was gone and its attachment has been released: look again.
    TookOver,
    /// A sticky address that now belongs to someone else: the binding is out of date.
    Stale,
}

pub struct Allocator<S> {
    pub(super) store: S,
    pub(super) keys: Keys,
    pub(super) sets: Vec<Vec<Pool>>,
    pub(super) pods: Option<Arc<dyn PodDirectory>>,
    pub(super) original: Original,
    /// When a terminating holder on a lost node yields its address.
    pub(super) lost: Policy,
    /// `reuseDelay` in seconds; 0: none.
    pub(super) reuse_delay_secs: u64,
}

impl<S: LeaseStore> Allocator<S> {
    pub fn new(store: S, keys: Keys, conf: &IpamConf) -> Self {
        let sets = conf
            .range_sets
            .iter()
            .map(|set| set.ranges.iter().map(Pool::new).collect())
            .collect();
        // Every store gets the original's guard: on the embedded store its keys simply
        // never exist, and one code path for all stores is one path to test.
        let original = Original {
            keys: OriginalKeys::new(keys.network()),
            write: conf.write_original_keys,
        };
        Allocator {
            store,
            keys,
            sets,
            pods: None,
            original,
            lost: Policy {
                not_ready_for: conf.node_lost_after,
            },
            reuse_delay_secs: conf.reuse_delay.as_secs(),
        }
    }

    /// Lets ADD take over a named address whose holder pod the API says is gone.
    pub fn with_pods(mut self, pods: Arc<dyn PodDirectory>) -> Self {
        self.pods = Some(pods);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.sets.iter().flatten()
    }

    /// Whether an address record of the store's shared space is this network's: every other
    /// network's attachments are its own business.
    pub fn mine(&self, rec: &IpRecord) -> bool {
        rec.network == self.keys.network()
    }

    /// Every commit of the engine that may delete an address record goes through here (the
    /// search's hint writes and the folding of events delete none): a deleted address record
    /// takes the hints of its blocks with it, in the same commit, so no hint outlives the
    /// record that made its block full, or, with a reuse delay, leaves its cooling mark,
    /// through which it is found when the hints call its range full.
    pub async fn commit(
        &self,
        compares: &[Compare],
        mutations: &[Mutation],
    ) -> std::result::Result<bool, StoreError> {
        let mut hints = Vec::new();
        let mut marks = Vec::new();
        for m in mutations {
            if let Mutation::Delete(k) = m {
                if let Some(ip) = self.keys.parse_ip(k) {
                    for d in freed(&self.keys, ip) {
                        if !hints.contains(&d) && !mutations.contains(&d) {
                            hints.push(d);
                        }
                    }
                    marks.extend(self.cool(ip));
                }
            }
        }
        let with = |extra: Vec<Mutation>| -> Vec<Mutation> {
            mutations.iter().cloned().chain(extra).collect()
        };
        if marks.is_empty() {
            return self.store.commit(compares, &with(hints)).await;
        }
        // With a reuse delay the address waits behind its cooling mark instead: the hints of
        // its blocks may go on calling them full, and a search that finds its range set full
        // finds the address through the mark (`Allocator::coolest`). So a release in a full
        // range costs the next ADD one look at the marks, not a search through the blocks.
        match self.store.commit(compares, &with(marks)).await {
            // A store out of space still takes deletes: the release goes through, undelayed,
            // and its hints go as without a delay.
            Err(StoreError::Full(why)) => {
                tracing::warn!(reason = %why, "store full: released without a reuse delay");
                self.store.commit(compares, &with(hints)).await
            }
            done => done,
        }
    }
}

pub(super) fn attached(pool: &Pool, v: u128, kind: Kind, gateway: Option<IpAddr>) -> AttachedIp {
    AttachedIp {
        address: pool.addr(v),
        prefix_len: pool.prefix_len(),
        gateway: gateway.or(pool.range.gateway),
        kind,
        range: pool.id.clone(),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
