//! How full each range is and what happened to it: the figures `kube-ipam usage` prints and
//! the collector serves. Reading them costs one pass over the address and owner records, so
//! the collector reads them once per pass and every scrape serves the last reading.

use std::collections::HashSet;
use std::net::IpAddr;

use kube_ipam_store::records::decode;
use kube_ipam_store::{Attachment, Entry, IpRecord, Kind, LeaseStore, Snapshot};
use serde_json::{json, Value};

use crate::engine::events::{self, Counter, Tally};
use crate::engine::pool::to_u128;
use crate::engine::scan::{Restarts, Scan};
use crate::engine::{Allocator, Pool};
use crate::Result;

/// One configured range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeFigures {
    /// The range's identity, `subnet start-end`.
    pub id: String,
    /// Addresses it can hand out dynamically.
    pub size: u128,
    pub dynamic: u64,
    /// Sticky addresses held by a live attachment of their pod.
    pub sticky: u64,
    /// Sticky and pool addresses kept for a pod between two of its lives.
    pub parked: u64,
    /// Fixed addresses of the range's subnet, in its fixed zone or in the dynamic span.
    pub fixed: u64,
    /// Addresses a live attachment took from a pod's address pool (`kube-ipam.ip-pool`).
    pub pool: u64,
    /// Addresses of the range's subnet that another network of the store holds.
    pub other: u64,
    /// Held addresses of every kind that lie in the dynamic span: what fills the range. A
    /// fixed or pool address in the fixed zone takes no dynamic address's place.
    pub in_span: u64,
    /// Attachments holding an address of this range.
    pub attachments: u64,
    pub leaks_gc: u64,
    pub leaks_cni_gc: u64,
    pub takeovers: u64,
}

impl RangeFigures {
    /// Held addresses of the dynamic span: what fills the range.
    pub fn used(&self) -> u128 {
        u128::from(self.in_span).min(self.size)
    }

    pub fn free(&self) -> u128 {
        self.size - self.used()
    }

    pub fn percent(&self) -> f64 {
        if self.size == 0 {
            100.0
        } else {
            self.used() as f64 * 100.0 / self.size as f64
        }
    }

    /// The `kube-ipam usage --output json` item; numbers that can exceed 2^53 are strings.
    pub fn to_json(&self) -> Value {
        json!({
            "range": self.id,
            "size": self.size.to_string(),
            "used": self.used().to_string(),
            "free": self.free().to_string(),
            "percent": self.percent(),
            "dynamic": self.dynamic,
            "sticky": self.sticky,
            "parked": self.parked,
            "fixed": self.fixed,
            "pool": self.pool,
            "otherNetworks": self.other,
            "attachments": self.attachments,
            "leaksReleased": { "gc": self.leaks_gc, "cniGc": self.leaks_cni_gc },
            "takeovers": self.takeovers,
        })
    }
}

/// Every configured range, in config order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub ranges: Vec<RangeFigures>,
}

/// The range an address record counts for: the one whose dynamic span holds it, else the
/// one it was given from, else the first whose subnet holds it.
fn range_of<'a>(pools: &'a [&'a Pool], ip: IpAddr, rec: &IpRecord) -> Option<usize> {
    let v = to_u128(ip);
    pools
        .iter()
        .position(|p| p.contains_dynamic(v))
        .or_else(|| pools.iter().position(|p| p.id == rec.range))
        .or_else(|| pools.iter().position(|p| p.range.subnet.contains(&ip)))
}

/// Every entry of `[from, to)` of the snapshot, a page at a time, each handed to `each`.
async fn scan(
    snap: &dyn Snapshot,
    range: (String, String),
    mut each: impl FnMut(&Entry) -> Result<()>,
) -> Result<()> {
    let mut scan = Scan::new(snap, range);
    while let Some(page) = scan.next_page().await? {
        for e in &page {
            each(e)?;
        }
    }
    Ok(())
}

fn counted(tally: &Tally, c: Counter, range: &str) -> u64 {
    tally
        .get(&c)
        .and_then(|m| m.get(range))
        .copied()
        .unwrap_or(0)
}

/// The figures of one state of the store, so that the counts of a range add up however
/// ADDs and DELs go on meanwhile; started over on a new snapshot when the store drops the
/// one read, each time noted in `restarts`.
pub async fn read<S: LeaseStore>(alloc: &Allocator<S>, restarts: &mut Restarts) -> Result<Figures> {
    loop {
        let snap = alloc.store().snapshot().await?;
        match read_in(alloc, &*snap).await {
            Ok(fig) => return Ok(fig),
            Err(e) => restarts.again("reading the figures", e)?,
        }
    }
}

