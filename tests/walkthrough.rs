//! The user's walkthroughs on one machine: simulated nodes (each a macvlan master on one end of
//! a veth pair, the other ends joined by a fabric bridge), one shared store, the stand-in
//! Kubernetes API holding the pods, and pods as network namespaces wired by Debian's reference
//! plugins, which delegate IPAM to kube-ipam exactly as under kubelet.
//!
//! The store is etcd unless `KUBE_IPAM_WALKTHROUGH_STORE=embedded` (scripts/walkthrough.sh).

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kube_ipam::testing::KubeApi;
use kube_ipam_etcd::testing::EtcdServer;
use serde_json::{json, Value};
use support::netns::{cni_path, is_root, must, Attach, Link, Netns, REFERENCE_PLUGINS};
use support::{cli, Scratch};

const NS: &str = "shop";

/// A pod as the walkthrough made it.
struct Pod {
    name: String,
    node: usize,
    container: String,
    netns: Netns,
    /// (interface, address/prefix)
    addresses: Vec<(String, String)>,
    layered: bool,
    /// What the table says of the pod beside its addresses.
    note: String,
}

impl Pod {
    fn ip(&self, ifname: &str) -> String {
        self.addresses
            .iter()
            .find(|(i, _)| i == ifname)
            .map(|(_, a)| a.split('/').next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("{} has no {ifname}", self.name))
    }
}

struct Cluster {
    tag: String,
    scratch: Scratch,
    api: KubeApi,
    etcd: Option<EtcdServer>,
    cni_path: PathBuf,
    masters: Vec<String>,
    _links: Vec<Link>,
    serial: AtomicU32,
}

impl Cluster {
    fn new(tag: &str, nodes: usize) -> Cluster {
        assert!(is_root(), "the walkthroughs create namespaces: run as root");
        assert!(
            std::path::Path::new(REFERENCE_PLUGINS)
                .join("macvlan")
                .exists(),
            "containernetworking-plugins missing"
        );
        let embedded = std::env::var("KUBE_IPAM_WALKTHROUGH_STORE").as_deref() == Ok("embedded");
        let scratch = Scratch::new();
        let fabric = format!("{tag}fab");
        let mut links = vec![Link(fabric.clone()), Link(format!("{tag}br0"))];
        let _ = support::netns::sh(&["ip", "link", "del", &fabric]);
        must(&["ip", "link", "add", &fabric, "type", "bridge"]);
        must(&["ip", "link", "set", &fabric, "up"]);
        let mut masters = Vec::new();
        for i in 0..nodes {
            let (master, peer) = (format!("{tag}n{i}"), format!("{tag}p{i}"));
            let _ = support::netns::sh(&["ip", "link", "del", &master]);
            must(&[
                "ip", "link", "add", &master, "type", "veth", "peer", "name", &peer,
            ]);
            links.push(Link(master.clone()));
            must(&["ip", "link", "set", &peer, "master", &fabric]);
            must(&["ip", "link", "set", &peer, "up"]);
            must(&["ip", "link", "set", &master, "up"]);
            masters.push(master);
        }
        Cluster {
            tag: tag.to_owned(),
            cni_path: cni_path(scratch.path()),
            api: KubeApi::start().expect("stand-in API"),
            etcd: (!embedded).then(|| EtcdServer::start().expect("etcd")),
            scratch,
            masters,
            _links: links,
            serial: AtomicU32::new(0),
        }
    }

    /// The database network: macvlan on the node's master, kube-ipam for addresses.
    fn db_net(&self, node: usize) -> String {
        let mut ipam = json!({
            "type": "kube-ipam",
            "subnet": "10.188.0.0/16",
            "fixedStart": "10.188.0.10", "fixedEnd": "10.188.0.255",
            "rangeStart": "10.188.1.0", "rangeEnd": "10.188.1.254",
            "gateway": "10.188.0.1",
            "kubeConfig": self.api.kubeconfig(),
            "logFile": self.scratch.log_file(),
        });
        match &self.etcd {
            Some(e) => ipam["etcdConfig"] = json!({"etcdURL": e.endpoint()}),
            None => ipam["dataDir"] = json!(self.scratch.data_dir()),
        }
        json!({"cniVersion": "1.0.0", "name": "db-net", "type": "macvlan",
               "master": self.masters[node], "mode": "bridge", "ipam": ipam})
        .to_string()
    }

    /// The ordinary pod network: one bridge, host-local addresses.
    fn pod_net(&self) -> String {
        json!({"cniVersion": "1.0.0", "name": "pod-net", "type": "bridge",
               "bridge": format!("{}br0", self.tag),
               "ipam": {"type": "host-local", "subnet": "10.250.0.0/16",
                        "dataDir": self.scratch.path().join("host-local")}})
        .to_string()
    }

