//! Reading the store back: attachments, bindings, CHECK, the consistency check and STATUS.

use std::collections::HashMap;
use std::net::IpAddr;

use kube_ipam_store::records::decode;
use kube_ipam_store::{Attachment, Binding, Holder, IpRecord, LeaseStore, PodRef, Revision};

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
