//! The allocation engine: claims, releases and inspects addresses over any [`LeaseStore`].
//!
//! Every claim is one conditional commit that creates the address records and the owner
//! index together, each only if absent. Every release is a compare-and-delete against the
//! revisions just read. Nothing else is ever trusted to say whether an address is taken.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube_ipam_store::records::{decode, encode};
use kube_ipam_store::{
    AttachedIp, Attachment, Binding, Compare, Holder, IpRecord, Keys, Kind, LeaseStore, Mutation,
    PodRef, Revision,
};
use rand::Rng;

use super::pool::{to_u128, Pool};
use super::search::{find_free, is_full};
use crate::config::{AttachmentRef, IpamConf, RequestedIp};
use crate::metrics::counts::{self, Counter};
use crate::pod::PodDirectory;
use crate::{Error, Result};

/// Claims lost to concurrent allocators before ADD gives up with "try again later".
const MAX_ATTEMPTS: u32 = 12;
/// Releases retried when the records change between read and delete.
const MAX_RELEASE_ATTEMPTS: u32 = 8;

/// An address asked for by name, with where it came from for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub source: String,
    pub ip: RequestedIp,
    /// A gateway asked for with it (pod annotation), and where that came from.
    pub gateway: Option<(String, IpAddr)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    pub holder: Holder,
    pub wanted: Vec<Wanted>,
    /// Keep the dynamic addresses for the pod (by namespace/name) across recreations.
    pub sticky: bool,
}

