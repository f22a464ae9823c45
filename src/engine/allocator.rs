//! The allocation engine: claims, releases and inspects addresses over any [`LeaseStore`].
//!
//! Every claim is one conditional commit that creates the address records and the owner
//! index together, each only if absent. Every release is a compare-and-delete against the
//! revisions just read. Nothing else is ever trusted to say whether an address is taken.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube_ipam_store::records::{decode, encode};
use kube_ipam_store::{
    AttachedIp, Attachment, Compare, Holder, IpRecord, Keys, Kind, LeaseStore, Mutation, Revision,
};
use rand::Rng;

use super::pool::{to_u128, Pool};
use super::search::{find_free, is_full};
use crate::config::{AttachmentRef, IpamConf, RequestedIp};
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    pub holder: Holder,
    pub wanted: Vec<Wanted>,
}

/// What ADD decided for one range set.
#[derive(Debug, Clone)]
enum Choice {
    Fixed { pool: usize, addr: IpAddr },
    Dynamic,
}

pub struct Allocator<S> {
    store: S,
    keys: Keys,
    sets: Vec<Vec<Pool>>,
}

impl<S: LeaseStore> Allocator<S> {
    pub fn new(store: S, keys: Keys, conf: &IpamConf) -> Self {
        let sets = conf
            .range_sets
            .iter()
            .map(|set| set.ranges.iter().map(Pool::new).collect())
            .collect();
        Allocator { store, keys, sets }
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

    /// Gives the attachment one address per range set, or returns what it already holds.
    pub async fn add(&self, req: &AddRequest) -> Result<Attachment> {
        let choices = self.plan(req)?;
        let owner_key = self
            .keys
            .owner(&req.holder.container_id, &req.holder.ifname);
        for attempt in 0..MAX_ATTEMPTS {
            if let Some((existing, _)) = self
                .attachment(&req.holder.container_id, &req.holder.ifname)
                .await?
            {
                return Ok(existing);
            }
            for c in &choices {
                if let Choice::Fixed { addr, .. } = c {
                    self.ensure_free(*addr, &req.holder).await?;
                }
            }
            let ips = self.pick(&choices).await?;
            let now = unix_now();
            let attachment = Attachment {
                holder: req.holder.clone(),
                ips: ips.clone(),
                created: now,
            };
            let mut compares = vec![Compare::Absent(owner_key.clone())];
            let mut mutations = Vec::with_capacity(ips.len() + 1);
            for ip in &ips {
                let key = self.keys.ip(ip.address);
                compares.push(Compare::Absent(key.clone()));
                let record = IpRecord {
                    holder: req.holder.clone(),
                    kind: ip.kind,
                    range: ip.range.clone(),
                    created: now,
                };
                mutations.push(Mutation::Put(key, encode(&record)));
            }
            mutations.push(Mutation::Put(owner_key.clone(), encode(&attachment)));
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
                return Ok((s, p));
            }
        }
        Err(Error::config(
            &w.source,
            addr,
            "is not in any configured subnet",
        ))
    }

    /// A fixed address held by another attachment is not ours to take: the caller retries.
    async fn ensure_free(&self, ip: IpAddr, me: &Holder) -> Result<()> {
        let key = self.keys.ip(ip);
        if let Some(e) = self.store.get(&key).await? {
            let rec: IpRecord = decode(&key, &e.value)?;
            if !rec.holder.same_attachment(me) {
                return Err(Error::TryAgain(format!("{ip} is held by {}", rec.holder)));
            }
        }
        Ok(())
    }