    fn args(&self, pod: &str, uid: &str, container: &str) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={NS};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID={uid}"
        )
    }

    /// Creates a pod on `node`: `eth0` on the pod network when `layered`, and the database
    /// network as `net1` (layered) or as its only interface `eth0`.
    fn create(&self, name: &str, node: usize, annotations: &[(&str, &str)], layered: bool) -> Pod {
        self.create_owned(name, node, None, annotations, layered)
    }

    /// [`Cluster::create`] for a pod that a workload controls: `(kind, name)` of its
    /// controller, as the StatefulSet or ReplicaSet writes it on the pod.
    fn create_owned(
        &self,
        name: &str,
        node: usize,
        owner: Option<(&str, &str)>,
        annotations: &[(&str, &str)],
        layered: bool,
    ) -> Pod {
        let mut new = self
            .api
            .pod(NS, name)
            .on(&format!("node-{node}"))
            .annotations(annotations);
        if let Some((kind, owner)) = owner {
            new = new.controlled_by(kind, owner);
        }
        let uid = new.create();
        let n = self.serial.fetch_add(1, Ordering::SeqCst);
        let container = format!("{}{name}{n:04}", self.tag);
        let netns = Netns::new(format!("{}-{name}", self.tag));
        let mut addresses = Vec::new();
        let args = self.args(name, &uid, &container);
        let node_name = format!("node-{node}");
        let extra = [("CNI_ARGS", args.as_str()), ("KUBE_IPAM_NODE", &node_name)];
        let path = netns.path();
        let mut attach = |plugin: &'static str, ifname: &'static str, conf: String| {
            let a = Attach {
                plugin,
                id: &container,
                netns: &path,
                ifname,
                path: &self.cni_path,
                extra: &extra,
            };
            let r: Value = a.call("ADD", &conf).ok();
            let cidr = r["ips"][0]["address"].as_str().expect("address").to_owned();
            assert!(
                netns.addresses(ifname).contains(&format!("inet {cidr}")),
                "{name}: {ifname} lacks {cidr}"
            );
            addresses.push((ifname.to_owned(), cidr));
        };
        if layered {
            attach("bridge", "eth0", self.pod_net());
            attach("macvlan", "net1", self.db_net(node));
        } else {
            attach("macvlan", "eth0", self.db_net(node));
        }
        Pod {
            name: name.to_owned(),
            node,
            container,
            netns,
            addresses,
            layered,
            note: String::new(),
        }
    }

    /// Deletes a pod as kubelet does: DEL through each main plugin, then the pod object.
    fn delete(&self, pod: Pod) {
        let path = pod.netns.path();
        let none: [(&str, &str); 0] = [];
        let mut calls = vec![("macvlan", if pod.layered { "net1" } else { "eth0" })];
        if pod.layered {
            calls.push(("bridge", "eth0"));
        }
        for (plugin, ifname) in calls {
            let conf = if plugin == "bridge" {
                self.pod_net()
            } else {
                self.db_net(pod.node)
            };
            let a = Attach {
                plugin,
                id: &pod.container,
                netns: &path,
                ifname,
                path: &self.cni_path,
                extra: &none,
            };
            let out = a.call("DEL", &conf);
            assert_eq!(out.code, 0, "DEL {}: {}", pod.name, out.stdout);
        }
        self.api.remove_pod(NS, &pod.name);
    }

    /// Addresses held in the kube-ipam store, through the operator CLI.
    fn held(&self) -> Vec<Value> {
        support::pods::listed(&self.scratch, &self.db_net(0))
    }

    fn table(&self, title: &str, pods: &[&Pod]) {
        let store = if self.etcd.is_some() {
            "etcd"
        } else {
            "embedded store"
        };
        println!("\n{title} ({store})");
        println!(
            "{:<26} {:<8} {:<6} {:<18} NOTE",
            "POD", "NODE", "IFACE", "ADDRESS"
        );
        for p in pods {
            for (ifname, addr) in &p.addresses {
                println!(
                    "{:<26} {:<8} {:<6} {addr:<18} {}",
                    p.name,
                    format!("node-{}", p.node),
                    ifname,
                    p.note
                );
            }
        }
    }

    /// Why kube-ipam took an address over, as its log says.
    fn takeover_reason(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.scratch.log_file()).ok()?;
        let line = log.lines().find(|l| l.contains("took the address over"))?;
        let (_, reason) = line.split_once("reason=")?;
        Some(reason.trim_matches('"').to_owned())
    }

    /// `kube-ipam gc --once` against the stand-in API's pod list: what pods that are gone
    /// for good left behind (a scaled-down StatefulSet's parked addresses) goes.
    fn gc(&self) {
        let path = self.scratch.path().join("db-net.conf");
        std::fs::write(&path, self.db_net(0)).expect("write conf");
        let (code, out, err) = cli(&[
            "gc",
            "--conf",
            &path.display().to_string(),
            "--once",
            "--grace",
            "0s",
        ]);
        assert_eq!(code, 0, "gc: {out}{err}");
        for line in out.lines().filter(|l| l.starts_with("released")) {
            println!("{line}");
        }
    }
}

