//! ADD: planning the addresses a request gets and claiming them, named or dynamic.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use kube_ipam_store::records::{decode, encode};
use kube_ipam_store::{
    Answer, AttachedIp, Attachment, Binding, Compare, Holder, IpRecord, Kind, LeaseStore, Mutation,
    PodRef, Read, Revision,
};
use rand::Rng;

use super::ip_pool::Pooled;
use super::original::OriginalHeld;
use super::pool::{to_u128, Pool};
use super::search::Start;
use crate::engine::events::{self, Counter};
use crate::pod::lost;
use crate::{Error, Result};

use super::allocator::{
    attached, unix_now, AddRequest, Allocator, Choice, Claim, Release, Wanted, MAX_ATTEMPTS,
};

impl<S: LeaseStore> Allocator<S> {
    /// Gives the attachment one address per range set, or returns what it already holds.
    pub async fn add(&self, req: &AddRequest) -> Result<Attachment> {
        let choices = self.plan(req)?;
        // A StatefulSet's pod keeps its pool addresses as a sticky pod keeps its dynamic
        // ones: through a binding to its name.
        let binds_pool = req.pool.as_ref().is_some_and(|p| p.ordinal.is_some())
            && choices.iter().any(|c| matches!(c, Choice::Pool(_)));
        let sticky_pod = req.holder.pod.as_ref().filter(|_| req.sticky);
        let bound_pod = req.holder.pod.as_ref().filter(|_| req.sticky || binds_pool);
        let owner_key = self
            .keys
            .owner(&req.holder.container_id, &req.holder.ifname);
        // What the original plugin holds; learnt only once a claim has lost.
        let mut original = OriginalHeld::new();
        'attempt: for attempt in 0..MAX_ATTEMPTS {
            if let Some((existing, _)) = self
                .attachment(&req.holder.container_id, &req.holder.ifname)
                .await?
            {
                return repeat(existing, req, &choices);
            }
            let binding = match bound_pod {
                Some(p) => self.binding(p).await?,
                None => None,
            };
            let kept = |kind: Kind| {
                binding
                    .iter()
                    .flat_map(|(b, _)| b.ips.iter())
                    .filter(move |i| i.kind == kind)
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
                    } => match self.claim(*addr, &req.holder, None, &original).await? {
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
                    Choice::Pool(candidates) => {
                        let pool = req.pool.as_ref().ok_or_else(|| {
                            Error::Internal("a pool choice without a pool".into())
                        })?;
                        let ours = kept(Kind::Pool)
                            .filter(|_| binds_pool)
                            .find_map(|i| candidates.iter().find(|c| c.addr == i.address));
                        if let (Some(c), Some(pod)) = (ours, bound_pod) {
                            match self
                                .claim(c.addr, &req.holder, Some(pod), &original)
                                .await?
                            {
                                Claim::Free(cmp) => {
                                    compares.push(cmp);
                                    let p = &set[c.pool];
                                    ips.push(attached(p, to_u128(c.addr), Kind::Pool, c.gateway));
                                    continue;
                                }
                                Claim::TookOver => continue 'attempt,
                                Claim::Stale => {
                                    tracing::warn!(
                                        address = %c.addr,
                                        pod = %format!("{}/{}", pod.namespace, pod.name),
                                        "pool address kept for the pod is now held by another; picking again"
                                    );
                                }
                            }
                        }
                        let bound_to = bound_pod.filter(|_| binds_pool);
                        match self
                            .pick_pooled(pool, candidates, &req.holder, bound_to, &original)
                            .await?
                        {
                            Pooled::Free(c, cmp) => {
                                compares.push(cmp);
                                let p = &set[c.pool];
                                ips.push(attached(p, to_u128(c.addr), Kind::Pool, c.gateway));
                            }
                            Pooled::TookOver => continue 'attempt,
                        }
                    }
                    Choice::Dynamic => {
                        let kept = kept(Kind::Sticky).find_map(|i| {
                            let v = to_u128(i.address);
                            set.iter().find(|p| p.contains_dynamic(v)).map(|p| (p, v))
                        });
                        if let (Some((p, v)), Some(pod)) = (kept, sticky_pod) {
                            match self
                                .claim(p.addr(v), &req.holder, Some(pod), &original)
                                .await?
                            {
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
                        let a = self.pick_dynamic(set, kind, &original).await?;
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
                    network: self.keys.network().to_owned(),
                    holder: req.holder.clone(),
                    kind: ip.kind,
                    range: ip.range.clone(),
                    created: now,
                };
                mutations.push(Mutation::Put(self.keys.ip(ip.address), encode(&record)));
            }
            mutations.push(Mutation::Put(owner_key.clone(), encode(&attachment)));
            // The address is taken now: its cooling mark, if any, has done its work.
            if self.reuse_delay_secs > 0 {
                mutations.extend(
                    ips.iter()
                        .map(|i| Mutation::Delete(self.keys.cool(i.address))),
                );
            }
            self.guard_original(&req.holder, &ips, &mut compares, &mut mutations);
            // A record of this network in the layout before the shared space, not converted
            // yet or written since by a node of an earlier release, holds its address too.
            compares.extend(
                ips.iter()
                    .map(|i| Compare::Absent(self.keys.network_ip(i.address))),
            );
            if let Some(pod) = bound_pod {
                let keeps =
                    |i: &AttachedIp| i.kind == Kind::Sticky || (binds_pool && i.kind == Kind::Pool);
                self.rebind(
                    pod,
                    binding.as_ref(),
                    ips.iter().filter(|i| keeps(i)).cloned().collect(),
                    now,
                    &mut compares,
                    &mut mutations,
                )
                .await?;
            }
            match self.commit(&compares, &mutations).await {
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
            // Someone claimed one of our picks first (or the same ADD ran twice at once), or
            // the original plugin holds one: back off a little, by a random amount so racers
            // do not collide again, and look at the original's records before picking again.
            original = self.original_held().await?;
            let jitter = rand::rng().random_range(0..=(2u64 << attempt.min(5)));
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(Error::TryAgain(format!(
            "lost the race for a free address {MAX_ATTEMPTS} times; too many concurrent allocations"
        )))
    }

    /// Adds to a claim the write of the pod's binding: the addresses it keeps (sticky, and a
    /// StatefulSet pod's pool addresses) as just chosen. Addresses the binding no longer
    /// keeps (the config or the pool changed, or they went to another pod) stop being
    /// reserved for it in the same commit.
    async fn rebind(
        &self,
        pod: &PodRef,
        old: Option<&(Binding, Revision)>,
        sticky: Vec<AttachedIp>,
        now: u64,
        compares: &mut Vec<Compare>,
        mutations: &mut Vec<Mutation>,
    ) -> Result<()> {
        let key = self.keys.binding(&pod.namespace, &pod.name);
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
                        if self.mine(&rec)
                            && rec.holder.is_binding()
                            && rec.holder.same_pod_name(pod)
                        {
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

    /// Matches every wanted address to a range set, else the pod's pool; sets without
    /// either get a dynamic address. The same address asked for twice counts once (podman
    /// repeats them).
    fn plan(&self, req: &AddRequest) -> Result<Vec<Choice>> {
        let mut choices = vec![Choice::Dynamic; self.sets.len()];
        if let (true, Some(pool)) = (req.wanted.is_empty(), &req.pool) {
            for (set, candidates) in self.pool_candidates(pool)?.into_iter().enumerate() {
                if !candidates.is_empty() {
                    choices[set] = Choice::Pool(candidates);
                }
            }
        }
        let mut set_taken: Vec<Option<IpAddr>> = vec![None; self.sets.len()];
        for w in &req.wanted {
            let (set, pool) = self.locate_fixed(w)?;
            match set_taken[set] {
                Some(first) if first == w.ip.address => continue,
                Some(first) => {
                    return Err(Error::config(
                        &w.source,
                        w.ip.address,
                        format!(
                            "is a second address for the range set of {first}; one address \
                             is given per range set"
                        ),
                    ))
                }
                None => set_taken[set] = Some(w.ip.address),
            }
            choices[set] = Choice::Fixed {
                pool,
                addr: w.ip.address,
                gateway: w.gateway.as_ref().map(|(_, g)| *g),
            };
        }
        Ok(choices)
    }

    /// Finds the range of a wanted address and checks it may be handed out by name: anywhere
    /// in the subnet but its network, broadcast and gateway addresses, and, where the range
    /// declares a fixed zone, in that zone or the dynamic range.
    fn locate_fixed(&self, w: &Wanted) -> Result<(usize, usize)> {
        let addr = w.ip.address;
        let Some((s, p)) = self.find_range(addr) else {
            return Err(Error::config(
                &w.source,
                addr,
                "is not in any configured subnet",
            ));
        };
        self.check_named(w, s, p)?;
        Ok((s, p))
    }

    /// The range set and range whose subnet holds `addr`.
    pub(super) fn find_range(&self, addr: IpAddr) -> Option<(usize, usize)> {
        self.sets.iter().enumerate().find_map(|(s, set)| {
            set.iter()
                .position(|p| p.range.subnet.contains(&addr))
                .map(|p| (s, p))
        })
    }

    /// Whether `w` may be handed out by name from range `p` of set `s`, whose subnet holds it.
    pub(super) fn check_named(&self, w: &Wanted, s: usize, p: usize) -> Result<()> {
        let addr = w.ip.address;
        let v = to_u128(addr);
        let pool = &self.sets[s][p];
        let r = &pool.range;
        let bad = |why: String| Err(Error::config(&w.source, addr, why));
        if let (Some(len), Some(mask_source)) = (w.ip.prefix_len, &w.mask_source) {
            if len != r.subnet.prefix_len() {
                return Err(Error::config(
                    mask_source,
                    format!("/{len}"),
                    format!(
                        "for {addr} differs from subnet {}; leave it out or give /{}",
                        r.subnet,
                        r.subnet.prefix_len()
                    ),
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
        if let Some((a, b)) = pool.excluded(v) {
            let span = if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            };
            return bad(format!(
                "is excluded from {} by ipam.exclude ({span})",
                r.subnet
            ));
        }
        let in_dynamic = v >= pool.start && v <= pool.end;
        if let Some((fs, fe)) = r.fixed {
            if !in_dynamic && (v < to_u128(fs) || v > to_u128(fe)) {
                return bad(format!(
                    "lies outside the fixed zone {fs}-{fe} and the dynamic range {}-{}",
                    r.range_start, r.range_end
                ));
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
        Ok(())
    }

    /// Can `me` claim the named address `ip`? For a sticky address, `sticky_for` is the pod
    /// whose binding keeps it.
    async fn claim(
        &self,
        ip: IpAddr,
        me: &Holder,
        sticky_for: Option<&PodRef>,
        original: &OriginalHeld,
    ) -> Result<Claim> {
        if let Some(holder) = original.get(&ip) {
            return match sticky_for {
                // Given away by a node still running the original plugin: pick anew.
                Some(_) => Ok(Claim::Stale),
                None => Err(Error::TryAgain(format!(
                    "{ip} is held by container {holder} in the original plugin's records"
                ))),
            };
        }
        let key = self.keys.ip(ip);
        let Some(e) = self.store.get(&key).await? else {
            return Ok(Claim::Free(Compare::Absent(key)));
        };
        let rec: IpRecord = decode(&key, &e.value)?;
        // Another network's: neither ours to take nor to take over. Its own collector frees
        // it when its pod is gone.
        if !self.mine(&rec) {
            return match sticky_for {
                Some(_) => Ok(Claim::Stale),
                None => Err(Error::TryAgain(format!(
                    "{ip} is held by {} in network {}",
                    rec.holder, rec.network
                ))),
            };
        }
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

    /// Why Kubernetes has given up the pod holding a record: the API says it no longer
    /// exists, or exists with another uid (recreated), or it is terminating on a node that is
    /// lost. `None` when it is live, or when nobody can tell. Every failure to ask fails the
    /// call: an address is never taken over on a guess.
    pub(super) async fn holder_gone(&self, holder: &Holder) -> Result<Option<String>> {
        let (Some(pods), Some(p)) = (&self.pods, &holder.pod) else {
            return Ok(None);
        };
        let Some(now) = pods.holder(&p.namespace, &p.name).await? else {
            return Ok(Some(format!(
                "pod {}/{} no longer exists",
                p.namespace, p.name
            )));
        };
        if let (Some(was), Some(is)) = (&p.uid, &now.uid) {
            if was != is {
                return Ok(Some(format!(
                    "pod {}/{} was recreated (uid {was} is now {is})",
                    p.namespace, p.name
                )));
            }
        }
        let clock = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let lost::Verdict::AskNode(node) = lost::terminating(&now, &self.lost, clock) else {
            return Ok(None);
        };
        let state = pods.node(&node).await?;
        Ok(
            lost::node_lost(&node, state.as_ref(), &self.lost, clock).map(|why| {
                format!(
                    "pod {}/{} is terminating past its grace period and {why}",
                    p.namespace, p.name
                )
            }),
        )
    }

    /// Releases the attachment of a holder that is gone, as its DEL would have.
    pub(super) async fn take_over(
        &self,
        ip: IpAddr,
        rec: &IpRecord,
        rev: Revision,
        why: &str,
    ) -> Result<()> {
        let h = &rec.holder;
        let counted = events::event(
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
                self.commit(
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

    /// A free address from the first range of `set` that has one. The first reads of every
    /// range's search go out as one request: a range behind a full one costs no extra trip.
    async fn pick_dynamic(
        &self,
        set: &[Pool],
        kind: Kind,
        original: &OriginalHeld,
    ) -> Result<AttachedIp> {
        let mut rng = rand::rng();
        let mut rnd = move || rng.random::<u128>();
        let cooling = self.cooling();
        let starts: Vec<Start> = set
            .iter()
            .enumerate()
            .map(|(i, p)| Start::new(&self.keys, p, i > 0, cooling, &mut rnd))
            .collect();
        let reads: Vec<Read> = starts.iter().flat_map(|s| s.reads().to_vec()).collect();
        let mut answers = self.store.reads(&reads).await?.into_iter();
        for (p, start) in set.iter().zip(starts) {
            let mine: Vec<Answer> = answers.by_ref().take(start.reads().len()).collect();
            let avoid: BTreeSet<u128> = original
                .keys()
                .filter(|ip| ip.is_ipv6() == p.v6)
                .map(|ip| to_u128(*ip))
                .collect();
            if let Some(v) = start
                .finish(&self.store, &self.keys, p, &avoid, &mut rnd, mine)
                .await?
            {
                return Ok(attached(p, v, kind, None));
            }
        }
        // Every free address is cooling down: the one released longest ago goes at once.
        // Looked for even without a delay now: hints written while there was one may still
        // count cooling addresses as taken.
        if let Some((p, v)) = self.coolest(set, original).await? {
            return Ok(attached(p, v, kind, None));
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
}

/// A repeated ADD gets what the attachment already holds, as long as it asks for nothing
/// else: answering with other addresses than the ones asked for would be a silent lie.
fn repeat(existing: Attachment, req: &AddRequest, choices: &[Choice]) -> Result<Attachment> {
    for choice in choices {
        let Choice::Fixed { addr, .. } = choice else {
            continue;
        };
        if existing.ips.iter().any(|i| i.address == *addr) {
            continue;
        }
        let source = req
            .wanted
            .iter()
            .find(|w| w.ip.address == *addr)
            .map_or("requested address", |w| w.source.as_str());
        let held: Vec<String> = existing.ips.iter().map(|i| i.address.to_string()).collect();
        return Err(Error::config(
            source,
            addr,
            format!(
                "container {} ({}) already holds {}; DEL it before asking for another address",
                req.holder.container_id,
                req.holder.ifname,
                held.join(", ")
            ),
        ));
    }
    Ok(existing)
}
