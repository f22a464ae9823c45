//! A rolling upgrade from the original plugin, in network namespaces: pods of nodes still on
//! the original (its etcd records written as it writes them, get-then-put under its lock;
//! the pods wired by Debian's `bridge` with `static` addresses), pods of upgraded nodes from
//! kube-ipam with `writeOriginalKeys`, and no address ever held twice.

mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_etcd::{EtcdOptions, EtcdStore};
use kube_ipam_store::{Compare, LeaseStore, Mutation};
use serde_json::{json, Value};
use support::netns::{cni_path, is_root, Attach, Link, Netns, REFERENCE_PLUGINS};
use support::{cli, Scratch};

const NET: &str = "upgrade-net";
/// The dynamic range: six addresses, so every pick matters.
const FIRST: u8 = 10;
const LAST: u8 = 15;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The original plugin's reservation: take its network lock, read its `used/` keys, put the
/// first free address of the range, let the lock go. It knows nothing of kube-ipam's records.
fn original_reserve(opts: &EtcdOptions, container: &str) -> Option<String> {
    rt().block_on(async {
        let store = EtcdStore::connect(opts.clone()).await.expect("connect");
        let root = format!("/etcd-cni/networks/{NET}");
        let lock = format!("{root}/lock");
        let locked = store
            .commit(
                &[Compare::Absent(lock.clone())],
                &[Mutation::Put(lock.clone(), b"node-old".to_vec())],
            )
            .await
            .expect("lock");
        assert!(locked, "the original's lock is held");
        let (from, to) = (format!("{root}/used/"), format!("{root}/used0"));
        let used: Vec<String> = store
            .range(&from, &to, 0)
            .await
            .expect("used")
            .into_iter()
            .map(|e| e.key.trim_start_matches(&from).to_owned())
            .collect();
        let free = (FIRST..=LAST)
            .map(|v| Ipv4Addr::new(10, 197, 0, v).to_string())
            .find(|ip| !used.contains(ip));
        let mut puts = vec![Mutation::Delete(lock)];
        if let Some(ip) = &free {
            puts.push(Mutation::Put(
                format!("{root}/used/{ip}"),
                container.as_bytes().to_vec(),
            ));
        }
        assert!(store.commit(&[], &puts).await.expect("put"));
        free
    })
}

/// The code of a failed call; the bridge plugin passes kube-ipam's error on without its
/// `cniVersion`.
fn refused(out: &support::Out) -> u64 {
    assert_ne!(out.code, 0, "call succeeded: {}", out.stdout);
    out.json()["code"].as_u64().unwrap_or_default()
}

struct Upgrade {
    tag: String,
    scratch: Scratch,
    etcd: EtcdServer,
    cni_path: PathBuf,
    _bridge: Link,
    /// Pod name → (namespace, container id, address).
    pods: BTreeMap<String, (Netns, String, String)>,
}

impl Upgrade {
    fn net(&self, ipam: Value) -> String {
        json!({"cniVersion": "1.0.0", "name": NET, "type": "bridge",
               "bridge": format!("{}br", self.tag), "ipam": ipam})
        .to_string()
    }

    fn kube_ipam(&self) -> String {
        self.net(json!({
            "type": "kube-ipam", "subnet": "10.197.0.0/24", "gateway": "10.197.0.1",
            "rangeStart": format!("10.197.0.{FIRST}"), "rangeEnd": format!("10.197.0.{LAST}"),
            "etcdConfig": {"etcdURL": self.etcd.endpoint()},
            "writeOriginalKeys": true,
            "logFile": self.scratch.log_file(),
        }))
    }