/// What ADD decided for one range set.
#[derive(Debug, Clone)]
enum Choice {
    Fixed {
        pool: usize,
        addr: IpAddr,
        gateway: Option<IpAddr>,
    },
    Dynamic,
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
enum Claim {
    /// Yes, if the record is still as read when the claim commits.
    Free(Compare),
    /// The holder was gone and its attachment has been released: look again.
    TookOver,
    /// A sticky address that now belongs to someone else: the binding is out of date.
    Stale,
}

pub struct Allocator<S> {
    store: S,
    keys: Keys,
    sets: Vec<Vec<Pool>>,
    pods: Option<Arc<dyn PodDirectory>>,
}

impl<S: LeaseStore> Allocator<S> {
    pub fn new(store: S, keys: Keys, conf: &IpamConf) -> Self {
        let sets = conf
            .range_sets
            .iter()
            .map(|set| set.ranges.iter().map(Pool::new).collect())
            .collect();
        Allocator {
            store,
            keys,
            sets,
            pods: None,
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

    /// Every attachment of the network with its owner revision.
    pub async fn attachments(&self) -> Result<Vec<(Attachment, Revision)>> {
        let (from, to) = self.keys.owners();
        let entries = self.store.range(&from, &to, 0).await?;
        entries
            .iter()
            .map(|e| Ok((decode(&e.key, &e.value)?, e.revision)))
            .collect()
    }

    /// The sticky binding of a pod and its revision.
    pub async fn binding(&self, pod: &PodRef) -> Result<Option<(Binding, Revision)>> {
        let key = self.keys.binding(&pod.namespace, &pod.name);
        match self.store.get(&key).await? {
            Some(e) => Ok(Some((decode(&key, &e.value)?, e.revision))),
            None => Ok(None),
        }
    }

    /// Every sticky binding of the network with its revision.
    pub async fn bindings(&self) -> Result<Vec<(Binding, Revision)>> {
        let (from, to) = self.keys.bindings();
        let entries = self.store.range(&from, &to, 0).await?;
        entries
            .iter()
            .map(|e| Ok((decode(&e.key, &e.value)?, e.revision)))
            .collect()
    }

    /// Gives the attachment one address per range set, or returns what it already holds.
    pub async fn add(&self, req: &AddRequest) -> Result<Attachment> {
        let choices = self.plan(req)?;
        let sticky_pod = req.holder.pod.as_ref().filter(|_| req.sticky);
        let owner_key = self
            .keys
            .owner(&req.holder.container_id, &req.holder.ifname);
        'attempt: for attempt in 0..MAX_ATTEMPTS {
            if let Some((existing, _)) = self
                .attachment(&req.holder.container_id, &req.holder.ifname)
                .await?
            {
                return Ok(existing);
            }
            let binding = match sticky_pod {
                Some(p) => self.binding(p).await?,
                None => None,
            };
            let mut compares = vec![Compare::Absent(owner_key.clone())];
            let mut ips = Vec::with_capacity(choices.len());
            for (s, choice) in choices.iter().enumerate() {
                let set = &self.sets[s];
                match choice {
                    Choice::Fixed {
                        pool,
                        addr,
                        gateway,
                    } => match self.claim(*addr, &req.holder, None).await? {
                        Claim::Free(c) => {
                            compares.push(c);
                            let p = &set[*pool];
                            ips.push(attached(p, to_u128(*addr), Kind::Fixed, *gateway));
                        }
                        Claim::TookOver => continue 'attempt,
                        // Only sticky claims can be stale.
                        Claim::Stale => {
                            return Err(Error::Internal(format!("fixed {addr} judged stale")))
                        }
                    },
                    Choice::Dynamic => {
                        let kept = binding.as_ref().and_then(|(b, _)| {
                            b.ips.iter().find_map(|i| {
                                let v = to_u128(i.address);
                                set.iter().find(|p| p.contains_dynamic(v)).map(|p| (p, v))
                            })
                        });
                        if let (Some((p, v)), Some(pod)) = (kept, sticky_pod) {
                            match self.claim(p.addr(v), &req.holder, Some(pod)).await? {
                                Claim::Free(c) => {
                                    compares.push(c);
                                    ips.push(attached(p, v, Kind::Sticky, None));
                                    continue;
                                }
                                Claim::TookOver => continue 'attempt,
                                Claim::Stale => {
                                    tracing::warn!(
                                        address = %p.addr(v),
                                        pod = %format!("{}/{}", pod.namespace, pod.name),
                                        "sticky address now held by another pod; picking a new one"
                                    );
                                }
                            }
                        }
                        let kind = if sticky_pod.is_some() {
                            Kind::Sticky
                        } else {
                            Kind::Dynamic
                        };
                        let a = self.pick_dynamic(set, kind).await?;
                        compares.push(Compare::Absent(self.keys.ip(a.address)));
                        ips.push(a);
                    }
                }
            }
            let now = unix_now();
            let attachment = Attachment {
                holder: req.holder.clone(),
                ips: ips.clone(),
                created: now,
            };
            let mut mutations = Vec::with_capacity(ips.len() + 2);
            for ip in &ips {
                let record = IpRecord {
                    holder: req.holder.clone(),
                    kind: ip.kind,
                    range: ip.range.clone(),
                    created: now,
                };
                mutations.push(Mutation::Put(self.keys.ip(ip.address), encode(&record)));
            }
            mutations.push(Mutation::Put(owner_key.clone(), encode(&attachment)));
            if let Some(pod) = sticky_pod {
                self.rebind(
                    pod,
                    binding.as_ref(),
                    &ips,
                    now,
                    &mut compares,
                    &mut mutations,
                )
                .await?;
            }
            match self.store.commit(&compares, &mutations).await {
                Ok(true) => return Ok(attachment),
                Ok(false) => {}
                Err(e) if e.is_transient() => {
                    // The commit may have landed before its answer was lost: our owner
                    // record says so. Otherwise the caller retries and DELs as usual.
                    if let Ok(Some((existing, _))) = self
                        .attachment(&req.holder.container_id, &req.holder.ifname)
                        .await
                    {
                        if existing == attachment {
                            return Ok(existing);
                        }
                    }
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
            // Someone claimed one of our picks first (or the same ADD ran twice at once):
            // back off a little, by a random amount so racers do not collide again.
            let jitter = rand::rng().random_range(0..=(2u64 << attempt.min(5)));
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(Error::TryAgain(format!(
            "lost the race for a free address {MAX_ATTEMPTS} times; too many concurrent allocations"
        )))
    }

    /// Adds to a claim the write of the pod's binding: its sticky addresses as just chosen.
    /// Addresses the binding no longer keeps (the config changed, or they went to another
    /// pod) stop being reserved for it in the same commit.
    async fn rebind(
        &self,
        pod: &PodRef,
        old: Option<&(Binding, Revision)>,
        ips: &[AttachedIp],
        now: u64,
        compares: &mut Vec<Compare>,
        mutations: &mut Vec<Mutation>,
    ) -> Result<()> {
        let key = self.keys.binding(&pod.namespace, &pod.name);
        let sticky: Vec<AttachedIp> = ips
            .iter()
            .filter(|i| i.kind == Kind::Sticky)
            .cloned()
            .collect();
        // Every address named (fixed): nothing to keep for the pod.
        if sticky.is_empty() && old.is_none() {
            return Ok(());
        }
        match old {
            None => compares.push(Compare::Absent(key.clone())),
            Some((b, rev)) => {
                compares.push(Compare::Revision(key.clone(), *rev));
                for gone in b
                    .ips
                    .iter()
                    .filter(|o| !sticky.iter().any(|i| i.address == o.address))
                {
                    let k = self.keys.ip(gone.address);
                    if let Some(e) = self.store.get(&k).await? {
                        let rec: IpRecord = decode(&k, &e.value)?;
                        if rec.holder.is_binding() && rec.holder.same_pod_name(pod) {
                            compares.push(Compare::Revision(k.clone(), e.revision));
                            mutations.push(Mutation::Delete(k));
                        }
                    }
                }
            }
        }
        let created = old.map(|(b, _)| b.created).unwrap_or(now);
        let binding = Binding {
            pod: pod.clone(),
            ips: sticky,
            created,
        };
        mutations.push(Mutation::Put(key, encode(&binding)));
        Ok(())
    }

    /// Matches every wanted address to a range set; sets without one get a dynamic address.
    fn plan(&self, req: &AddRequest) -> Result<Vec<Choice>> {
        let mut choices = vec![Choice::Dynamic; self.sets.len()];
        let mut set_taken = HashSet::new();
        for w in &req.wanted {
            let (set, pool) = self.locate_fixed(w)?;
            if !set_taken.insert(set) {
                return Err(Error::config(
                    &w.source,
                    w.ip.address,
                    "a second address for the same range set; one address is given per range set",
                ));
            }
            choices[set] = Choice::Fixed {
                pool,
                addr: w.ip.address,
                gateway: w.gateway.as_ref().map(|(_, g)| *g),
            };
        }
        Ok(choices)
    }

    /// Finds the range of a wanted address and checks it may be handed out by name.
    fn locate_fixed(&self, w: &Wanted) -> Result<(usize, usize)> {
        let addr = w.ip.address;
        let v = to_u128(addr);
        for (s, set) in self.sets.iter().enumerate() {
            for (p, pool) in set.iter().enumerate() {
                let r = &pool.range;
                if !r.subnet.contains(&addr) {
                    continue;
                }
                let bad = |why: String| Err(Error::config(&w.source, addr, why));
                if let Some(len) = w.ip.prefix_len {
                    if len != r.subnet.prefix_len() {
                        return bad(format!(
                            "prefix length /{len} differs from subnet {}",
                            r.subnet
                        ));
                    }
                }
                if addr == r.subnet.network() || (!pool.v6 && addr == r.subnet.broadcast()) {
                    return bad(format!(
                        "is the network or broadcast address of {}",
                        r.subnet
                    ));
                }
                if r.gateway == Some(addr) {
                    return bad(format!("is the gateway of {}", r.subnet));
                }
                if v >= pool.start && v <= pool.end {
                    return bad(format!(
                        "lies in the dynamic range {}-{}; fixed addresses must lie outside it",
                        r.range_start, r.range_end
                    ));
                }
                if let Some((fs, fe)) = r.fixed {
                    if v < to_u128(fs) || v > to_u128(fe) {
                        return bad(format!("lies outside the fixed zone {fs}-{fe}"));
                    }
                }
                if let Some((source, gw)) = &w.gateway {
                    let bad_gw = |why: String| Err(Error::config(source, gw, why));
                    if !r.subnet.contains(gw) {
                        return bad_gw(format!("is outside subnet {} of {addr}", r.subnet));
                    }
                    if *gw == addr {
                        return bad_gw("is the pod's own address".into());
                    }
                    if *gw == r.subnet.network() || (!pool.v6 && *gw == r.subnet.broadcast()) {
                        return bad_gw(format!(
                            "is the network or broadcast address of {}",
                            r.subnet
                        ));
                    }
                }
                return Ok((s, p));
            }
        }
        Err(Error::config(
            &w.source,
            addr,
            "is not in any configured subnet",
        ))
    }

    /// Can `me` claim the named address `ip`? For a sticky address, `sticky_for` is the pod
    /// whose binding keeps it.
    async fn claim(&self, ip: IpAddr, me: &Holder, sticky_for: Option<&PodRef>) -> Result<Claim> {
        let key = self.keys.ip(ip);
        let Some(e) = self.store.get(&key).await? else {
            return Ok(Claim::Free(Compare::Absent(key)));
        };
        let rec: IpRecord = decode(&key, &e.value)?;
        let ours = || Ok(Claim::Free(Compare::Revision(key.clone(), e.revision)));
        // A record of this very attachment without its owner record: a claim cut short.
        if rec.holder.same_attachment(me) {
            return ours();
        }
        let same_pod = sticky_for.is_some_and(|p| rec.holder.same_pod_name(p));
        if rec.holder.is_binding() {
            return match sticky_for {
                Some(_) if same_pod => ours(),
                Some(_) => Ok(Claim::Stale),
                None => Err(Error::TryAgain(format!(
                    "{ip} is reserved for {}",
                    rec.holder
                ))),
            };
        }
        if sticky_for.is_some() && !same_pod {
            return Ok(Claim::Stale);
        }
        if let Some(why) = self.holder_gone(&rec.holder).await? {
            self.take_over(ip, &rec, e.revision, &why).await?;
            return Ok(Claim::TookOver);
        }
        Err(Error::TryAgain(format!("{ip} is held by {}", rec.holder)))
    }

    /// Why the API says the pod holding a record no longer exists; `None` when it does or
    /// when nobody can tell.
    async fn holder_gone(&self, holder: &Holder) -> Result<Option<String>> {
        let (Some(pods), Some(p)) = (&self.pods, &holder.pod) else {
            return Ok(None);
        };
        Ok(match pods.pod(&p.namespace, &p.name).await? {
            None => Some(format!("pod {}/{} no longer exists", p.namespace, p.name)),
            Some(now) => match (&p.uid, &now.uid) {
                (Some(was), Some(is)) if was != is => Some(format!(
                    "pod {}/{} was recreated (uid {was} is now {is})",
                    p.namespace, p.name
                )),
                _ => None,
            },
        })
    }

    /// Releases the attachment of a holder that is gone, as its DEL would have.
    async fn take_over(&self, ip: IpAddr, rec: &IpRecord, rev: Revision, why: &str) -> Result<()> {
        let h = &rec.holder;
        let counted = counts::event(
            &self.keys,
            Counter::Takeovers,
            [rec.range.as_str()].into_iter(),
        );
        let done = match self.attachment(&h.container_id, &h.ifname).await? {
            Some((att, att_rev)) if att.ips.iter().any(|i| i.address == ip) => {
                self.release_seen_with(&att, att_rev, Release::Park, vec![counted])
                    .await?
            }
            _ => {
                let key = self.keys.ip(ip);
                self.store
                    .commit(
                        &[Compare::Revision(key.clone(), rev)],
                        &[Mutation::Delete(key), counted],
                    )
                    .await?
            }
        };
        if done {
            tracing::warn!(address = %ip, holder = %h, reason = why, "took the address over");
        }
        Ok(())
    }

    /// A free address from the first range of `set` that has one.
    async fn pick_dynamic(&self, set: &[Pool], kind: Kind) -> Result<AttachedIp> {
        let mut rng = rand::rng();
        let mut rnd = move || rng.random::<u128>();
        for p in set {
            if let Some(v) = find_free(&self.store, &self.keys, p, &mut rnd).await? {
                return Ok(attached(p, v, kind, None));
            }
        }
        Err(Error::Exhausted {
            range: set
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            size: set.iter().map(Pool::size).sum(),
        })
    }

    /// Releases everything `container_id`/`ifname` holds (sticky addresses stay with their
    /// pod); `Ok(None)` when it holds nothing.
    pub async fn release(&self, container_id: &str, ifname: &str) -> Result<Option<Attachment>> {
        for _ in 0..MAX_RELEASE_ATTEMPTS {
            let Some((att, rev)) = self.attachment(container_id, ifname).await? else {
                return Ok(None);
            };
            if self.release_seen(&att, rev, Release::Park).await? {
                return Ok(Some(att));
            }
        }
        Err(Error::TryAgain(format!(
            "records of container {container_id} ({ifname}) kept changing during release"
        )))
    }

    /// Compare-and-delete of an attachment exactly as it was read at `rev`: if anything
    /// changed since, nothing is deleted and `false` comes back. With [`Release::Park`], a
    /// sticky address its pod's binding keeps goes to the binding instead of the pool.
    pub async fn release_seen(
        &self,
        att: &Attachment,
        rev: Revision,
        mode: Release,
    ) -> Result<bool> {
        self.release_seen_with(att, rev, mode, Vec::new()).await
    }

    /// [`Self::release_seen`], with `extra` writes (a counter event) in the same commit.
    pub async fn release_seen_with(
        &self,
        att: &Attachment,
        rev: Revision,
        mode: Release,
        extra: Vec<Mutation>,
    ) -> Result<bool> {
        let owner_key = self
            .keys
            .owner(&att.holder.container_id, &att.holder.ifname);
        let mut compares = vec![Compare::Revision(owner_key.clone(), rev)];
        let mut mutations = vec![Mutation::Delete(owner_key)];
        let pod = att.holder.pod.as_ref();
        let mut kept: Vec<IpAddr> = Vec::new();
        if let (Release::Park, Some(pod)) = (mode, pod) {
            if att.ips.iter().any(|i| i.kind == Kind::Sticky) {
                let key = self.keys.binding(&pod.namespace, &pod.name);
                match self.binding(pod).await? {
                    Some((b, brev)) => {
                        compares.push(Compare::Revision(key, brev));
                        kept = b.ips.iter().map(|i| i.address).collect();
                    }
                    None => compares.push(Compare::Absent(key)),
                }
            }
        }
        for ip in &att.ips {
            let key = self.keys.ip(ip.address);
            if let Some(e) = self.store.get(&key).await? {
                let rec: IpRecord = decode(&key, &e.value)?;
                // Only what still names this attachment is ours to free.
                if !rec.holder.same_attachment(&att.holder) {
                    continue;
                }
                compares.push(Compare::Revision(key.clone(), e.revision));
                match pod {
                    Some(pod) if ip.kind == Kind::Sticky && kept.contains(&ip.address) => {
                        let parked = IpRecord {
                            holder: Holder::binding(pod.clone()),
                            ..rec
                        };
                        mutations.push(Mutation::Put(key, encode(&parked)));
                    }
                    _ => mutations.push(Mutation::Delete(key)),
                }
            }
        }
        mutations.extend(extra);
        Ok(self.store.commit(&compares, &mutations).await?)
    }

    /// Ends a pod's stickiness: its binding goes, and so do the addresses parked for it.
    /// Addresses a live attachment of the pod holds stay with it until its DEL, which then
    /// frees them. Returns the binding that was released.
    pub async fn release_binding(&self, pod: &PodRef) -> Result<Option<Binding>> {
        for _ in 0..MAX_RELEASE_ATTEMPTS {
            let Some((b, rev)) = self.binding(pod).await? else {
                return Ok(None);
            };
            if self.release_binding_seen(&b, rev).await? {
                return Ok(Some(b));
            }
        }
        Err(Error::TryAgain(format!(
            "binding of pod {}/{} kept changing during release",
            pod.namespace, pod.name
        )))
    }

    /// Compare-and-delete of a binding exactly as it was read at `rev`, with the addresses
    /// parked for it; `false` if anything changed since.
    pub async fn release_binding_seen(&self, b: &Binding, rev: Revision) -> Result<bool> {
        self.release_binding_seen_with(b, rev, Vec::new()).await
    }

    /// [`Self::release_binding_seen`], with `extra` writes in the same commit.
    pub async fn release_binding_seen_with(
        &self,
        b: &Binding,
        rev: Revision,
        extra: Vec<Mutation>,
    ) -> Result<bool> {
        let pod = &b.pod;
        let key = self.keys.binding(&pod.namespace, &pod.name);
        let mut compares = vec![Compare::Revision(key.clone(), rev)];
        let mut mutations = vec![Mutation::Delete(key)];
        for ip in &b.ips {
            let k = self.keys.ip(ip.address);
            if let Some(e) = self.store.get(&k).await? {
                let rec: IpRecord = decode(&k, &e.value)?;
                if rec.holder.is_binding() && rec.holder.same_pod_name(pod) {
                    compares.push(Compare::Revision(k.clone(), e.revision));
                    mutations.push(Mutation::Delete(k));
                }
            }
        }
        mutations.extend(extra);
        Ok(self.store.commit(&compares, &mutations).await?)
    }

    /// Drops one address from a pod's binding (an operator freeing it for good), and its
    /// parked record if it has one. `false` when the binding did not list it.
    pub async fn unbind(&self, pod: &PodRef, ip: IpAddr) -> Result<bool> {
        for _ in 0..MAX_RELEASE_ATTEMPTS {
            let Some((mut b, rev)) = self.binding(pod).await? else {
                return Ok(false);
            };
            if !b.ips.iter().any(|i| i.address == ip) {
                return Ok(false);
            }
            b.ips.retain(|i| i.address != ip);
            let key = self.keys.binding(&pod.namespace, &pod.name);
            let mut compares = vec![Compare::Revision(key.clone(), rev)];
            let mut mutations = vec![if b.ips.is_empty() {
                Mutation::Delete(key)
            } else {
                Mutation::Put(key, encode(&b))
            }];
            let k = self.keys.ip(ip);
            if let Some(e) = self.store.get(&k).await? {
                let rec: IpRecord = decode(&k, &e.value)?;
                if rec.holder.is_binding() && rec.holder.same_pod_name(pod) {
                    compares.push(Compare::Revision(k.clone(), e.revision));
                    mutations.push(Mutation::Delete(k));
                }
            }
            if self.store.commit(&compares, &mutations).await? {
                return Ok(true);
            }
        }
        Err(Error::TryAgain(format!(
            "binding of pod {}/{} kept changing",
            pod.namespace, pod.name
        )))
    }

    /// CHECK: the attachment holds exactly `expected` and every record still names it.
    pub async fn check(&self, holder: &Holder, expected: &[IpAddr]) -> Result<()> {
        let Some((att, _)) = self
            .attachment(&holder.container_id, &holder.ifname)
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
            if !rec.is_some_and(|r| r.holder.same_attachment(holder)) {
                return Err(Error::CheckMismatch(format!(
                    "record of {} no longer names container {}",
                    ip.address, holder.container_id
                )));
            }
        }
        let mut have: Vec<IpAddr> = att.ips.iter().map(|i| i.address).collect();
        let mut want = expected.to_vec();
        have.sort();
        want.sort();
        if have != want {
            return Err(Error::CheckMismatch(format!(
                "container {} holds {have:?}, prevResult says {want:?}",
                holder.container_id
            )));
        }
        Ok(())
    }

    /// Releases every attachment not in `valid`; returns what was freed.
    pub async fn gc(&self, valid: &[AttachmentRef]) -> Result<Vec<Attachment>> {
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let mut freed = Vec::new();
        for (att, rev) in self.attachments().await? {
            let id = (att.holder.container_id.as_str(), att.holder.ifname.as_str());
            if keep.contains(&id) {
                continue;
            }
            let ranges = att.ips.iter().map(|i| i.range.as_str());
            let counted = counts::event(&self.keys, Counter::LeaksCniGc, ranges);
            if self
                .release_seen_with(&att, rev, Release::Park, vec![counted])
                .await?
            {
                freed.push(att);
            }
        }
        Ok(freed)
    }

    /// Cross-checks the views of the store: every address record is listed by the owner
    /// record (or, parked, by the pod binding) it names, every address an owner lists has a
    /// record naming it, and every address a binding keeps is parked for the pod or held by
    /// it. Returns the problems found, one sentence each; none means consistent.
    pub async fn verify(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let owners = self.attachments().await?;
        let bindings = self.bindings().await?;
        let (from, to) = self.keys.ips();
        let mut held = HashMap::new();
        for e in self.store.range(&from, &to, 0).await? {
            let Some(ip) = self.keys.parse_ip(&e.key) else {
                problems.push(format!("{} is not an address key", e.key));
                continue;
            };
            let rec: IpRecord = match decode(&e.key, &e.value) {
                Ok(r) => r,
                Err(err) => {
                    problems.push(err.to_string());
                    continue;
                }
            };
            let listed = if rec.holder.is_binding() {
                bindings.iter().any(|(b, _)| {
                    rec.holder.same_pod_name(&b.pod) && b.ips.iter().any(|i| i.address == ip)
                })
            } else {
                owners.iter().any(|(att, _)| {
                    att.holder.same_attachment(&rec.holder)
                        && att.ips.iter().any(|i| i.address == ip)
                })
            };
            if !listed {
                let by = if rec.holder.is_binding() {
                    "binding"
                } else {
                    "owner record"
                };
                problems.push(format!(
                    "{ip} is held by {} but no {by} lists it",
                    rec.holder
                ));
            }
            held.insert(ip, rec.holder);
        }
        for (att, _) in &owners {
            for ip in &att.ips {
                if !held
                    .get(&ip.address)
                    .is_some_and(|h| h.same_attachment(&att.holder))
                {
                    problems.push(format!(
                        "{} lists {} but no address record names it",
                        att.holder, ip.address
                    ));
                }
            }
        }
        for (b, _) in &bindings {
            for ip in &b.ips {
                if !held
                    .get(&ip.address)
                    .is_some_and(|h| h.same_pod_name(&b.pod))
                {
                    problems.push(format!(
                        "the binding of pod {}/{} keeps {} but no record of that pod holds it",
                        b.pod.namespace, b.pod.name, ip.address
                    ));
                }
            }
        }
        Ok(problems)
    }

    /// STATUS: the store answers and every range set has room for one more address.
    pub async fn status(&self) -> Result<()> {
        self.store
            .ping()
            .await
            .map_err(|e| Error::StatusUnavailable(e.to_string()))?;
        for set in &self.sets {
            let mut full = true;
            for p in set {
                if !is_full(&self.store, &self.keys, p).await? {
                    full = false;
                    break;
                }
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

fn attached(pool: &Pool, v: u128, kind: Kind, gateway: Option<IpAddr>) -> AttachedIp {
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
