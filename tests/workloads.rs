//! Fixed addresses for workloads of several pods, through the binary on etcd: address pools on
//! the pod template, and takeover of an address whose holder is terminating on a lost node.
//! Pods and nodes are served by the stand-in Kubernetes API as a real API server serves them.

mod support;

use std::path::Path;
use std::time::Duration;

use kube_ipam::testing::{ApiMode, KubeApi};
use kube_ipam_etcd::testing::EtcdServer;
use serde_json::{json, Value};
use support::pods::{addresses, consistent, listed, pod_call, usage};
use support::{Out, Scratch};

const NS: &str = "prod";
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// 10.188.0.0/16 (dynamic 10.188.1.0-254, gateway .1) and fd00:188::/64 (dynamic ::1:0-ffff) on
/// `etcd`, pods read with `kubeconfig`.
fn network(s: &Scratch, etcd: &EtcdServer, kubeconfig: &Path, extra: Value) -> String {
    let mut ipam = json!({
        "ranges": [
            [{"subnet": "10.188.0.0/16", "rangeStart": "10.188.1.0", "rangeEnd": "10.188.1.254", "gateway": "10.188.0.1"}],
            [{"subnet": "fd00:188::/64", "rangeStart": "fd00:188::1:0", "rangeEnd": "fd00:188::1:ffff", "gateway": "fd00:188::1"}]
        ],
        "kubeConfig": kubeconfig,
        "etcdConfig": {"etcdURL": etcd.endpoint()},
    });
    support::merge(&mut ipam, extra);
    s.conf("1.0.0", ipam)
}

fn call(cmd: &str, container: &str, pod: &str, uid: &str, node: &str, conf: &str) -> Out {
    pod_call(cmd, container, (NS, pod), uid, node, conf)
}