    fn attach<'a>(&'a self, container: &'a str, netns: &'a str) -> Attach<'a> {
        Attach {
            plugin: "bridge",
            id: container,
            netns,
            ifname: "eth0",
            path: &self.cni_path,
            extra: &[],
        }
    }

    /// A pod of a node still on the original plugin: `None` when it finds no free address.
    fn old_pod(&mut self, name: &str) -> Option<String> {
        let container = format!("{}{name}", self.tag);
        let ip = original_reserve(&self.etcd.options(), &container)?;
        let netns = Netns::new(format!("{}-{name}", self.tag));
        let conf = self.net(json!({"type": "static",
            "addresses": [{"address": format!("{ip}/24"), "gateway": "10.197.0.1"}]}));
        self.attach(&container, &netns.path())
            .call("ADD", &conf)
            .ok();
        self.pods
            .insert(name.into(), (netns, container, ip.clone()));
        self.no_address_twice();
        Some(ip)
    }

    /// A pod of an upgraded node; the CNI result, error or not.
    fn new_pod(&mut self, name: &str) -> support::Out {
        let container = format!("{}{name}", self.tag);
        let netns = Netns::new(format!("{}-{name}", self.tag));
        let out = self
            .attach(&container, &netns.path())
            .call("ADD", &self.kube_ipam());
        if out.code == 0 {
            let ip = out.ip();
            self.pods.insert(name.into(), (netns, container, ip));
        }
        self.no_address_twice();
        out
    }

    /// Deletes a pod through kube-ipam, as an upgraded node's kubelet does for any pod.
    fn delete(&mut self, name: &str) -> String {
        let (netns, container, ip) = self.pods.remove(name).expect("pod exists");
        self.attach(&container, &netns.path())
            .call("DEL", &self.kube_ipam())
            .quiet();
        ip
    }

    /// What the namespaces' interfaces really carry: no address on two pods.
    fn no_address_twice(&self) {
        let mut seen = BTreeMap::new();
        for (name, (netns, _, ip)) in &self.pods {
            let shown = netns.addresses("eth0");
            assert!(shown.contains(&format!("inet {ip}/24")), "{name}: {shown}");
            if let Some(other) = seen.insert(ip.clone(), name.clone()) {
                panic!("{ip} is on {other} and {name}");
            }
        }
    }
}

#[test]
fn rolling_upgrade_never_holds_an_address_twice() {
    assert!(is_root(), "this test creates namespaces: run as root");
    assert!(
        std::path::Path::new(REFERENCE_PLUGINS)
            .join("static")
            .exists(),
        "containernetworking-plugins missing"
    );
    let tag = format!("ru{}", std::process::id());
    let scratch = Scratch::new();
    let mut up = Upgrade {
        cni_path: cni_path(scratch.path()),
        _bridge: Link(format!("{tag}br")),
        etcd: EtcdServer::start().expect("etcd"),
        scratch,
        tag,
        pods: BTreeMap::new(),
    };

    // Before: three pods from the original plugin.
    for name in ["old0", "old1", "old2"] {
        up.old_pod(name).expect("the original has room");
    }
    // Upgraded nodes fill the rest of the range, recording it where the original looks.
    for name in ["new0", "new1", "new2"] {
        up.new_pod(name).ok();
    }
    assert_eq!(refused(&up.new_pod("new-too-many")), 101);
    // A node still on the original sees every address taken and gives none out.
    assert_eq!(up.old_pod("old3"), None);

    // One new pod goes: its address is free for both kinds of node; the old one takes it.
    let freed = up.delete("new1");
    assert_eq!(up.old_pod("old3").as_deref(), Some(freed.as_str()));
    assert_eq!(refused(&up.new_pod("new-too-many")), 101);

    // The last nodes upgrade: the original's records become kube-ipam's.
    let conf_path = up.scratch.path().join("net.conf");
    std::fs::write(&conf_path, up.kube_ipam()).expect("write conf");
    let (code, out, err) = cli(&[
        "import",
        "--conf",
        conf_path.to_str().unwrap(),
        "--from",
        "original",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("imported 4, already there 2, conflicts 0"),
        "{out}"
    );
    assert_eq!(support::check_store(&conf_path), 6);

    // Old pods are deleted later, through kube-ipam: each frees exactly its address.
    let (old0, _, _) = &up.pods["old0"];
    let (_, _, new0) = &up.pods["new0"];
    assert!(old0.ping(new0), "an old pod cannot reach a new one");
    let freed = up.delete("old1");
    let again = up.new_pod("new3").ip();
    assert_eq!(again, freed);
    assert_eq!(refused(&up.new_pod("new-too-many")), 101);
    for name in ["old0", "old2", "old3"] {
        up.delete(name);
    }
    assert_eq!(support::check_store(&conf_path), 3);
}
