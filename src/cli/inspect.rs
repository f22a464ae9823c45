//! `ls`, `usage`, `show` and `release`: the store as operators need to see it.

use std::net::IpAddr;

use kube_ipam_store::records::decode;
use kube_ipam_store::{Compare, IpRecord, Keys, Kind, LeaseStore, Mutation};
use serde_json::{json, Value};

use super::Output;
use crate::config::NetConf;
use crate::engine::{unix_now, Allocator, Release};
use crate::{stores, Result};

pub struct Filter {
    pub pod: Option<String>,
    pub node: Option<String>,
    pub range: Option<String>,
}

async fn allocator(conf: &NetConf) -> Result<Allocator<Box<dyn LeaseStore>>> {
    let store = stores::open(conf).await?;
    Ok(Allocator::new(
        store,
        Keys::new(&conf.ipam.key_prefix, &conf.name),
        &conf.ipam,
    ))
}

/// Every address record, in address order.
async fn records<S: LeaseStore>(alloc: &Allocator<S>) -> Result<Vec<(IpAddr, IpRecord)>> {
    let keys = alloc.keys();
    let (from, to) = keys.ips();
    let mut out = Vec::new();
    for e in alloc.store().range(&from, &to, 0).await? {
        if let Some(ip) = keys.parse_ip(&e.key) {
            out.push((ip, decode(&e.key, &e.value)?));
        }
    }
    Ok(out)
}

fn pod_of(r: &IpRecord) -> String {
    r.holder
        .pod
        .as_ref()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .unwrap_or_default()
}

fn age(created: u64) -> String {
    let s = unix_now().saturating_sub(created);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub async fn ls(conf: &NetConf, f: &Filter, output: Output) -> Result<i32> {
    let alloc = allocator(conf).await?;
    let rows: Vec<(IpAddr, IpRecord)> = records(&alloc)
        .await?
        .into_iter()
        .filter(|(_, r)| f.pod.as_ref().is_none_or(|p| &pod_of(r) == p))
        .filter(|(_, r)| f.node.as_ref().is_none_or(|n| &r.holder.node == n))
        .filter(|(_, r)| {
            f.range
                .as_ref()
                .is_none_or(|s| r.range.split(' ').next() == Some(s.as_str()))
        })
        .collect();
    match output {
        Output::Json => {
            let items: Vec<Value> = rows
                .iter()
                .map(|(ip, r)| {
                    json!({
                        "address": ip.to_string(),
                        "kind": r.kind.to_string(),
                        "pod": r.holder.pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name)),
                        "podUid": r.holder.pod.as_ref().and_then(|p| p.uid.clone()),
                        "container": r.holder.container_id,
                        "ifname": r.holder.ifname,
                        "node": r.holder.node,
                        // Sticky and between two lives of its pod: held by the pod's binding.
                        "parked": r.holder.is_binding(),
                        "range": r.range,
                        "created": r.created,
                        "ageSeconds": unix_now().saturating_sub(r.created),
                    })
                })
                .collect();
            println!("{}", Value::Array(items));
        }
        Output::Table => {
            println!(
                "{:<40} {:<8} {:<30} {:<20} {:<8} {:<16} AGE",
                "ADDRESS", "KIND", "POD", "CONTAINER", "IFNAME", "NODE"
            );
            for (ip, r) in &rows {
                let short: String = if r.holder.is_binding() {
                    "(parked)".into()
                } else {
                    r.holder.container_id.chars().take(20).collect()
                };
                println!(
                    "{:<40} {:<8} {:<30} {:<20} {:<8} {:<16} {}",
                    ip.to_string(),
                    r.kind.to_string(),
                    pod_of(r),
                    short,
                    r.holder.ifname,
                    r.holder.node,
                    age(r.created)
                );
            }
        }
    }
    Ok(0)
}

