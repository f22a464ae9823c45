//! `ls`, `usage`, `show` and `release`: the store as operators need to see it.

use std::io::{BufWriter, Write};
use std::net::IpAddr;

use kube_ipam_store::records::decode;
use kube_ipam_store::{Compare, IpRecord, Keys, Kind, LeaseStore, Mutation};
use serde_json::{json, Value};

use super::Output;
use crate::config::NetConf;
use crate::engine::scan::Scan;
use crate::engine::{unix_now, Allocator, Release};
use crate::{stores, Error, Result};

pub struct Filter {
    pub pod: Option<String>,
    pub node: Option<String>,
    pub range: Option<String>,
}

async fn allocator(conf: &NetConf) -> Result<Allocator<Box<dyn LeaseStore>>> {
    let store = stores::open_existing(conf).await?;
    Ok(Allocator::new(
        store,
        Keys::new(&conf.ipam.key_prefix, &conf.name),
        &conf.ipam,
    ))
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
    let mut out = BufWriter::new(std::io::stdout().lock());
    match print_records(&alloc, f, output, &mut out).await {
        Ok(()) => Ok(0),
        // `kube-ipam ls | head`: the reader has what it wanted.
        Err(Printed::Closed) => Ok(0),
        Err(Printed::Io(e)) => Err(Error::Io {
            path: "standard output".into(),
            reason: e.to_string(),
        }),
        Err(Printed::Failed(e)) => Err(e),
    }
}

/// Why printing stopped early.
enum Printed {
    /// Whoever read our output has gone.
    Closed,
    Io(std::io::Error),
    Failed(Error),
}

impl From<std::io::Error> for Printed {
    fn from(e: std::io::Error) -> Printed {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Printed::Closed
        } else {
            Printed::Io(e)
        }
    }
}

impl From<Error> for Printed {
    fn from(e: Error) -> Printed {
        Printed::Failed(e)
    }
}

/// Streams the address records matching `f`, a page at a time, so memory stays flat
/// whatever the size of the store.
async fn print_records<S: LeaseStore>(
    alloc: &Allocator<S>,
    f: &Filter,
    output: Output,
    out: &mut impl Write,
) -> std::result::Result<(), Printed> {
    let keys = alloc.keys();
    let mut scan = Scan::new(alloc.store(), keys.ips());
    let mut first = true;
    match output {
        Output::Json => write!(out, "[")?,
        Output::Table => writeln!(
            out,
            "{:<40} {:<8} {:<30} {:<20} {:<8} {:<16} AGE",
            "ADDRESS", "KIND", "POD", "CONTAINER", "IFNAME", "NODE"
        )?,
    }
    while let Some(page) = scan.next_page().await? {
        for e in page {
            let Some(ip) = keys.parse_ip(&e.key) else {
                continue;
            };
            let r: IpRecord = match decode(&e.key, &e.value) {
                Ok(r) => r,
                // One bad record must not hide the others; `release` removes it.
                Err(err) => {
                    if f.pod.is_some() || f.node.is_some() || f.range.is_some() {
                        continue;
                    }
                    match output {
                        Output::Json => {
                            if !first {
                                write!(out, ",")?;
                            }
                            let item =
                                json!({"address": ip.to_string(), "unreadable": err.to_string()});
                            write!(out, "{item}")?;
                        }
                        Output::Table => {
                            writeln!(out, "{:<40} UNREADABLE {err}", ip.to_string())?;
                        }
                    }
                    first = false;
                    continue;
                }
            };
            let wanted = f.pod.as_ref().is_none_or(|p| &pod_of(&r) == p)
                && f.node.as_ref().is_none_or(|n| &r.holder.node == n)
                && f.range
                    .as_ref()
                    .is_none_or(|s| r.range.split(' ').next() == Some(s.as_str()));
            if !wanted {
                continue;
            }
            match output {
                Output::Json => {
                    let item = json!({
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
                    });
                    if !first {
                        write!(out, ",")?;
                    }
                    write!(out, "{item}")?;
                }
                Output::Table => {
                    let short: String = if r.holder.is_binding() {
                        "(parked)".into()
                    } else {
                        r.holder.container_id.chars().take(20).collect()
                    };
                    writeln!(
                        out,
                        "{:<40} {:<8} {:<30} {:<20} {:<8} {:<16} {}",
                        ip.to_string(),
                        r.kind.to_string(),
                        pod_of(&r),
                        short,
                        r.holder.ifname,
                        r.holder.node,
                        age(r.created)
                    )?;
                }
            }
            first = false;
        }
    }
    if let Output::Json = output {
        writeln!(out, "]")?;
    }
    out.flush()?;
    Ok(())
}