/// Address -> (pod, kind, parked) as `kube-ipam ls` shows them.
fn kinds(s: &Scratch, conf: &str) -> Vec<(String, String, String, bool)> {
    let mut rows: Vec<_> = listed(s, conf)
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap_or_default().to_owned(),
                r["pod"].as_str().unwrap_or_default().to_owned(),
                r["kind"].as_str().unwrap_or_default().to_owned(),
                r["parked"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    rows.sort();
    rows
}

const POOL: &str = "10.188.0.216-10.188.0.218,fd00:188::216-fd00:188::218";

fn pool_annotations() -> Vec<(&'static str, &'static str)> {
    vec![
        ("kube-ipam.ip-pool", POOL),
        ("kube-ipam.netmask", "16,64"),
        ("kube-ipam.gateway", "10.188.0.1,fd00:188::1"),
    ]
}

#[test]
fn statefulset_replicas_take_their_ordinals_and_keep_them_across_recreation() {
    let etcd = EtcdServer::start().expect("etcd");
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, &etcd, api.kubeconfig(), json!({}));
    let replica = |n: u32, node: &str| {
        api.pod(NS, &format!("mysql-{n}"))
            .on(node)
            .controlled_by("StatefulSet", "mysql")
            .annotations(&pool_annotations())
            .create()
    };
    // The StatefulSet starts its pods one by one; here they come in any order.
    let mut uids = Vec::new();
    for n in [1u32, 0, 2] {
        let uid = replica(n, &format!("node-{n}"));
        let r = call(
            "ADD",
            &format!("c{n}"),
            &format!("mysql-{n}"),
            &uid,
            "node-a",
            &conf,
        )
        .ok();
        assert_eq!(
            addresses(&r),
            [
                format!("10.188.0.{}/16", 216 + n),
                format!("fd00:188::{}/64", 216 + n)
            ]
        );
        assert_eq!(r["ips"][0]["gateway"], "10.188.0.1");
        assert_eq!(r["ips"][1]["gateway"], "fd00:188::1");
        uids.push((n, uid));
    }
    let rows = kinds(&s, &conf);
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert!(
        rows.iter()
            .all(|(_, _, kind, parked)| kind == "pool" && !parked),
        "{rows:?}"
    );

    // A fourth replica finds the pool taken: wait, told who holds it.
    let uid3 = replica(3, "node-3");
    let e = call("ADD", "c3", "mysql-3", &uid3, "node-3", &conf).err(11);
    for n in 0..3 {
        assert!(e.contains(&format!("pod {NS}/mysql-{n}")), "{e}");
    }
    assert!(e.contains("kube-ipam.ip-pool"), "{e}");

    // mysql-1 is deleted; meanwhile its addresses are parked for it, and nobody else's.
    let uid1 = uids
        .iter()
        .find(|(n, _)| *n == 1)
        .map(|(_, u)| u.clone())
        .unwrap_or_default();
    call("DEL", "c1", "mysql-1", &uid1, "node-1", &conf).quiet();
    api.remove_pod(NS, "mysql-1");
    let parked: Vec<_> = kinds(&s, &conf).into_iter().filter(|r| r.3).collect();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert!(parked
        .iter()
        .all(|r| r.1 == format!("{NS}/mysql-1") && r.2 == "pool"));
    let e = call("ADD", "c3", "mysql-3", &uid3, "node-3", &conf).err(11);
    assert!(e.contains("binding of pod prod/mysql-1"), "{e}");
    consistent(&s, &conf);
    let usage = usage(&s, &conf);
    assert_eq!(
        (usage[0]["pool"].as_u64(), usage[0]["parked"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        (usage[1]["pool"].as_u64(), usage[1]["parked"].as_u64()),
        (Some(2), Some(1))
    );

    // The StatefulSet recreates mysql-1 on another node: new uid, same addresses.
    let uid1 = replica(1, "node-2");
    let r = call("ADD", "c1b", "mysql-1", &uid1, "node-2", &conf).ok();
    assert_eq!(addresses(&r), ["10.188.0.217/16", "fd00:188::217/64"]);
    assert!(kinds(&s, &conf).iter().all(|r| !r.3));
    consistent(&s, &conf);
}

#[test]
fn deployment_replicas_share_a_pool_of_two() {
    let etcd = EtcdServer::start().expect("etcd");
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, &etcd, api.kubeconfig(), json!({}));
    let pool = [("kube-ipam.ip-pool", "10.188.0.230,10.188.0.231")];
    let replica = |name: &str| {
        api.pod(NS, name)
            .on("node-1")
            .controlled_by("ReplicaSet", "keepalived-5d8f")
            .annotations(&pool)
            .create()
    };
    let (a, b, c) = (
        replica("keepalived-5d8f-x2k9q"),
        replica("keepalived-5d8f-24567"),
        replica("keepalived-5d8f-m7wbt"),
    );
    let ra = call("ADD", "ca", "keepalived-5d8f-x2k9q", &a, "node-1", &conf).ok();
    let rb = call("ADD", "cb", "keepalived-5d8f-24567", &b, "node-1", &conf).ok();
    let mut got = vec![addresses(&ra)[0].clone(), addresses(&rb)[0].clone()];
    got.sort();
    // The IPv6 set takes a dynamic address: the pool names none of that family.
    assert_eq!(got, ["10.188.0.230/16", "10.188.0.231/16"]);
    assert!(addresses(&ra)[1].starts_with("fd00:188::1:"), "{ra}");
    let e = call("ADD", "cc", "keepalived-5d8f-m7wbt", &c, "node-1", &conf).err(11);
    assert!(
        e.contains("keepalived-5d8f-x2k9q") && e.contains("keepalived-5d8f-24567"),
        "{e}"
    );
    // No binding for a Deployment's pods, even one whose name ends in digits: DEL frees.
    call("DEL", "cb", "keepalived-5d8f-24567", &b, "node-1", &conf).quiet();
    api.remove_pod(NS, "keepalived-5d8f-24567");
    let rc = call("ADD", "cc", "keepalived-5d8f-m7wbt", &c, "node-1", &conf).ok();
    assert_eq!(addresses(&rc)[0], addresses(&rb)[0]);
    let rows = kinds(&s, &conf);
    assert_eq!(rows.iter().filter(|r| r.2 == "pool").count(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| !r.3), "{rows:?}");
    consistent(&s, &conf);
}

#[test]
fn a_fixed_address_and_a_pool_together_are_error_7_naming_both() {
    let etcd = EtcdServer::start().expect("etcd");
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, &etcd, api.kubeconfig(), json!({}));
    let uid = api.add_pod(
        NS,
        "both",
        &[
            ("kube-ipam.ip", "10.188.0.216"),
            ("kube-ipam.ip-pool", "10.188.0.217-10.188.0.219"),
        ],
    );
    let e = call("ADD", "c1", "both", &uid, "node-a", &conf).err(7);
    assert!(e.contains("kube-ipam.ip and kube-ipam.ip-pool"), "{e}");
    // A pool holding the gateway is refused like a fixed gateway address.
    let uid = api.add_pod(NS, "gw", &[("kube-ipam.ip-pool", "10.188.0.1-10.188.0.3")]);
    let e = call("ADD", "c2", "gw", &uid, "node-a", &conf).err(7);
    assert!(
        e.contains("kube-ipam.ip-pool") && e.contains("10.188.0.1") && e.contains("gateway"),
        "{e}"
    );
    assert!(listed(&s, &conf).is_empty());
}

