//! The macvlan delegate of the layered web/database network's `10-multus.conf`, as Multus
//! hands it to libcni: a single-plugin config with no `cniVersion`, which libcni passes on as
//! `"cniVersion": ""`. Debian's macvlan delegates IPAM to kube-ipam for two real network
//! namespaces on one master: ADD, ping, CHECK-free teardown with DEL, and the CLI reads the
//! Multus file itself.

mod support;

use std::path::Path;

use kube_ipam_etcd::testing::EtcdServer;
use serde_json::{json, Value};
use support::netns::{cni_path, is_root, must, Attach, Link, Netns, REFERENCE_PLUGINS};
use support::{cli, Scratch};

/// The delegate as the seed file writes it, with the endpoints of this machine's etcd.
fn delegate(master: &str, etcd: &str, s: &Scratch) -> Value {
    json!({
        "name": "k8snet2",
        "type": "macvlan",
        "master": master,
        "mode": "bridge",
        "ipam": {
            "name": "kube-subnet",
            "type": "kube-ipam",
            "etcdConfig": {"etcdURL": etcd},
            "subnet": "10.188.0.0/16",
            "rangeStart": "10.188.0.10",
            "rangeEnd": "10.188.0.200",
            "gateway": "10.188.0.1",
            "routes": [{"dst": "0.0.0.0/0"}],
            "resolvConf": "/etc/resolv.conf",
            "logFile": s.log_file(),
        }
    })
}

#[test]
fn multus_delegate_without_a_version_through_macvlan() {
    assert!(
        is_root(),
        "this test creates network namespaces: run as root"
    );
    assert!(
        Path::new(REFERENCE_PLUGINS).join("macvlan").exists(),
        "containernetworking-plugins missing"
    );
    let etcd = EtcdServer::start().expect("etcd");
    let s = Scratch::new();
    let path = cni_path(s.path());
    let tag = std::process::id() % 100_000;
    // A macvlan master: one end of a veth pair (this kernel has no dummy links).
    let master = format!("kmv{tag}a");
    let _veth = Link(master.clone());
    must(&[
        "ip",
        "link",
        "add",
        &master,
        "type",
        "veth",
        "peer",
        "name",
        &format!("kmv{tag}b"),
    ]);
    must(&["ip", "link", "set", &master, "up"]);
    must(&["ip", "link", "set", &format!("kmv{tag}b"), "up"]);

    let mut conf = delegate(&master, &etcd.endpoint(), &s);
    // What libcni writes into a single-plugin config that has no version.
    conf["cniVersion"] = json!("");
    let conf = conf.to_string();

    let pods: Vec<(Netns, String)> = ["web", "db"]
        .iter()
        .map(|n| {
            (
                Netns::new(format!("kmv-{n}-{tag}")),
                format!("multus-{n}-{tag}"),
            )
        })
        .collect();
    let mut ips = Vec::new();
    // As Multus calls a delegate for a pod: net1, with kubelet's CNI_ARGS.
    let macvlan = |verb: &str, ns: &Netns, id: &str| {
        let netns = ns.path();
        Attach {
            plugin: "macvlan",
            id,
            netns: &netns,
            ifname: "net1",
            path: &path,
            extra: &[(
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
            )],
        }
        .call(verb, &conf)
    };
    for (ns, id) in &pods {
        let r = macvlan("ADD", ns, id).ok();
        assert_eq!(r["cniVersion"], "0.1.0", "{r}");
        let ip = r["ip4"]["ip"].as_str().expect("ip4.ip").to_owned();
        assert!(ip.ends_with("/16"), "{ip}");
        assert!(
            ns.addresses("net1").contains(&ip),
            "{}",
            ns.addresses("net1")
        );
        ips.push(ip.split('/').next().expect("address").to_owned());
    }
    assert_ne!(ips[0], ips[1]);
    assert!(pods[0].0.ping(&ips[1]), "web cannot reach db at {}", ips[1]);
    assert!(pods[1].0.ping(&ips[0]), "db cannot reach web at {}", ips[0]);

    // The operator CLI reads the Multus file whose delegate has no version.
    let multus = json!({
        "cniVersion": "0.3.1",
        "name": "multus-demo",
        "type": "multus-cni",
        "delegates": [
            {"name": "k8snet1", "type": "flannel", "masterplugin": true,
             "delegate": {"isDefaultGateway": true, "bridge": "docker0", "mtu": 1400}},
            delegate(&master, &etcd.endpoint(), &s),
        ]
    });
    let file = s.path().join("10-multus.conf");
    std::fs::write(&file, multus.to_string()).expect("write");
    let file = file.to_str().expect("utf-8");
    let (code, out, err) = cli(&["config", "check", file]);
    assert_eq!(code, 0, "config check: {out}{err}");
    let (code, out, err) = cli(&["ls", "--conf", file]);
    assert_eq!(code, 0, "ls: {out}{err}");
    for ip in &ips {
        assert!(out.contains(ip.as_str()), "{ip} not listed: {out}");
    }

    for (ns, id) in &pods {
        macvlan("DEL", ns, id).quiet();
        // Again, as runtimes do: still fine.
        macvlan("DEL", ns, id).quiet();
    }
    let (code, out, _) = cli(&["ls", "--conf", file]);
    assert_eq!(code, 0);
    for ip in &ips {
        assert!(
            !out.contains(ip.as_str()),
            "{ip} still held after DEL: {out}"
        );
    }
}