pub async fn usage(conf: &NetConf, output: Output) -> Result<i32> {
    let alloc = allocator(conf).await?;
    // The same figures the collector serves at /metrics, so scripts and dashboards agree.
    let fig = crate::metrics::figures::read(&alloc).await?;
    match output {
        Output::Json => {
            let items: Vec<Value> = fig.ranges.iter().map(|r| r.to_json()).collect();
            println!("{}", Value::Array(items));
        }
        Output::Table => {
            println!(
                "{:<50} {:>12} {:>12} {:>12} {:>8} {:>7}",
                "RANGE", "SIZE", "USED", "FREE", "FIXED", "USE%"
            );
            for r in &fig.ranges {
                let (id, size, used) = (&r.id, r.size, r.used());
                let pct = percent(used, size);
                let filled = (pct / 5.0).round() as usize;
                println!(
                    "{:<50} {:>12} {:>12} {:>12} {:>8} {:>6.1}% [{}{}]",
                    id,
                    size,
                    used,
                    size - used,
                    r.fixed,
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
    if !alloc.pools().any(|p| p.range.subnet.contains(&ip)) {
        let subnets: Vec<String> = alloc.pools().map(|p| p.range.subnet.to_string()).collect();
        eprintln!(
            "kube-ipam: {ip} is in no subnet of network {} ({})",
            conf.name,
            subnets.join(", ")
        );
        return Ok(1);
    }
    let key = alloc.keys().ip(ip);
    match alloc.store().get(&key).await? {
        None => println!("{ip}: free"),
        Some(e) => match decode::<IpRecord>(&key, &e.value) {
            Ok(r) => println!(
                "{ip}: {} address held by {} since {} ago (range {})",
                r.kind,
                r.holder,
                age(r.created),
                r.range
            ),
            Err(err) => {
                println!("{ip}: unreadable record ({err}); `kube-ipam release {ip}` removes it");
                return Ok(1);
            }
        },
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
    let rec: IpRecord = match decode(&key, &e.value) {
        Ok(r) => r,
        // Nobody can be named as its holder: remove the record itself, as it was read.
        Err(err) => {
            let removed = alloc
                .commit(
                    &[Compare::Revision(key.clone(), e.revision)],
                    &[Mutation::Delete(key)],
                )
                .await?;
            if removed {
                println!("{ip}: removed its unreadable record ({err})");
                return Ok(0);
            }
            eprintln!("kube-ipam: the record of {ip} changed meanwhile; nothing was removed");
            return Ok(1);
        }
    };
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
        // Parked for its pod: the binding lets go of it too.
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
    // An operator freeing a kept address means it: the pod does not get it back either.
    if let (true, Kind::Sticky | Kind::Pool, Some(pod)) = (released, rec.kind, &h.pod) {
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
    let code = if checked.problems.is_empty() { 0 } else { 1 };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let printed = checked
        .problems
        .iter()
        .try_for_each(|p| writeln!(out, "{p}"))
        .and_then(|()| {
            if code == 0 {
                writeln!(out, "consistent: {} attachments", checked.attachments)?;
            }
            out.flush()
        });
    match printed {
        // `kube-ipam check-store | head`: the verdict is still the exit code.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Io {
            path: "standard output".into(),
            reason: e.to_string(),
        }),
        _ => Ok(code),
    }
}