fn fixed(ip: &str) -> Vec<(&str, &str)> {
    vec![
        ("kube-ipam.ip", ip),
        ("kube-ipam.netmask", "255.255.0.0"),
        ("kube-ipam.gateway", "10.188.0.1"),
    ]
}

#[test]
fn fixed_ip_survives_rescheduling() {
    let c = Cluster::new("kwf", 3);
    let client = c.create("client", 2, &[], false);
    let a = c.create("mysql-a", 0, &fixed("10.188.0.216"), false);
    assert_eq!(a.addresses[0].1, "10.188.0.216/16");
    assert!(client.netns.ping("10.188.0.216"));
    c.table("fixed IP, first life", &[&a, &client]);
    c.delete(a);
    assert!(
        !client.netns.ping("10.188.0.216"),
        "deleted pod still answers"
    );
    // Recreated by its Deployment under a new name, on another node.
    let b = c.create("mysql-b", 1, &fixed("10.188.0.216"), false);
    assert_eq!(b.addresses[0].1, "10.188.0.216/16");
    assert!(
        client.netns.ping("10.188.0.216"),
        "rescheduled pod unreachable"
    );
    c.table("fixed IP, rescheduled", &[&b, &client]);
    c.delete(b);
    c.delete(client);
    assert!(c.held().is_empty());
}

#[test]
fn statefulset_pool() {
    let c = Cluster::new("kwp", 3);
    let client = c.create("client", 2, &[], false);
    // The StatefulSet's pod template carries one pool for all its replicas.
    let pool = [
        ("kube-ipam.ip-pool", "10.188.0.220-10.188.0.221"),
        ("kube-ipam.netmask", "255.255.0.0"),
        ("kube-ipam.gateway", "10.188.0.1"),
    ];
    let mysql = Some(("StatefulSet", "mysql"));
    let mut m0 = c.create_owned("mysql-0", 0, mysql, &pool, false);
    let mut m1 = c.create_owned("mysql-1", 1, mysql, &pool, false);
    assert_eq!(m0.ip("eth0"), "10.188.0.220");
    assert_eq!(m1.ip("eth0"), "10.188.0.221");
    for m in [&m0, &m1] {
        assert!(client.netns.ping(&m.ip("eth0")), "{} unreachable", m.name);
    }
    m0.note = "pool address of ordinal 0".into();
    m1.note = "pool address of ordinal 1".into();
    c.table(
        "StatefulSet mysql, two replicas, one pool",
        &[&m0, &m1, &client],
    );

    // mysql-1 is deleted; its address waits for it, and it comes back on another node.
    c.delete(m1);
    let parked: Vec<Value> = c
        .held()
        .into_iter()
        .filter(|r| r["parked"] == true)
        .collect();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0]["address"], "10.188.0.221");
    println!(
        "mysql-1 deleted: 10.188.0.221 parked for {}",
        parked[0]["pod"]
    );
    let mut m1 = c.create_owned("mysql-1", 2, mysql, &pool, false);
    assert_eq!(m1.ip("eth0"), "10.188.0.221");
    assert!(
        client.netns.ping("10.188.0.221"),
        "recreated mysql-1 unreachable"
    );
    m1.note = "recreated on node-2, kept its address".into();
    c.table("StatefulSet mysql, mysql-1 recreated", &[&m0, &m1, &client]);

    // Scaled down to nothing: the pods go, then gc frees what was kept for them.
    for p in [m0, m1, client] {
        c.delete(p);
    }
    c.gc();
    assert!(c.held().is_empty(), "{:?}", c.held());
}

