//! `ls`, `usage`, `show` and `release`: the store as operators need to see it.

use std::io::{BufWriter, Write};
use std::net::IpAddr;

use kube_ipam_store::records::decode;
use kube_ipam_store::{Compare, IpRecord, Keys, Kind, LeaseStore, Mutation};
use serde_json::{json, Value};

use super::{exit, Output};
use crate::config::NetConf;
use crate::engine::scan::{after, Restarts, Scan};
use crate::engine::{unix_now, Allocator, Release};
use crate::{stores, Error, Result};

pub struct Filter {
    pub pod: Option<String>,
    pub node: Option<String>,
    pub range: Option<String>,
}

async fn allocator(conf: &NetConf) -> Result<Allocator<Box<dyn LeaseStore>>> {
    let store = stores::open_existing(conf).await?;
    let alloc = Allocator::new(
        store,
        Keys::new(&conf.ipam.key_prefix, &conf.name),
        &conf.ipam,
    );
    settled(conf, alloc).await
}

/// An allocator of a network that exists in its store, whose records are all in the store's
/// shared address space: a mistyped network name is an error naming it, not "nothing held".
pub(super) async fn settled<S: LeaseStore>(
    conf: &NetConf,
    alloc: Allocator<S>,
) -> Result<Allocator<S>> {
    // On etcd a network was never checked for: a collector may well start before the first
    // ADD. The embedded store's own directory used to say whether the network existed.
    if conf.ipam.etcd.is_none() && !alloc.known().await? {
        return Err(Error::Io {
            path: match &conf.ipam.etcd {
                Some(e) => e.endpoints.join(","),
                None => stores::embedded_path(conf).display().to_string(),
            },
            reason: format!(
                "no network {:?} in this store (prefix {}): check the config's name, dataDir \
                 and keyPrefix (a network appears with its first ADD)",
                conf.name, conf.ipam.key_prefix
            ),
        });
    }
    alloc.settle_layout(false).await?;
    Ok(alloc)
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

/// Prints `note`s of a command that started over, on stderr: they say the output is
/// still of one state of the store (or, for `ls`, of which two).
pub(super) fn say_restarts(notes: &[String]) {
    for n in notes {
        eprintln!("kube-ipam: {n}");
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
/// whatever the size of the store, all from one snapshot.
///
/// What is printed cannot be taken back: if the store drops the snapshot midway (etcd
/// compacted its revision), the listing goes on from the next address on a new snapshot,
/// and says so on stderr. Each row is one record, always whole.
async fn print_records<S: LeaseStore>(
    alloc: &Allocator<S>,
    f: &Filter,
    output: Output,
    out: &mut impl Write,
) -> std::result::Result<(), Printed> {
    let keys = alloc.keys();
    let (mut from, to) = keys.ips();
    let mut restarts = Restarts::default();
    let mut first = true;
    match output {
        Output::Json => write!(out, "[")?,
        Output::Table => writeln!(
            out,
            "{:<40} {:<8} {:<30} {:<20} {:<8} {:<16} AGE",
            "ADDRESS", "KIND", "POD", "CONTAINER", "IFNAME", "NODE"
        )?,
    }
    'snapshots: loop {
        let snap = alloc.store().snapshot().await.map_err(Error::from)?;
        let mut scan = Scan::new(&*snap, (from.clone(), to.clone()));
        loop {
            let page = match scan.next_page().await {
                Ok(Some(page)) => page,
                Ok(None) => break 'snapshots,
                Err(e) => {
                    restarts.again("the listing", e)?;
                    let printed = match keys.parse_ip(&from) {
                        Some(ip) if !first => format!("; rows after {ip} come from it"),
                        _ => String::new(),
                    };
                    if let Some(note) = restarts.notes.last() {
                        // Whatever went out so far stays out.
                        out.flush()?;
                        eprintln!("kube-ipam: {note}{printed}");
                    }
                    continue 'snapshots;
                }
            };
            if let Some(last) = page.last() {
                from = after(&last.key);
            }
            print_page(keys, page, f, output, &mut first, out)?;
        }
    }
    if let Output::Json = output {
        writeln!(out, "]")?;
    }
    out.flush()?;
    Ok(())
}

fn print_page(
    keys: &Keys,
    page: Vec<kube_ipam_store::Entry>,
    f: &Filter,
    output: Output,
    first: &mut bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
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
                        if !*first {
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
                *first = false;
                continue;
            }
        };
        // The store's address space holds every network's records.
        let wanted = r.network == keys.network()
            && f.pod.as_ref().is_none_or(|p| &pod_of(&r) == p)
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
                if !*first {
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
        *first = false;
    }
    Ok(())
}

pub async fn usage(conf: &NetConf, output: Output) -> Result<i32> {
    let alloc = allocator(conf).await?;
    // The same figures the collector serves at /metrics, so scripts and dashboards agree.
    let mut restarts = Restarts::default();
    let fig = crate::metrics::figures::read(&alloc, &mut restarts).await?;
    say_restarts(&restarts.notes);
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
        return Ok(exit::FAILED);
    }
    let key = alloc.keys().ip(ip);
    match alloc.store().get(&key).await? {
        None => println!("{ip}: free"),
        Some(e) => match decode::<IpRecord>(&key, &e.value) {
            Ok(r) if !alloc.mine(&r) => println!(
                "{ip}: held by {} in network {} since {} ago",
                r.holder,
                r.network,
                age(r.created)
            ),
            Ok(r) => println!(
                "{ip}: {} address held by {} since {} ago (range {})",
                r.kind,
                r.holder,
                age(r.created),
                r.range
            ),
            Err(err) => {
                println!("{ip}: unreadable record ({err}); `kube-ipam release {ip}` removes it");
                return Ok(exit::FOUND);
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
            return Ok(exit::FOUND);
        }
    };
    if !alloc.mine(&rec) {
        eprintln!(
            "kube-ipam: {ip} is held by {} in network {}, not {}: release it with that \
             network's config",
            rec.holder, rec.network, conf.name
        );
        return Ok(exit::FAILED);
    }
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
        Ok(exit::FOUND)
    }
}