    /// Resolves the plan into addresses, searching the dynamic ones.
    async fn pick(&self, choices: &[Choice]) -> Result<Vec<AttachedIp>> {
        let mut rng = rand::rng();
        let mut rnd = move || rng.random::<u128>();
        let mut out = Vec::with_capacity(choices.len());
        for (set, choice) in self.sets.iter().zip(choices) {
            match choice {
                Choice::Fixed { pool, addr, .. } => {
                    let p = &set[*pool];
                    out.push(attached(p, to_u128(*addr), Kind::Fixed));
                }
                Choice::Dynamic => {
                    let mut found = None;
                    for p in set {
                        if let Some(v) = find_free(&self.store, &self.keys, p, &mut rnd).await? {
                            found = Some(attached(p, v, Kind::Dynamic));
                            break;
                        }
                    }
                    match found {
                        Some(a) => out.push(a),
                        None => {
                            return Err(Error::Exhausted {
                                range: set
                                    .iter()
                                    .map(|p| p.id.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                size: set.iter().map(Pool::size).sum(),
                            })
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Releases everything `container_id`/`ifname` holds; `Ok(None)` when it holds nothing.
    pub async fn release(&self, container_id: &str, ifname: &str) -> Result<Option<Attachment>> {
        for _ in 0..MAX_RELEASE_ATTEMPTS {
            let Some((att, rev)) = self.attachment(container_id, ifname).await? else {
                return Ok(None);
            };
            if self.release_seen(&att, rev).await? {
                return Ok(Some(att));
            }
        }
        Err(Error::TryAgain(format!(
            "records of container {container_id} ({ifname}) kept changing during release"
        )))
    }

    /// Compare-and-delete of an attachment exactly as it was read at `rev`: if anything
    /// changed since, nothing is deleted and `false` comes back.
    pub async fn release_seen(&self, att: &Attachment, rev: Revision) -> Result<bool> {
        let owner_key = self
            .keys
            .owner(&att.holder.container_id, &att.holder.ifname);
        let mut compares = vec![Compare::Revision(owner_key.clone(), rev)];
        let mut mutations = vec![Mutation::Delete(owner_key)];
        for ip in &att.ips {
            let key = self.keys.ip(ip.address);
            if let Some(e) = self.store.get(&key).await? {
                let rec: IpRecord = decode(&key, &e.value)?;
                // Only what still names this attachment is ours to free.
                if rec.holder.same_attachment(&att.holder) {
                    compares.push(Compare::Revision(key.clone(), e.revision));
                    mutations.push(Mutation::Delete(key));
                }
            }
        }
        Ok(self.store.commit(&compares, &mutations).await?)
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
            if !keep.contains(&id) && self.release_seen(&att, rev).await? {
                freed.push(att);
            }
        }
        Ok(freed)
    }

    /// Cross-checks the two views of the store: every address record is listed by the owner
    /// record it names, and every address an owner lists has a record naming it. Returns the
    /// problems found, one sentence each; none means consistent.
    pub async fn verify(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let owners = self.attachments().await?;
        let (from, to) = self.keys.ips();
        let mut held = HashSet::new();
        for e in self.store.range(&from, &to, 0).await? {
            let Some(ip) = self.keys.parse_ip(&e.key) else {
                problems.push(format!("{} is not an address key", e.key));
                continue;
            };
            held.insert(ip);
            let rec: IpRecord = match decode(&e.key, &e.value) {
                Ok(r) => r,
                Err(err) => {
                    problems.push(err.to_string());
                    continue;
                }
            };
            let listed = owners.iter().any(|(att, _)| {
                att.holder.same_attachment(&rec.holder) && att.ips.iter().any(|i| i.address == ip)
            });
            if !listed {
                problems.push(format!(
                    "{ip} is held by {} but no owner record lists it",
                    rec.holder
                ));
            }
        }
        for (att, _) in &owners {
            for ip in &att.ips {
                if !held.contains(&ip.address) {
                    problems.push(format!(
                        "{} lists {} but no address record exists",
                        att.holder, ip.address
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

fn attached(pool: &Pool, v: u128, kind: Kind) -> AttachedIp {
    AttachedIp {
        address: pool.addr(v),
        prefix_len: pool.prefix_len(),
        gateway: pool.range.gateway,
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