#[test]
fn an_annotation_naming_nothing_of_the_network_logs_a_warning_and_gets_a_dynamic_address() {
    let etcd = EtcdServer::start().expect("etcd");
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, &etcd, api.kubeconfig(), json!({}));
    for (i, (key, value)) in [
        ("kube-ipam.ip", "10.199.0.216"),
        ("kube-ipam.ip-pool", "10.199.0.216-10.199.0.219"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("typo-{i}");
        let uid = api.add_pod(NS, &name, &[(key, value)]);
        let r = call("ADD", &format!("c{i}"), &name, &uid, "node-a", &conf).ok();
        assert!(addresses(&r)[0].starts_with("10.188.1."), "{r}");
        let log = std::fs::read_to_string(s.log_file()).expect("log");
        let line = log
            .lines()
            .find(|l| l.contains("WARN") && l.contains(key) && l.contains(value))
            .unwrap_or_else(|| panic!("no warning naming {key}={value}:\n{log}"));
        assert!(
            line.contains("10.188.0.0/16") && line.contains("fd00:188::/64"),
            "{line}"
        );
    }
}

/// The node a holder runs on, as the case leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeCase {
    Ready,
    NotReadyBriefly,
    NotReadyLong,
    OutOfService,
    Deleted,
    ApiDown,
    TakeoversOff,
}

/// `fixed-ip-test` holds 10.188.0.216 on node-1; node-1 is lost as `case` says, the old pod is
/// marked for deletion and its grace period is over; its replacement asks on node-2.
fn lost_node(case: NodeCase) {
    let etcd = EtcdServer::start().expect("etcd");
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let extra = match case {
        NodeCase::TakeoversOff => json!({"takeoverFromLostNodes": false}),
        _ => json!({"nodeLostAfter": 300}),
    };
    let conf = network(&s, &etcd, api.kubeconfig(), extra);
    let fixed = [
        ("kube-ipam.ip", "10.188.0.216"),
        ("kube-ipam.netmask", "16"),
    ];
    api.add_node("node-1");
    api.add_node("node-2");
    let old = api
        .pod(NS, "fixed-ip-test-6d4c9-aaaaa")
        .on("node-1")
        .controlled_by("ReplicaSet", "fixed-ip-test-6d4c9")
        .annotations(&fixed)
        .create();
    call(
        "ADD",
        "c-old",
        "fixed-ip-test-6d4c9-aaaaa",
        &old,
        "node-1",
        &conf,
    )
    .ok();

    // The node controller: node-1 stops reporting; 300 s later its pods are deleted with
    // their 30 s grace period, which is over by now.
    let down_for = match case {
        NodeCase::NotReadyBriefly => Duration::from_secs(100),
        _ => Duration::from_secs(400),
    };
    let status = if case == NodeCase::Ready {
        "True"
    } else {
        "Unknown"
    };
    assert!(api.set_node_ready("node-1", status, down_for));
    assert!(api.mark_for_deletion(NS, "fixed-ip-test-6d4c9-aaaaa", 30, Duration::from_secs(60)));
    match case {
        NodeCase::OutOfService => {
            assert!(api.set_node_ready("node-1", "Unknown", Duration::from_secs(5)));
            assert!(api.taint_node("node-1", OUT_OF_SERVICE, "nodeshutdown", "NoExecute"));
        }
        NodeCase::Deleted => assert!(api.remove_node("node-1")),
        _ => {}
    }
    let new = api
        .pod(NS, "fixed-ip-test-6d4c9-bbbbb")
        .on("node-2")
        .controlled_by("ReplicaSet", "fixed-ip-test-6d4c9")
        .annotations(&fixed)
        .create();
    let out = match case {
        NodeCase::ApiDown => {
            // The runtime hands over the replacement's annotations, so the API is asked only
            // about the holder, and that fails: fail closed.
            let mut with_annotations: Value = serde_json::from_str(&conf).expect("conf");
            with_annotations["runtimeConfig"] =
                json!({"io.kubernetes.cri.pod-annotations": {"kube-ipam.ip": "10.188.0.216"}});
            api.set_mode(ApiMode::Unavailable);
            let out = call(
                "ADD",
                "c-new",
                "fixed-ip-test-6d4c9-bbbbb",
                &new,
                "node-2",
                &with_annotations.to_string(),
            );
            api.set_mode(ApiMode::Serve);
            out
        }
        _ => call(
            "ADD",
            "c-new",
            "fixed-ip-test-6d4c9-bbbbb",
            &new,
            "node-2",
            &conf,
        ),
    };
    let taken = matches!(
        case,
        NodeCase::NotReadyLong | NodeCase::OutOfService | NodeCase::Deleted
    );
    if taken {
        assert_eq!(addresses(&out.ok())[0], "10.188.0.216/16");
        let log = std::fs::read_to_string(s.log_file()).expect("log");
        let line = log
            .lines()
            .find(|l| l.contains("took the address over"))
            .unwrap_or_else(|| panic!("{case:?}: no takeover logged:\n{log}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(
            line.contains("fixed-ip-test-6d4c9-aaaaa") && line.contains("node-1"),
            "{line}"
        );
        let why = match case {
            NodeCase::NotReadyLong => "Ready=Unknown for 400 s",
            NodeCase::OutOfService => OUT_OF_SERVICE,
            _ => "node node-1 no longer exists",
        };
        assert!(line.contains(why), "{case:?}: {line}");
        let rows = kinds(&s, &conf);
        assert!(
            rows.iter()
                .all(|r| r.1 == format!("{NS}/fixed-ip-test-6d4c9-bbbbb")),
            "{rows:?}"
        );
    } else {
        let e = out.err(11);
        match case {
            NodeCase::ApiDown => assert!(
                e.contains("cannot look up pod prod/fixed-ip-test-6d4c9-aaaaa")
                    && e.contains("unable to handle the request"),
                "{e}"
            ),
            _ => assert!(e.contains("fixed-ip-test-6d4c9-aaaaa"), "{case:?}: {e}"),
        }
        let rows = kinds(&s, &conf);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().all(|r| r.1.ends_with("-aaaaa")), "{rows:?}");
    }
    consistent(&s, &conf);
}

