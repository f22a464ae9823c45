//! Taking over allocations another IPAM left behind (the original plugin, host-local) as
//! kube-ipam records, without ever overwriting a record someone else holds.

use std::net::IpAddr;

use kube_ipam_store::records::{decode, encode};
use kube_ipam_store::{
    AttachedIp, Attachment, Compare, Holder, IpRecord, Kind, LeaseStore, Mutation,
};

use super::allocator::{unix_now, Allocator, MAX_RELEASE_ATTEMPTS};
use super::pool::to_u128;
use crate::{Error, Result};

/// Range id of an address imported from outside every configured subnet.
pub const OUTSIDE: &str = "outside the config";

/// What became of one imported address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// Recorded for the attachment now (or, in a dry run, would be).
    New,
    /// Already recorded for the same attachment: an earlier import, or its own ADD.
    AlreadyThere,
    /// Held in kube-ipam by someone else; left alone.
    Conflict(Holder),
    /// In no configured subnet, and not asked to take such addresses.
    Outside,
}

impl<S: LeaseStore> Allocator<S> {
    /// Records `addrs` as held by `holder` (one attachment), each only if no record exists,
    /// in one commit with the attachment's owner record. A concurrent ADD either claims an
    /// address first (then it is reported as a conflict) or cannot claim it at all.
    pub async fn import(
        &self,
        holder: &Holder,
        addrs: &[IpAddr],
        take_outside: bool,
        dry_run: bool,
    ) -> Result<Vec<(IpAddr, Imported)>> {
        let owner_key = self.keys.owner(&holder.container_id, &holder.ifname);
        for _ in 0..MAX_RELEASE_ATTEMPTS {
            let existing = self
                .attachment(&holder.container_id, &holder.ifname)
                .await?;
            let mut listed: Vec<AttachedIp> = existing
                .as_ref()
                .map(|(a, _)| a.ips.clone())
                .unwrap_or_default();
            let now = unix_now();
            let mut compares = Vec::new();
            let mut mutations = Vec::new();
            let mut outcomes = Vec::with_capacity(addrs.len());
            let mut owner_changes = false;
            for &addr in addrs {
                let Some(ip) = self.imported_ip(addr, take_outside) else {
                    outcomes.push((addr, Imported::Outside));
                    continue;
                };
                let key = self.keys.ip(addr);
                let outcome = match self.store.get(&key).await? {
                    Some(e) => {
                        let rec: IpRecord = decode(&key, &e.value)?;
                        // Held by the same container on a known interface: the original's key
                        // was written by kube-ipam itself (writeOriginalKeys).
                        if holder.is_any_interface()
                            && rec.holder.container_id == holder.container_id
                            && !rec.holder.is_any_interface()
                        {
                            outcomes.push((addr, Imported::AlreadyThere));
                            continue;
                        }
                        if !self.mine(&rec) || !rec.holder.same_attachment(holder) {
                            outcomes.push((addr, Imported::Conflict(rec.holder)));
                            continue;
                        }
                        compares.push(Compare::Revision(key, e.revision));
                        Imported::AlreadyThere
                    }
                    None => {
                        let record = IpRecord {
                            network: self.keys.network().to_owned(),
                            holder: holder.clone(),
                            kind: ip.kind,
                            range: ip.range.clone(),
                            created: now,
                        };
                        compares.push(Compare::Absent(key.clone()));
                        mutations.push(Mutation::Put(key, encode(&record)));
                        Imported::New
                    }
                };
                if !listed.iter().any(|i| i.address == addr) {
                    listed.push(ip);
                    owner_changes = true;
                }
                outcomes.push((addr, outcome));
            }
            if !owner_changes || dry_run {
                return Ok(outcomes);
            }
            let attachment = Attachment {
                holder: holder.clone(),
                ips: listed,
                created: existing.as_ref().map_or(now, |(a, _)| a.created),
            };
            compares.push(match &existing {
                Some((_, rev)) => Compare::Revision(owner_key.clone(), *rev),
                None => Compare::Absent(owner_key.clone()),
            });
            mutations.push(Mutation::Put(owner_key.clone(), encode(&attachment)));
            if self.store.commit(&compares, &mutations).await? {
                return Ok(outcomes);
            }
        }
        Err(Error::TryAgain(format!(
            "records of {holder} kept changing during the import"
        )))
    }

    /// How an imported address is held: as its range hands it out, dynamic inside the
    /// dynamic range, fixed elsewhere in the subnet.
    fn imported_ip(&self, addr: IpAddr, take_outside: bool) -> Option<AttachedIp> {
        let v = to_u128(addr);
        let pool = self.pools().find(|p| p.range.subnet.contains(&addr));
        match pool {
            Some(p) => Some(AttachedIp {
                address: addr,
                prefix_len: p.prefix_len(),
                gateway: p.range.gateway,
                kind: if p.contains_dynamic(v) {
                    Kind::Dynamic
                } else {
                    Kind::Fixed
                },
                range: p.id.clone(),
            }),
            None if take_outside => Some(AttachedIp {
                address: addr,
                prefix_len: if addr.is_ipv6() { 128 } else { 32 },
                gateway: None,
                kind: Kind::Fixed,
                range: OUTSIDE.into(),
            }),
            None => None,
        }
    }
}