#[test]
fn fixed_ip_leaves_a_lost_node() {
    let c = Cluster::new("kwn", 3);
    for n in 0..3 {
        c.api.add_node(&format!("node-{n}"));
    }
    let client = c.create("client", 0, &[], false);
    let deployment = Some(("ReplicaSet", "fixed-ip-test-6d4c9"));
    let mut old = c.create_owned(
        "fixed-ip-test-6d4c9-aaaaa",
        1,
        deployment,
        &fixed("10.188.0.216"),
        false,
    );
    assert_eq!(old.ip("eth0"), "10.188.0.216");
    assert!(client.netns.ping("10.188.0.216"));
    c.table("fixed-ip-test on node-1", &[&old, &client]);

    // node-1 dies: its link goes dark, the node controller marks it not Ready, and after
    // five minutes its pods are deleted, which nobody on node-1 will ever confirm.
    must(&["ip", "link", "set", &c.masters[1], "down"]);
    assert!(c
        .api
        .set_node_ready("node-1", "Unknown", Duration::from_secs(360)));
    assert!(c
        .api
        .mark_for_deletion(NS, &old.name, 30, Duration::from_secs(60)));
    assert!(
        !client.netns.ping("10.188.0.216"),
        "the lost node still answers"
    );
    // The Deployment's replacement, on node-2, gets the address at once.
    let mut new = c.create_owned(
        "fixed-ip-test-6d4c9-bbbbb",
        2,
        deployment,
        &fixed("10.188.0.216"),
        false,
    );
    assert_eq!(new.ip("eth0"), "10.188.0.216");
    assert!(client.netns.ping("10.188.0.216"), "replacement unreachable");
    let why = c.takeover_reason().expect("the takeover is logged");
    assert!(
        why.contains("node-1") && why.contains("Ready=Unknown"),
        "{why}"
    );
    old.note = "node-1 lost; terminating".into();
    new.note = format!("took 10.188.0.216 over: {why}");
    c.table("fixed-ip-test, node-1 lost", &[&old, &new, &client]);
    c.delete(new);
    c.delete(client);
    assert!(c.held().is_empty(), "{:?}", c.held());
}

#[test]
fn layered_network() {
    let c = Cluster::new("kwl", 3);
    let db1 = c.create("database-1", 0, &fixed("10.188.0.218"), true);
    let db2 = c.create("database-2", 1, &fixed("10.188.0.219"), true);
    let web1 = c.create("web-1", 1, &[], true);
    let web2 = c.create("web-2", 2, &[], true);
    assert_eq!(db1.ip("net1"), "10.188.0.218");
    assert_eq!(db2.ip("net1"), "10.188.0.219");
    for web in [&web1, &web2] {
        assert!(
            web.ip("net1").starts_with("10.188.1."),
            "{}",
            web.ip("net1")
        );
        assert!(web.ip("eth0").starts_with("10.250."), "{}", web.ip("eth0"));
    }
    c.table("layered network", &[&db1, &db2, &web1, &web2]);
    let reach = |from: &Pod, to: &str| {
        assert!(from.netns.ping(to), "{} cannot reach {to}", from.name);
        println!("ping {:<12} -> {to}: ok", from.name);
    };
    for web in [&web1, &web2] {
        reach(web, "10.188.0.218");
        reach(web, "10.188.0.219");
    }
    reach(&db1, "10.188.0.219");
    reach(&db2, "10.188.0.218");

    // database-2 is deleted and recreated (new uid, other node): same address, reachable.
    c.delete(db2);
    let db2 = c.create("database-2", 2, &fixed("10.188.0.219"), true);
    assert_eq!(db2.ip("net1"), "10.188.0.219");
    for web in [&web1, &web2] {
        reach(web, "10.188.0.219");
    }
    reach(&db1, "10.188.0.219");
    c.table(
        "layered network, database-2 recreated",
        &[&db1, &db2, &web1, &web2],
    );
    for p in [db1, db2, web1, web2] {
        c.delete(p);
    }
    assert!(c.held().is_empty());
}

#[test]
fn storm_of_100_pods() {
    let c = Cluster::new("kws", 3);
    let pods: Vec<Pod> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let c = &c;
                s.spawn(move || c.create(&format!("p{i:03}"), i % 3, &[], false))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("pod creation"))
            .collect()
    });
    let mut ips: Vec<String> = pods.iter().map(|p| p.ip("eth0")).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 100, "duplicate addresses");
    assert_eq!(c.held().len(), 100);
    // Every pod answers on the macvlan network, from a pod on each node.
    for from in &pods[..3] {
        for to in pods.iter().filter(|p| p.name != from.name) {
            assert!(
                from.netns.ping(&to.ip("eth0")),
                "{} (node-{}) cannot reach {}",
                from.name,
                from.node,
                to.name
            );
        }
    }
    std::thread::scope(|s| {
        for p in pods {
            let c = &c;
            s.spawn(move || c.delete(p));
        }
    });
    assert!(
        c.held().is_empty(),
        "the store is not empty after deleting every pod"
    );
}