#[test]
fn a_holder_terminating_on_a_ready_node_is_waited_for() {
    lost_node(NodeCase::Ready);
}

#[test]
fn a_holder_on_a_node_not_ready_for_less_than_node_lost_after_is_waited_for() {
    lost_node(NodeCase::NotReadyBriefly);
}

#[test]
fn a_holder_on_a_node_not_ready_for_longer_is_taken_over() {
    lost_node(NodeCase::NotReadyLong);
}

#[test]
fn a_holder_on_an_out_of_service_node_is_taken_over_at_once() {
    lost_node(NodeCase::OutOfService);
}

#[test]
fn a_holder_on_a_deleted_node_is_taken_over_at_once() {
    lost_node(NodeCase::Deleted);
}

#[test]
fn an_api_failure_on_the_takeover_path_fails_closed() {
    lost_node(NodeCase::ApiDown);
}

#[test]
fn takeovers_from_lost_nodes_can_be_turned_off() {
    lost_node(NodeCase::TakeoversOff);
}

#[test]
fn replacements_racing_for_the_address_of_a_lost_node_take_it_once() {
    let etcd = EtcdServer::start().expect("etcd");
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, &etcd, api.kubeconfig(), json!({}));
    let fixed = [("kube-ipam.ip", "10.188.0.216")];
    api.add_node("node-1");
    let old = api
        .pod(NS, "db-old")
        .on("node-1")
        .annotations(&fixed)
        .create();
    call("ADD", "c-old", "db-old", &old, "node-1", &conf).ok();
    assert!(api.remove_node("node-1"));
    assert!(api.mark_for_deletion(NS, "db-old", 30, Duration::from_secs(60)));
    let racers: Vec<(String, String)> = (0..6)
        .map(|i| {
            let name = format!("db-new-{i}");
            let uid = api.pod(NS, &name).on("node-2").annotations(&fixed).create();
            (name, uid)
        })
        .collect();
    let children: Vec<_> = racers
        .iter()
        .map(|(name, uid)| {
            let args = format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={NS};K8S_POD_NAME={name};K8S_POD_UID={uid}"
            );
            support::spawn("ADD", &format!("c-{name}"), &[("CNI_ARGS", &args)], &conf)
        })
        .collect();
    let outs: Vec<Out> = children.into_iter().map(support::wait).collect();
    let winners: Vec<&Out> = outs.iter().filter(|o| o.code == 0).collect();
    assert_eq!(winners.len(), 1, "{outs:?}");
    assert_eq!(addresses(&winners[0].ok())[0], "10.188.0.216/16");
    for o in outs.iter().filter(|o| o.code != 0) {
        let e = o.err(11);
        assert!(e.contains("10.188.0.216"), "{e}");
    }
    let holders: Vec<_> = kinds(&s, &conf)
        .into_iter()
        .filter(|r| r.0 == "10.188.0.216")
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_ne!(holders[0].1, format!("{NS}/db-old"));
    let log = std::fs::read_to_string(s.log_file()).expect("log");
    assert_eq!(log.matches("took the address over").count(), 1, "{log}");
    consistent(&s, &conf);
}