pub async fn usage(conf: &NetConf, output: Output) -> Result<i32> {
    let alloc = allocator(conf).await?;
    let keys = alloc.keys();
    let mut rows = Vec::new();
    for pool in alloc.pools() {
        let (from, to) = keys.ip_range(pool.addr(pool.start), pool.addr(pool.end));
        let used = alloc.store().count(&from, &to).await? as u128;
        let size = pool.size();
        rows.push((pool.id.clone(), size, used.min(size)));
    }
    match output {
        Output::Json => {
            let items: Vec<Value> = rows
                .iter()
                .map(|(id, size, used)| {
                    json!({
                        "range": id,
                        "size": size.to_string(),
                        "used": used.to_string(),
                        "free": (size - used).to_string(),
                        "percent": percent(*used, *size),
                    })
                })
                .collect();
            println!("{}", Value::Array(items));
        }
        Output::Table => {
            println!(
                "{:<50} {:>12} {:>12} {:>12} {:>7}",
                "RANGE", "SIZE", "USED", "FREE", "USE%"
            );
            for (id, size, used) in &rows {
                let pct = percent(*used, *size);
                let filled = (pct / 5.0).round() as usize;
                println!(
                    "{:<50} {:>12} {:>12} {:>12} {:>6.1}% [{}{}]",
                    id,
                    size,
                    used,
                    size - used,
                    pct,
                    "#".repeat(filled.min(20)),
                    ".".repeat(20 - filled.min(20))
                );
            }
        }
    }
    Ok(0)
}

fn percent(used: u128, size: u128) -> f64 {
    if size == 0 {
        100.0
    } else {
        used as f64 * 100.0 / size as f64
    }
}

pub async fn show(conf: &NetConf, ip: IpAddr) -> Result<i32> {
    let alloc = allocator(conf).await?;
    let key = alloc.keys().ip(ip);
    match alloc.store().get(&key).await? {
        None => println!("{ip}: free"),
        Some(e) => {
            let r: IpRecord = decode(&key, &e.value)?;
            println!(
                "{ip}: {} address held by {} since {} ago (range {})",
                r.kind,
                r.holder,
                age(r.created),
                r.range
            );
        }
    }
    Ok(0)
}

pub async fn release(conf: &NetConf, ip: IpAddr) -> Result<i32> {
    let alloc = allocator(conf).await?;
    let key = alloc.keys().ip(ip);
    let Some(e) = alloc.store().get(&key).await? else {
        println!("{ip}: free, nothing to release");
        return Ok(0);
    };
    let rec: IpRecord = decode(&key, &e.value)?;
    let h = &rec.holder;
    let attachment = match h.is_binding() {
        true => None,
        false => alloc.attachment(&h.container_id, &h.ifname).await?,
    };
    let released = match (attachment, &h.pod) {
        // The holder's whole attachment goes, so its owner record never lists a freed address.
        (Some((att, rev)), _) if att.ips.iter().any(|i| i.address == ip) => {
            alloc.release_seen(&att, rev, Release::Free).await?
        }
        // Parked for a sticky pod: the binding lets go of it too.
        (_, Some(pod)) if h.is_binding() && alloc.unbind(pod, ip).await? => true,
        // A record nothing else lists: free just that record, as it was read.
        _ => {
            alloc
                .commit(
                    &[Compare::Revision(key.clone(), e.revision)],
                    &[Mutation::Delete(key)],
                )
                .await?
        }
    };
    // An operator freeing a sticky address means it: the pod does not get it back either.
    if let (true, Kind::Sticky, Some(pod)) = (released, rec.kind, &h.pod) {
        alloc.unbind(pod, ip).await?;
    }
    if released {
        println!("{ip}: released from {h}");
        Ok(0)
    } else {
        eprintln!("kube-ipam: {ip} changed hands while releasing; nothing was freed, look again");
        Ok(1)
    }
}

pub async fn check_store(conf: &NetConf) -> Result<i32> {
    let alloc = allocator(conf).await?;
    let checked = alloc.verify_store().await?;
    for p in &checked.problems {
        println!("{p}");
    }
    if checked.problems.is_empty() {
        println!("consistent: {} attachments", checked.attachments);
        Ok(0)
    } else {
        Ok(1)
    }
}
