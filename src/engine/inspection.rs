//! Reading the store back: attachments, bindings, CHECK, the consistency check and STATUS.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use kube_ipam_store::records::decode;
use kube_ipam_store::{
    Attachment, Binding, Holder, IpRecord, LeaseStore, PodRef, Revision, Snapshot,
};

use super::scan::{Restarts, Scan};
use super::search::find_free;
use crate::{Error, Result};

use super::allocator::Allocator;

impl<S: LeaseStore> Allocator<S> {
    /// The attachment of `container_id`/`ifname` and the revision of its owner record.
    pub async fn attachment(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<(Attachment, Revision)>> {
        let key = self.keys.owner(container_id, ifname);
        match self.store.get(&key).await? {
            Some(e) => Ok(Some((decode(&key, &e.value)?, e.revision))),
            None => Ok(None),
        }
    }

    /// Every attachment of the network with its owner revision, in one state of the store.
    pub async fn attachments(&self) -> Result<Vec<(Attachment, Revision)>> {
        let snap = self.store.snapshot().await?;
        let mut scan = Scan::new(&*snap, self.keys.owners());
        let mut out = Vec::new();
        while let Some(page) = scan.next_page().await? {
            for e in page {
                out.push((decode(&e.key, &e.value)?, e.revision));
            }
        }
        Ok(out)
    }

    /// The sticky binding of a pod and its revision.
    pub async fn binding(&self, pod: &PodRef) -> Result<Option<(Binding, Revision)>> {
        let key = self.keys.binding(&pod.namespace, &pod.name);
        match self.store.get(&key).await? {
            Some(e) => Ok(Some((decode(&key, &e.value)?, e.revision))),
            None => Ok(None),
        }
    }

    /// Every sticky binding of the network with its revision, in one state of the store.
    pub async fn bindings(&self) -> Result<Vec<(Binding, Revision)>> {
        let snap = self.store.snapshot().await?;
        let mut scan = Scan::new(&*snap, self.keys.bindings());
        let mut out = Vec::new();
        while let Some(page) = scan.next_page().await? {
            for e in page {
                out.push((decode(&e.key, &e.value)?, e.revision));
            }
        }
        Ok(out)
    }

    /// CHECK: every address the attachment holds is in `expected` (prevResult) and its
    /// record still names the attachment.
    pub async fn check(&self, holder: &Holder, expected: &[IpAddr]) -> Result<()> {
        let Some((att, _)) = self
            .attachment_or_imported(&holder.container_id, &holder.ifname)
            .await?
        else {
            return Err(Error::CheckMismatch(format!(
                "container {} ({}) holds no address",
                holder.container_id, holder.ifname
            )));
        };
        for ip in &att.ips {
            let key = self.keys.ip(ip.address);
            let rec: Option<IpRecord> = match self.store.get(&key).await? {
                Some(e) => Some(decode(&key, &e.value)?),
                None => None,
            };
            if !rec.is_some_and(|r| self.mine(&r) && r.holder.same_attachment(&att.holder)) {
                return Err(Error::CheckMismatch(format!(
                    "record of {} no longer names container {}",
                    ip.address, holder.container_id
                )));
            }
        }
        // prevResult is the whole chain's result: addresses other plugins added are theirs.
        let missing: Vec<IpAddr> = att
            .ips
            .iter()
            .map(|i| i.address)
            .filter(|a| !expected.contains(a))
            .collect();
        if !missing.is_empty() {
            return Err(Error::CheckMismatch(format!(
                "container {} holds {missing:?}, which prevResult does not list (it lists {expected:?})",
                holder.container_id
            )));
        }
        Ok(())
    }

    /// Cross-checks the views of the store: every address record is listed by the owner
    /// record (or, parked, by the pod binding) it names, every address an owner lists has a
    /// record naming it, and every address a binding keeps is parked for the pod or held by
    /// it. Returns the problems found, one sentence each; none means consistent.
    pub async fn verify(&self) -> Result<Vec<String>> {
        Ok(self.verify_store().await?.problems)
    }

    /// [`Allocator::verify`], with what was checked.
    ///
    /// Every read is of one snapshot of the store, so commits made meanwhile by live ADDs
    /// and DELs are either wholly seen or not at all: what is reported is really in the
    /// store. A snapshot the store drops before the check is done (etcd compacted its
    /// revision) is no problem of the store: the check starts over on a new one, a few times
    /// at most, and says so in [`Verified::restarts`]. The records are read in pages; what
    /// stays in memory is one compact entry per address, sorted once and looked up by binary
    /// search: O(n log n) in all.
    pub async fn verify_store(&self) -> Result<Verified> {
        let mut restarts = Restarts::default();
        loop {
            let snap = self.store.snapshot().await?;
            match self.verify_in(&*snap).await {
                Ok(mut v) => {
                    v.restarts = restarts.notes;
                    return Ok(v);
                }
                Err(e) => restarts.again("the check", e)?,
            }
        }
    }

    async fn verify_in(&self, snap: &dyn Snapshot) -> Result<Verified> {
        let mut problems = Vec::new();
        let mut scan = Scan::new(snap, self.keys.ips());
        let mut held: Vec<Held> = Vec::new();
        while let Some(page) = scan.next_page().await? {
            for e in page {
                let Some(ip) = self.keys.parse_ip(&e.key) else {
                    problems.push(format!("{} is not an address key", e.key));
                    continue;
                };
                match decode::<IpRecord>(&e.key, &e.value) {
                    // Another network's records are its own check's business.
                    Ok(rec) if !self.mine(&rec) => {}
                    Ok(rec) => held.push(Held::new(ip, &rec.holder)),
                    Err(err) => problems.push(err.to_string()),
                }
            }
        }
        // Addresses held twice since the move into the shared space: their attachments are
        // whole, and each is a problem until one of them goes.
        let mut scan = Scan::new(snap, self.keys.held_twice_all());
        while let Some(page) = scan.next_page().await? {
            for e in page {
                let Some(ip) = self.keys.parse_held_twice(&e.key) else {
                    problems.push(format!("{} is not an address key", e.key));
                    continue;
                };
                let rec: IpRecord = match decode(&e.key, &e.value) {
                    Ok(rec) => rec,
                    Err(err) => {
                        problems.push(err.to_string());
                        continue;
                    }
                };
                let other = match snap.get(&self.keys.ip(ip)).await? {
                    Some(o) => decode::<IpRecord>(&o.key, &o.value)
                        .map(|o| format!("{} in network {}", o.holder, o.network))
                        .unwrap_or_else(|err| err.to_string()),
                    None => "no one in the shared space any more".to_owned(),
                };
                problems.push(format!(
                    "{ip} is held twice, since before the networks of this store shared one \
                     address space: by {} and by {other}; it stays so until one of them is deleted",
                    rec.holder
                ));
                held.push(Held::new(ip, &rec.holder));
            }
        }
        held.sort_unstable_by_key(|h| h.ip);

        let mut attachments = 0u64;
        let mut scan = Scan::new(snap, self.keys.owners());
        while let Some(page) = scan.next_page().await? {
            for e in page {
                let att: Attachment = decode(&e.key, &e.value)?;
                attachments += 1;
                let who = attachment_hash(&att.holder);
                for ip in &att.ips {
                    match held.binary_search_by_key(&ip.address, |h| h.ip).ok() {
                        Some(i) if !held[i].parked && held[i].attachment == who => {
                            held[i].listed = true
                        }
                        _ => problems.push(format!(
                            "{} lists {} but no address record names it",
                            att.holder, ip.address
                        )),
                    }
                }
            }
        }
        let mut scan = Scan::new(snap, self.keys.bindings());
        while let Some(page) = scan.next_page().await? {
            for e in page {
                let b: Binding = decode(&e.key, &e.value)?;
                let pod = pod_hash(&b.pod.namespace, &b.pod.name);
                for ip in &b.ips {
                    match held.binary_search_by_key(&ip.address, |h| h.ip).ok() {
                        Some(i) if held[i].pod == Some(pod) => {
                            if held[i].parked {
                                held[i].listed = true;
                            }
                        }
                        _ => problems.push(format!(
                            "the binding of pod {}/{} keeps {} but no record of that pod holds it",
                            b.pod.namespace, b.pod.name, ip.address
                        )),
                    }
                }
            }
        }
        for h in held.iter().filter(|h| !h.listed) {
            // Read again, in the same state, for the holder's name: only for problems.
            let key = self.keys.ip(h.ip);
            let Some(e) = snap.get(&key).await? else {
                continue;
            };
            let rec: IpRecord = decode(&e.key, &e.value)?;
            let by = if rec.holder.is_binding() {
                "binding"
            } else {
                "owner record"
            };
            problems.push(format!(
                "{} is held by {} but no {by} lists it",
                h.ip, rec.holder
            ));
        }
        Ok(Verified {
            problems,
            attachments,
            addresses: held.len() as u64,
            restarts: Vec::new(),
        })
    }

    /// STATUS: the store answers and every range set has room for one more address.
    pub async fn status(&self) -> Result<()> {
        self.store
            .ping()
            .await
            .map_err(|e| Error::StatusUnavailable(e.to_string()))?;
        let mut rng = rand::rng();
        let mut rnd = move || rand::Rng::random::<u128>(&mut rng);
        for set in &self.sets {
            let mut full = true;
            for p in set {
                if find_free(&self.store, &self.keys, p, &mut rnd)
                    .await?
                    .is_some()
                {
                    full = false;
                    break;
                }
            }
            // Free addresses may wait behind their cooling marks, which an ADD would take.
            if full && self.coolest(set, &Default::default()).await?.is_some() {
                full = false;
            }
            if full {
                let ids: Vec<&str> = set.iter().map(|p| p.id.as_str()).collect();
                return Err(Error::StatusUnavailable(format!(
                    "no free address in {}",
                    ids.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// What [`Allocator::verify_store`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub problems: Vec<String>,
    pub attachments: u64,
    pub addresses: u64,
    /// Each time the check started over because the store dropped its snapshot.
    pub restarts: Vec<String>,
}

/// One address record, as little of it as the cross-check needs. Holders are kept as
/// 64-bit hashes: a collision could hide one problem with odds of 2^-64, and a million
/// records fit in 40 MB.
struct Held {
    ip: IpAddr,
    attachment: u64,
    pod: Option<u64>,
    parked: bool,
    listed: bool,
}

impl Held {
    fn new(ip: IpAddr, h: &Holder) -> Held {
        Held {
            ip,
            attachment: attachment_hash(h),
            pod: h.pod.as_ref().map(|p| pod_hash(&p.namespace, &p.name)),
            parked: h.is_binding(),
            listed: false,
        }
    }
}

/// What [`Holder::same_attachment`] compares.
fn attachment_hash(h: &Holder) -> u64 {
    let mut s = std::hash::DefaultHasher::new();
    (&h.container_id, &h.ifname).hash(&mut s);
    s.finish()
}

/// What [`Holder::same_pod_name`] compares.
fn pod_hash(namespace: &str, name: &str) -> u64 {
    let mut s = std::hash::DefaultHasher::new();
    (namespace, name).hash(&mut s);
    s.finish()
}