/// Exit 0 when consistent, 1 with the problems on stdout; an error (exit 2) when the
/// store could not be checked.
pub async fn check_store(conf: &NetConf) -> Result<i32> {
    let alloc = allocator(conf).await?;
    let checked = alloc.verify_store().await?;
    say_restarts(&checked.restarts);
    let code = if checked.problems.is_empty() {
        exit::OK
    } else {
        exit::FOUND
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let printed = checked
        .problems
        .iter()
        .try_for_each(|p| writeln!(out, "{p}"))
        .and_then(|()| {
            if code == exit::OK {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use kube_ipam_store::records::encode;
    use kube_ipam_store::{Holder, MemoryStore};

    use super::*;
    use crate::engine::lost_snapshots::LosesSnapshots;
    use crate::engine::scan::PAGE;
    use crate::engine::tests::{ipam, range, rt};

    #[test]
    fn a_listing_whose_snapshot_is_lost_goes_on_from_where_it_was() {
        let conf = ipam(vec![vec![range(
            "10.0.0.0/8",
            "10.0.0.1",
            "10.255.255.254",
            None,
            None,
        )]]);
        let store = LosesSnapshots::new(MemoryStore::new(), 0);
        let a = Allocator::new(store, Keys::new("/k", "n"), &conf);
        let n = PAGE + 5;
        let all = |f: Filter| {
            let mut out = Vec::new();
            let printed = rt().block_on(print_records(&a, &f, Output::Json, &mut out));
            assert!(printed.is_ok());
            let rows: Vec<Value> = serde_json::from_slice(&out).expect("one JSON array");
            rows.iter()
                .map(|r| r["address"].as_str().unwrap().parse::<IpAddr>().unwrap())
                .collect::<Vec<_>>()
        };
        rt().block_on(async {
            let mut batch = Vec::new();
            for i in 0..n as u32 {
                let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0001 + i));
                let rec = IpRecord {
                    network: "n".into(),
                    holder: Holder {
                        container_id: format!("c{i}"),
                        ifname: "eth0".into(),
                        pod: None,
                        node: "n".into(),
                    },
                    kind: Kind::Dynamic,
                    range: "r".into(),
                    created: 0,
                };
                batch.push(Mutation::Put(a.keys().ip(ip), encode(&rec)));
            }
            assert!(a.store().commit(&[], &batch).await.unwrap());
        });
        let none = || Filter {
            pod: None,
            node: None,
            range: None,
        };
        let kept = all(none());
        // Lost after the first page: the second comes from a new snapshot.
        a.store().lost.store(1, Ordering::SeqCst);
        let resumed = all(none());
        assert_eq!(a.store().lost.load(Ordering::SeqCst), 0, "never lost");
        assert_eq!(resumed.len(), n);
        assert_eq!(resumed, kept, "an address listed twice, or missed");
        assert!(resumed.windows(2).all(|w| w[0] < w[1]));
    }
}
