//! Living beside the original kube-ipam plugin's records in the same etcd.
//!
//! Its `used/<ip>` keys are a second place where an address can be held. Every claim commits
//! only while that key is absent, so a running pod of the original is never given a twin,
//! migrated or not; the check rides in the claim's own transaction. The keys are read (one
//! range read) only after a claim has lost, to steer the next pick away from them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use kube_ipam_store::original::used_by;
use kube_ipam_store::{
    AttachedIp, Attachment, Compare, Holder, LeaseStore, Mutation, OriginalKeys, Revision,
};

use super::allocator::Allocator;
use crate::Result;

/// How this node treats the original plugin's records.
#[derive(Debug, Clone)]
pub(super) struct Original {
    pub keys: OriginalKeys,
    /// `writeOriginalKeys`: keep them up to date for nodes still running the original.
    pub write: bool,
}

/// Addresses the original plugin's records hold, with the container each names.
pub(super) type OriginalHeld = BTreeMap<IpAddr, String>;

impl<S: LeaseStore> Allocator<S> {
    /// Adds to a claim's commit the original layout's condition for each address: its
    /// `used/` key is absent, and with `writeOriginalKeys` it is written naming the container.
    pub(super) fn guard_original(
        &self,
        holder: &Holder,
        ips: &[AttachedIp],
        compares: &mut Vec<Compare>,
        mutations: &mut Vec<Mutation>,
    ) {
        for ip in ips {
            let key = self.original.keys.used(ip.address);
            compares.push(Compare::Absent(key.clone()));
            if self.original.write {
                mutations.push(Mutation::Put(key, holder.container_id.clone().into_bytes()));
            }
        }
    }

    /// Every address the original plugin's records hold for this network.
    pub(super) async fn original_held(&self) -> Result<OriginalHeld> {
        let keys = &self.original.keys;
        let (from, to) = keys.all_used();
        let mut held = BTreeMap::new();
        for e in self.store.range(&from, &to, 0).await? {
            if let Some(ip) = keys.parse_used(&e.key) {
                held.insert(ip, used_by(&e.value).unwrap_or_default());
            }
        }
        Ok(held)
    }

    /// Adds to a release's commit the deletion of the original's `used/` key of `ip`, when
    /// it names the releasing container. Needed for attachments imported from the original
    /// (their keys are still there) and under `writeOriginalKeys`; anything else never has
    /// one, so other releases skip the read.
    pub(super) async fn release_original(
        &self,
        holder: &Holder,
        ip: IpAddr,
        compares: &mut Vec<Compare>,
        mutations: &mut Vec<Mutation>,
    ) -> Result<()> {
        if !(self.original.write || holder.is_any_interface()) {
            return Ok(());
        }
        let key = self.original.keys.used(ip);
        if let Some(e) = self.store.get(&key).await? {
            if used_by(&e.value).as_deref() == Some(holder.container_id.as_str()) {
                compares.push(Compare::Revision(key.clone(), e.revision));
                mutations.push(Mutation::Delete(key));
            }
        }
        Ok(())
    }

    /// The attachment of `container_id`/`ifname`, or else the container's attachment whose
    /// interface is unknown (imported from the original plugin), which any of its
    /// interfaces' DEL and CHECK answer for.
    pub async fn attachment_or_imported(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<(Attachment, Revision)>> {
        match self.attachment(container_id, ifname).await? {
            Some(found) => Ok(Some(found)),
            None => self.attachment(container_id, "").await,
        }
    }
}
