//! DEL, the GC verb and operator releases: compare-and-delete against what was read.

use std::collections::HashSet;
use std::net::IpAddr;

use kube_ipam_store::records::{decode, encode};
use kube_ipam_store::{
    Attachment, Binding, Compare, Holder, IpRecord, Kind, LeaseStore, Mutation, PodRef, Revision,
};

use crate::config::AttachmentRef;
use crate::engine::events::{self, Counter};
use crate::{Error, Result};

use super::allocator::{Allocator, Release, MAX_RELEASE_ATTEMPTS};

impl<S: LeaseStore> Allocator<S> {
    /// Releases everything `container_id`/`ifname` holds (sticky addresses stay with their
    /// pod), or what the container holds on an unknown interface; `Ok(None)` when it holds
    /// nothing.
    pub async fn release(&self, container_id: &str, ifname: &str) -> Result<Option<Attachment>> {
        for _ in 0..MAX_RELEASE_ATTEMPTS {
            let Some((att, rev)) = self.attachment_or_imported(container_id, ifname).await? else {
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
    /// sticky or pool address its pod's binding keeps goes to the binding instead of the pool.
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
        let keepable = |k: Kind| matches!(k, Kind::Sticky | Kind::Pool);
        if let (Release::Park, Some(pod)) = (mode, pod) {
            if att.ips.iter().any(|i| keepable(i.kind)) {
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
            let here = match self.store.get(&key).await? {
                Some(e) => Some((decode::<IpRecord>(&key, &e.value)?, e)),
                None => None,
            };
            let ours = |rec: &IpRecord| self.mine(rec) && rec.holder.same_attachment(&att.holder);
            if !here.as_ref().is_some_and(|(rec, _)| ours(rec)) {
                // Held twice since the move into the shared space: the other holder keeps
                // the space's record, this attachment only its own.
                let twice = self.keys.held_twice(ip.address);
                if let Some(e) = self.store.get(&twice).await? {
                    if decode::<IpRecord>(&twice, &e.value).is_ok_and(|r| ours(&r)) {
                        compares.push(Compare::Revision(twice.clone(), e.revision));
                        mutations.push(Mutation::Delete(twice));
                    }
                }
                continue;
            }
            if let Some((rec, e)) = here {
                compares.push(Compare::Revision(key.clone(), e.revision));
                match pod {
                    Some(pod) if keepable(ip.kind) && kept.contains(&ip.address) => {
                        let parked = IpRecord {
                            holder: Holder::binding(pod.clone()),
                            ..rec
                        };
                        mutations.push(Mutation::Put(key, encode(&parked)));
                    }
                    _ => mutations.push(Mutation::Delete(key)),
                }
                // Parked too: the `used/` key names this container, and the pod's next
                // claim of the address requires it absent.
                self.release_original(&att.holder, ip.address, &mut compares, &mut mutations)
                    .await?;
            }
        }
        mutations.extend(extra);
        Ok(self.commit(&compares, &mutations).await?)
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
                if self.mine(&rec) && rec.holder.is_binding() && rec.holder.same_pod_name(pod) {
                    compares.push(Compare::Revision(k.clone(), e.revision));
                    mutations.push(Mutation::Delete(k));
                }
            }
        }
        mutations.extend(extra);
        Ok(self.commit(&compares, &mutations).await?)
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
                if self.mine(&rec) && rec.holder.is_binding() && rec.holder.same_pod_name(pod) {
                    compares.push(Compare::Revision(k.clone(), e.revision));
                    mutations.push(Mutation::Delete(k));
                }
            }
            if self.commit(&compares, &mutations).await? {
                return Ok(true);
            }
        }
        Err(Error::TryAgain(format!(
            "binding of pod {}/{} kept changing",
            pod.namespace, pod.name
        )))
    }

    /// Releases every attachment not in `valid`. Goes on past records it cannot read or
    /// release, as the spec asks of GC (remove as much as possible), and reports them after:
    /// `Ok` carries what was freed, `Err` also lists what was not.
    pub async fn gc(&self, valid: &[AttachmentRef]) -> Result<Vec<Attachment>> {
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        // An attachment of unknown interface stays while any interface of its container does.
        let live: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
        let (from, to) = self.keys.owners();
        let mut freed = Vec::new();
        let mut failed: Vec<Error> = Vec::new();
        for e in self.store.range(&from, &to, 0).await? {
            let att: Attachment = match decode(&e.key, &e.value) {
                Ok(a) => a,
                Err(err) => {
                    failed.push(err.into());
                    continue;
                }
            };
            let h = &att.holder;
            let kept = if h.is_any_interface() {
                live.contains(h.container_id.as_str())
            } else {
                keep.contains(&(h.container_id.as_str(), h.ifname.as_str()))
            };
            if kept {
                continue;
            }
            let ranges = att.ips.iter().map(|i| i.range.as_str());
            let counted = events::event(&self.keys, Counter::LeaksCniGc, ranges);
            match self
                .release_seen_with(&att, e.revision, Release::Park, vec![counted])
                .await
            {
                Ok(true) => freed.push(att),
                // Changed since it was read: its own DEL or ADD is under way.
                Ok(false) => {}
                Err(err) => failed.push(err),
            }
        }
        if failed.is_empty() {
            return Ok(freed);
        }
        Err(Error::Incomplete {
            code: failed[0].code(),
            done: format!("GC released {} attachments", freed.len()),
            failed: failed.iter().map(ToString::to_string).collect(),
        })
    }
}
