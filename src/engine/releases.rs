//! DEL, the GC verb and operator releases: compare-and-delete against what was read.

use std::collections::HashSet;
use std::net::IpAddr;

use kube_ipam_store::records::{decode, encode};
use kube_ipam_store::{
    Attachment, Binding, Compare, Holder, IpRecord, Kind, LeaseStore, Mutation, PodRef, Revision,
};

use crate::config::AttachmentRef;
use crate::{Error, Result};

use super::allocator::{Allocator, Release, MAX_RELEASE_ATTEMPTS};

impl<S: LeaseStore> Allocator<S> {
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
                if rec.holder.is_binding() && rec.holder.same_pod_name(pod) {
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

    /// Releases every attachment not in `valid`; returns what was freed.
    pub async fn gc(&self, valid: &[AttachmentRef]) -> Result<Vec<Attachment>> {
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let mut freed = Vec::new();
        for (att, rev) in self.attachments().await? {
            let id = (att.holder.container_id.as_str(), att.holder.ifname.as_str());
            if !keep.contains(&id) && self.release_seen(&att, rev, Release::Park).await? {
                freed.push(att);
            }
        }
        Ok(freed)
    }
}