async fn read_in<S: LeaseStore>(alloc: &Allocator<S>, snap: &dyn Snapshot) -> Result<Figures> {
    let pools: Vec<&Pool> = alloc.pools().collect();
    let mut out: Vec<RangeFigures> = pools
        .iter()
        .map(|p| RangeFigures {
            id: p.id.clone(),
            size: p.size(),
            ..Default::default()
        })
        .collect();
    let keys = alloc.keys();
    // The store's address space holds every network's records; only this network's subnets
    // can hold what its figures count.
    for span in subnet_spans(&pools, keys) {
        scan(snap, span, |e| {
            let Some(ip) = keys.parse_ip(&e.key) else {
                return Ok(());
            };
            let rec: IpRecord = decode(&e.key, &e.value)?;
            let Some(i) = range_of(&pools, ip, &rec) else {
                return Ok(());
            };
            count(&mut out[i], pools[i], ip, &rec, alloc.mine(&rec));
            Ok(())
        })
        .await?;
    }
    scan(snap, keys.owners(), |e| {
        let att: Attachment = decode(&e.key, &e.value)?;
        let ranges: HashSet<&str> = att.ips.iter().map(|i| i.range.as_str()).collect();
        for f in out.iter_mut().filter(|f| ranges.contains(f.id.as_str())) {
            f.attachments += 1;
        }
        Ok(())
    })
    .await?;
    let tally = events::read(snap, keys).await?;
    for f in &mut out {
        f.leaks_gc = counted(&tally, Counter::LeaksGc, &f.id);
        f.leaks_cni_gc = counted(&tally, Counter::LeaksCniGc, &f.id);
        f.takeovers = counted(&tally, Counter::Takeovers, &f.id);
    }
    Ok(Figures { ranges: out })
}

/// The key ranges of the address records in the pools' subnets, each subnet once.
fn subnet_spans(pools: &[&Pool], keys: &kube_ipam_store::Keys) -> Vec<(String, String)> {
    let mut subnets: Vec<ipnet::IpNet> = pools.iter().map(|p| p.range.subnet).collect();
    subnets.sort();
    subnets.dedup();
    // A subnet inside another is read with it.
    let outer: Vec<ipnet::IpNet> = subnets
        .iter()
        .filter(|n| !subnets.iter().any(|o| o != *n && o.contains(*n)))
        .copied()
        .collect();
    outer
        .iter()
        .map(|n| keys.ip_range(n.network(), n.broadcast()))
        .collect()
}

/// One address record into the figures of its range: every network's fills the range,
/// only this network's are told apart by kind.
fn count(f: &mut RangeFigures, pool: &Pool, ip: IpAddr, rec: &IpRecord, mine: bool) {
    if pool.contains_dynamic(to_u128(ip)) {
        f.in_span += 1;
    }
    if !mine {
        f.other += 1;
        return;
    }
    match rec.kind {
        Kind::Dynamic => f.dynamic += 1,
        Kind::Fixed => f.fixed += 1,
        Kind::Sticky | Kind::Pool if rec.holder.is_binding() => f.parked += 1,
        Kind::Sticky => f.sticky += 1,
        Kind::Pool => f.pool += 1,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kube_ipam_store::{MemoryStore, Mutation};

    use super::*;
    use crate::config::AttachmentRef;
    use crate::engine::pod_tests::{small, sticky, Pods};
    use crate::engine::AddRequest;

    #[test]
    fn kinds_attachments_and_the_cni_gc_verb_are_counted() {
        let pods = Arc::new(Pods::default());
        let a = small(&pods, "10.9.0.20");
        let plain = |c: &str, p: &str| AddRequest {
            sticky: false,
            ..sticky(c, p, "u")
        };
        let keep = |c: &str| AttachmentRef {
            container_id: c.into(),
            ifname: "eth0".into(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            a.add(&plain("c1", "p1")).await.unwrap();
            a.add(&sticky("c2", "p2", "u")).await.unwrap();
            a.add(&sticky("c3", "p3", "u")).await.unwrap();
            a.release("c3", "eth0").await.unwrap();
            a.add(&plain("c4", "p4")).await.unwrap();
            // The verb releases c4; its count lands in the same commit.
            assert_eq!(a.gc(&[keep("c1"), keep("c2")]).await.unwrap().len(), 1);
            let fig = read(&a, &mut Restarts::default()).await.unwrap();
            let r = &fig.ranges[0];
            assert_eq!(r.id, "10.9.0.0/24 10.9.0.2-10.9.0.20");
            assert_eq!(
                (r.dynamic, r.sticky, r.parked, r.fixed, r.attachments),
                (1, 1, 1, 0, 2)
            );
            assert_eq!((r.leaks_cni_gc, r.leaks_gc, r.takeovers), (1, 0, 0));
            assert_eq!((r.size, r.used(), r.free()), (19, 3, 16));
        });
    }

    #[test]
    fn a_scan_sees_every_key_once_across_pages() {
        use crate::engine::scan::PAGE;

        let store = MemoryStore::default();
        let n = 2 * PAGE + 7;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let puts: Vec<Mutation> = (0..n)
                .map(|i| Mutation::Put(format!("/k/{i:08x}"), vec![]))
                .collect();
            for chunk in puts.chunks(1000) {
                assert!(store.commit(&[], chunk).await.unwrap());
            }
            let mut seen = Vec::new();
            let snap = store.snapshot().await.unwrap();
            scan(&*snap, ("/k/".into(), "/k0".into()), |e| {
                seen.push(e.key.clone());
                Ok(())
            })
            .await
            .unwrap();
            assert_eq!(seen.len(), n);
            assert!(seen.windows(2).all(|w| w[0] < w[1]));
        });
    }
}
