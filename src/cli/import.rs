//! `import`: the allocations of the IPAM kube-ipam replaces become kube-ipam records.
//!
//! From the original plugin: its `used/<ip>` keys in the config's etcd, one attachment per
//! container id, interface unknown. From host-local: the files of one node's data directory,
//! one attachment per container id and interface. Its source is only read, never changed:
//! going back stays possible, and during a rolling upgrade old nodes keep using it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use kube_ipam_store::original::used_by;
use kube_ipam_store::{Holder, Keys, LeaseStore, OriginalKeys};

use super::exit;
use crate::cni::env::validate_container_id;
use crate::config::NetConf;
use crate::engine::{Allocator, Imported};
use crate::{stores, Error, Result};

/// host-local's default `dataDir`.
pub const HOST_LOCAL_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Source {
    /// The original kube-ipam plugin's `/etcd-cni/networks/<name>/used/` keys.
    Original,
    /// host-local's files under `<dir>/<network name>/`.
    HostLocal,
}

pub struct Options {
    pub from: Source,
    pub dir: PathBuf,
    pub dry_run: bool,
    pub take_outside: bool,
}

/// One attachment found in the source, with the addresses it holds.
type Found = BTreeMap<(String, String), Vec<IpAddr>>;

#[derive(Default)]
struct Counts {
    new: usize,
    already: usize,
    conflicts: usize,
    outside: usize,
    unreadable: usize,
}

pub async fn run(conf: &NetConf, o: &Options) -> Result<i32> {
    if o.from == Source::Original && conf.ipam.etcd.is_none() {
        return Err(Error::config(
            "ipam.etcdConfig",
            "(none)",
            "is required to import from the original plugin: its records are in etcd",
        ));
    }
    let mut counts = Counts::default();
    // Read before the store is opened: a missing directory leaves no trace.
    let host_local = match o.from {
        Source::HostLocal => Some(from_host_local(&o.dir.join(&conf.name), &mut counts)?),
        Source::Original => None,
    };
    let store = stores::open(conf).await?;
    let (found, node) = match host_local {
        // host-local's files belong to the node they are on.
        Some(found) => (found, crate::node_name()),
        None => (
            from_original(&*store, &conf.name, &mut counts).await?,
            String::new(),
        ),
    };
    let alloc = Allocator::new(
        store,
        Keys::new(&conf.ipam.key_prefix, &conf.name),
        &conf.ipam,
    );
    // Importing is a network's first use as much as an ADD is.
    alloc.settle_layout(!o.dry_run).await?;
    let would = if o.dry_run {
        "would import"
    } else {
        "imported"
    };
    for ((container_id, ifname), addrs) in &found {
        let holder = Holder {
            container_id: container_id.clone(),
            ifname: ifname.clone(),
            pod: None,
            node: node.clone(),
        };
        for (addr, outcome) in alloc
            .import(&holder, addrs, o.take_outside, o.dry_run)
            .await?
        {
            match outcome {
                Imported::New => {
                    counts.new += 1;
                    println!("{would} {addr} for {holder}");
                }
                Imported::AlreadyThere => counts.already += 1,
                Imported::Conflict(other) => {
                    counts.conflicts += 1;
                    println!("conflict: {addr} of {holder} is held by {other}; left as it is");
                }
                Imported::Outside => {
                    counts.outside += 1;
                    println!("outside every range: {addr} of {holder} (--take-outside records it)");
                }
            }
        }
    }
    println!(
        "{}{} {}, already there {}, conflicts {}, outside every range {}, unreadable {}",
        if o.dry_run { "dry run: " } else { "" },
        would,
        counts.new,
        counts.already,
        counts.conflicts,
        counts.outside,
        counts.unreadable
    );
    let clean = counts.conflicts + counts.outside + counts.unreadable == 0;
    Ok(if clean { exit::OK } else { exit::FOUND })
}

/// The original plugin's `used/` keys of the network, by container.
async fn from_original(
    store: &dyn LeaseStore,
    network: &str,
    counts: &mut Counts,
) -> Result<Found> {
    let keys = OriginalKeys::new(network);
    let (from, to) = keys.all_used();
    let mut found = Found::new();
    for e in store.range(&from, &to, 0).await? {
        let id = used_by(&e.value);
        match (keys.parse_used(&e.key), id) {
            (Some(ip), Some(id)) if validate_container_id(&id).is_ok() => {
                found.entry((id, String::new())).or_default().push(ip)
            }
            _ => {
                counts.unreadable += 1;
                println!(
                    "unreadable: {} = {:?}; not an address and a container id",
                    e.key,
                    String::from_utf8_lossy(&e.value)
                );
            }
        }
    }
    Ok(found)
}

/// host-local's files of one network: each named by the address, holding the container id
/// and, since CNI plugins 0.8, the interface name on a second line.
fn from_host_local(dir: &Path, counts: &mut Counts) -> Result<Found> {
    let io = |e: std::io::Error| Error::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let mut found = Found::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Its lock and its "where to look next" hints, not allocations.
        if name == "lock" || name.starts_with("last_reserved_ip") {
            continue;
        }
        let content = std::fs::read(&path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        match (name.parse::<IpAddr>(), host_local_holder(&content)) {
            (Ok(ip), Some(holder)) => found.entry(holder).or_default().push(ip),
            _ => {
                counts.unreadable += 1;
                println!(
                    "unreadable: {}; not an address file with a container id",
                    path.display()
                );
            }
        }
    }
    Ok(found)
}

/// Container id and interface name of a host-local file: `<id>\r\n<ifname>`, or `<id>` alone
/// from versions that did not record the interface.
fn host_local_holder(content: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(content).ok()?;
    let mut lines = text.split(['\r', '\n']).filter(|l| !l.trim().is_empty());
    let id = lines.next()?.trim().to_owned();
    validate_container_id(&id).ok()?;
    let ifname = match lines.next() {
        Some(l) => {
            let l = l.trim().to_owned();
            crate::cni::env::validate_ifname(&l).ok()?;
            l
        }
        None => String::new(),
    };
    Some((id, ifname))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_local_files_of_every_generation() {
        assert_eq!(
            host_local_holder(b"abc123\r\neth0"),
            Some(("abc123".into(), "eth0".into()))
        );
        assert_eq!(
            host_local_holder(b"abc123"),
            Some(("abc123".into(), String::new()))
        );
        assert_eq!(host_local_holder(b""), None);
        assert_eq!(host_local_holder(b"../etc\r\neth0"), None);
        assert_eq!(host_local_holder(b"abc\r\nbad/name"), None);
    }
}
