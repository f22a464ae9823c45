//! The binary against real etcd servers: plain and mutual TLS, a burst from many simulated
//! nodes, a member killed mid-burst, and etcd going away and coming back.

mod support;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_ipam_etcd::testing::{EtcdCluster, EtcdServer};
use kube_ipam_etcd::{EtcdOptions, EtcdStore};
use kube_ipam_store::records::decode;
use kube_ipam_store::{Attachment, IpRecord, Keys, LeaseStore};
use serde_json::{json, Value};
use support::{call, Scratch};

fn etcd_conf(s: &Scratch, name: &str, etcd: Value, ipam: Value) -> String {
    let mut block = json!({
        "type": "kube-ipam",
        "etcdConfig": etcd,
        "logFile": s.log_file(),
        "dataDir": s.data_dir(),
    });
    support::merge(&mut block, ipam);
    json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "eth0", "ipam": block})
        .to_string()
}

/// Fixture (a) of the original plugin, pointed at `etcd`.
fn fixture_a() -> Value {
    json!({
        "subnet": "10.188.0.0/16", "rangeStart": "10.188.0.10", "rangeEnd": "10.188.0.200",
        "gateway": "10.188.0.1", "routes": [{"dst": "0.0.0.0/0"}]
    })
}

/// Fixture (b): a fixed zone and the dynamic range beside it.
fn fixture_b() -> Value {
    json!({
        "subnet": "10.188.0.0/16", "fixedStart": "10.188.0.10", "fixedEnd": "10.188.0.255",
        "rangeStart": "10.188.1.0", "rangeEnd": "10.188.255.254", "gateway": "10.188.0.1",
        "routes": [{"dst": "0.0.0.0/0"}]
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every record of `network`, checked for consistency: each address record has an owner
/// record naming it and the other way round. Returns the held addresses.
fn consistent_records(opts: EtcdOptions, network: &str) -> BTreeSet<String> {
    rt().block_on(async {
        let store = EtcdStore::connect(opts).await.expect("connect");
        let keys = Keys::new("/kube-ipam", network);
        let (f, t) = keys.owners();
        let owners: Vec<Attachment> = store
            .range(&f, &t, 0)
            .await
            .expect("owners")
            .iter()
            .map(|e| decode(&e.key, &e.value).expect("owner record"))
            .collect();
        let (f, t) = keys.ips();
        let ips = store.range(&f, &t, 0).await.expect("ips");
        let mut held = BTreeSet::new();
        for e in &ips {
            let rec: IpRecord = decode(&e.key, &e.value).expect("ip record");
            let addr = keys.parse_ip(&e.key).expect("ip key");
            let owner = owners
                .iter()
                .find(|o| o.holder.same_attachment(&rec.holder))
                .unwrap_or_else(|| panic!("{addr} has no owner record"));
            assert!(
                owner.ips.iter().any(|i| i.address == addr),
                "owner of {addr} does not list it"
            );
            assert!(held.insert(addr.to_string()), "{addr} twice");
        }
        for o in &owners {
            for i in &o.ips {
                assert!(
                    held.contains(&i.address.to_string()),
                    "owner lists {} without a record",
                    i.address
                );
            }
        }
        held
    })
}

fn spawn_add(conf: &Arc<String>, cmd: &str, id: &str, node: &str) -> Child {
    support::spawn(cmd, id, &[("KUBE_IPAM_NODE", node)], conf)
}

#[test]
fn fixtures_allocate_and_release_on_plain_etcd() {
    let etcd = EtcdServer::start().expect("etcd");
    let s = Scratch::new();
    for (name, ipam) in [("fix-a", fixture_a()), ("fix-b", fixture_b())] {
        let conf = etcd_conf(&s, name, json!({"etcdURL": etcd.endpoint()}), ipam);
        let ip = call("ADD", "c1", "eth0", &[], &conf).ip();
        let v: Ipv4Addr = ip.parse().expect("v4");
        let a = |s: &str| s.parse::<Ipv4Addr>().expect("v4");
        if name == "fix-a" {
            assert!(v >= a("10.188.0.10") && v <= a("10.188.0.200"), "{v}");
        } else {
            assert!(v >= a("10.188.1.0"), "{v} is in the fixed zone");
        }
        assert_eq!(consistent_records(etcd.options(), name).len(), 1);
        assert_eq!(call("DEL", "c1", "eth0", &[], &conf).code, 0);
        assert!(consistent_records(etcd.options(), name).is_empty());
    }
    assert!(
        !s.data_dir().exists(),
        "the embedded store was used although etcd was configured"
    );
}

#[test]
fn mutual_tls_works_and_bad_credentials_allocate_nothing() {
    let etcd = EtcdServer::start_tls().expect("etcd with TLS");
    let tls = etcd.tls().expect("tls paths").clone();
    let s = Scratch::new();
    let good = json!({
        "etcdURL": etcd.endpoint(),
        "etcdCertFile": tls.client_cert, "etcdKeyFile": tls.client_key, "etcdTrustedCAFileFile": tls.ca,
    });
    // Fixture (a) over TLS: allocate and release.
    let conf_a = etcd_conf(&s, "tls-a", good.clone(), fixture_a());
    call("ADD", "c1", "eth0", &[], &conf_a).ip();
    assert_eq!(consistent_records(etcd.options(), "tls-a").len(), 1);
    assert_eq!(call("DEL", "c1", "eth0", &[], &conf_a).code, 0);
    assert!(consistent_records(etcd.options(), "tls-a").is_empty());

    let conf = etcd_conf(&s, "tls", good.clone(), fixture_b());
    let ip = call("ADD", "c1", "eth0", &[], &conf).ip();
    assert!(ip.starts_with("10.188."), "{ip}");
    assert_eq!(consistent_records(etcd.options(), "tls").len(), 1);

    let mut wrong_ca = good.clone();
    wrong_ca["etcdTrustedCAFileFile"] = json!(tls.wrong_ca);
    let out = call(
        "ADD",
        "c2",
        "eth0",
        &[],
        &etcd_conf(&s, "tls", wrong_ca, fixture_b()),
    );
    // Retrying cannot fix a certificate: the config is wrong, error 7.
    let d = out.err(7);
    assert!(
        d.to_lowercase().contains("certificate") || d.to_lowercase().contains("tls"),
        "{d}"
    );

    let mut no_client = good.clone();
    no_client.as_object_mut().unwrap().remove("etcdCertFile");
    no_client.as_object_mut().unwrap().remove("etcdKeyFile");
    let out = call(
        "ADD",
        "c3",
        "eth0",
        &[],
        &etcd_conf(&s, "tls", no_client, fixture_b()),
    );
    assert_ne!(out.code, 0);
    assert!(
        [7, 11].contains(&out.json()["code"].as_u64().unwrap_or(0)),
        "{}",
        out.stdout
    );

    let mut no_ca = good;
    no_ca
        .as_object_mut()
        .unwrap()
        .remove("etcdTrustedCAFileFile");
    let d = call(
        "ADD",
        "c4",
        "eth0",
        &[],
        &etcd_conf(&s, "tls", no_ca, fixture_b()),
    )
    .err(7);
    assert!(d.contains("etcdTrustedCAFileFile"), "{d}");

    // Only the first, correctly authenticated ADD left anything.
    assert_eq!(consistent_records(etcd.options(), "tls").len(), 1);
    assert_eq!(call("DEL", "c1", "eth0", &[], &conf).code, 0);
    assert!(consistent_records(etcd.options(), "tls").is_empty());
}

#[test]
fn eight_nodes_times_fifty_processes_share_one_small_range() {
    let etcd = EtcdServer::start().expect("etcd");
    let s = Scratch::new();
    // 510 dynamic addresses for 400 attachments.
    let conf = Arc::new(etcd_conf(
        &s,
        "burst",
        json!({"etcdURL": etcd.endpoint()}),
        json!({"subnet": "10.99.0.0/23"}),
    ));
    let children: Vec<(String, Child)> = (0..400)
        .map(|i| {
            let id = format!("burst-{i}");
            let child = spawn_add(&conf, "ADD", &id, &format!("node-{}", i % 8));
            (id, child)
        })
        .collect();
    let mut got = BTreeSet::new();
    for (id, child) in children {
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{id}: {stdout}");
        let v: Value = serde_json::from_str(&stdout).expect("json");
        assert!(
            got.insert(v["ips"][0]["address"].as_str().expect("address").to_owned()),
            "duplicate in {v}"
        );
    }
    assert_eq!(consistent_records(etcd.options(), "burst").len(), 400);
    let children: Vec<Child> = (0..400)
        .map(|i| spawn_add(&conf, "DEL", &format!("burst-{i}"), "node-0"))
        .collect();
    for child in children {
        assert!(child.wait_with_output().expect("wait").status.success());
    }
    assert!(consistent_records(etcd.options(), "burst").is_empty());
}

#[test]
fn member_killed_mid_burst_loses_nothing_and_duplicates_nothing() {
    let mut cluster = EtcdCluster::start(3).expect("cluster");
    let s = Scratch::new();
    let conf = Arc::new(etcd_conf(
        &s,
        "ha",
        json!({"etcdURL": cluster.endpoints().join(","), "requestTimeout": 5}),
        json!({"subnet": "10.98.0.0/23"}),
    ));
    let mut children = Vec::new();
    for i in 0..200 {
        if i == 100 {
            cluster.kill_member(0).expect("kill member");
        }
        children.push((
            format!("ha-{i}"),
            spawn_add(&conf, "ADD", &format!("ha-{i}"), &format!("node-{}", i % 4)),
        ));
    }
    let mut ok = BTreeSet::new();
    let mut failed = 0;
    for (id, child) in children {
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{id}: not JSON: {stdout}"));
        if out.status.success() {
            let addr = v["ips"][0]["address"].as_str().expect("address");
            let host = addr.split('/').next().unwrap_or(addr).to_owned();
            assert!(ok.insert(host), "duplicate {v}");
        } else {
            assert_eq!(v["code"], 11, "{id}: {v}");
            failed += 1;
        }
    }
    let mut opts = cluster.options();
    opts.endpoints.remove(0);
    let held = consistent_records(opts, "ha");
    assert_eq!(
        held, ok,
        "records differ from what the successful ADDs returned ({failed} failed)"
    );
}

#[test]
fn etcd_down_means_error_11_quickly_and_nothing_left_behind() {
    let mut etcd = EtcdServer::start().expect("etcd");
    let s = Scratch::new();
    let conf = etcd_conf(&s, "down", json!({"etcdURL": etcd.endpoint()}), fixture_a());
    let status = etcd_conf(&s, "down", json!({"etcdURL": etcd.endpoint()}), fixture_a())
        .replace("1.0.0", "1.1.0");
    assert_eq!(call("STATUS", "", "", &[], &status).code, 0);
    etcd.stop().expect("stop");

    let started = Instant::now();
    let d = call("ADD", "c1", "eth0", &[], &conf).err(11);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "ADD took {:?}",
        started.elapsed()
    );
    assert!(d.contains("127.0.0.1"), "{d}");
    let d = call("STATUS", "", "", &[], &status).err(50);
    assert!(d.contains("127.0.0.1"), "{d}");

    etcd.restart().expect("restart");
    assert!(
        consistent_records(etcd.options(), "down").is_empty(),
        "the failed ADD left records"
    );
    call("ADD", "c1", "eth0", &[], &conf).ip();
    assert_eq!(consistent_records(etcd.options(), "down").len(), 1);
}
