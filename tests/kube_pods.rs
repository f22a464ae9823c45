//! Fixed and sticky pod addresses through the binary, with pods served by a stand-in
//! Kubernetes API (HTTPS, bearer token, real kubeconfig files, k8s-openapi objects).

mod support;

use std::path::Path;

use kube_ipam::testing::{ApiMode, KubeApi};
use serde_json::{json, Value};
use support::pods::{addresses, consistent, listed};
use support::{call, cli, Out, Scratch};

const NS: &str = "prod";

/// The original plugin's fixture: 10.188.0.0/16, dynamic 10.188.0.10-200, gateway .1.
fn network(s: &Scratch, kubeconfig: &Path, extra: Value) -> String {
    let mut ipam = json!({
        "subnet": "10.188.0.0/16", "rangeStart": "10.188.0.10", "rangeEnd": "10.188.0.200",
        "gateway": "10.188.0.1", "routes": [{"dst": "0.0.0.0/0"}],
        "kubeConfig": kubeconfig,
    });
    support::merge(&mut ipam, extra);
    s.conf("1.0.0", ipam)
}

/// Dual stack: the IPv4 network above plus fd00:188::/64 with dynamic ::1:0-::1:ffff.
fn dual_stack(s: &Scratch, kubeconfig: &Path) -> String {
    s.conf(
        "1.0.0",
        json!({
            "ranges": [
                [{"subnet": "10.188.0.0/16", "rangeStart": "10.188.0.10", "rangeEnd": "10.188.0.200", "gateway": "10.188.0.1"}],
                [{"subnet": "fd00:188::/64", "rangeStart": "fd00:188::1:0", "rangeEnd": "fd00:188::1:ffff", "gateway": "fd00:188::1"}]
            ],
            "kubeConfig": kubeconfig,
        }),
    )
}

/// A call as kubelet makes it for pod `name` (uid `uid`) of the test namespace on `node`.
fn pod_call(cmd: &str, container: &str, name: &str, uid: &str, node: &str, conf: &str) -> Out {
    support::pods::pod_call(cmd, container, (NS, name), uid, node, conf)
}

/// What the store holds, through the operator CLI: address -> pod.
fn held(s: &Scratch, conf: &str) -> Vec<(String, String)> {
    listed(s, conf)
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap_or_default().to_owned(),
                r["pod"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn annotated(ip: &str) -> Vec<(&str, &str)> {
    vec![
        ("kube-ipam.ip", ip),
        ("kube-ipam.netmask", "255.255.0.0"),
        ("kube-ipam.gateway", "10.188.0.1"),
    ]
}

#[test]
fn fixed_ipv4_follows_the_annotation_to_a_new_pod_on_another_node() {
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, api.kubeconfig(), json!({}));
    let uid = api.add_pod(NS, "mysql-a", &annotated("10.188.0.216"));
    let r = pod_call("ADD", "ctr-a", "mysql-a", &uid, "node-a", &conf).ok();
    assert_eq!(addresses(&r), ["10.188.0.216/16"]);
    assert_eq!(r["ips"][0]["gateway"], "10.188.0.1");
    // Only metadata is fetched, with the token.
    let reqs = api.requests();
    assert!(
        reqs.iter()
            .any(|r| r.contains("/api/v1/namespaces/prod/pods/mysql-a")
                && r.contains("as=PartialObjectMetadata")),
        "{reqs:?}"
    );
    assert_eq!(
        held(&s, &conf),
        [("10.188.0.216".to_owned(), "prod/mysql-a".to_owned())]
    );

    // Deleted; a Deployment-like replacement with another name lands on node B.
    pod_call("DEL", "ctr-a", "mysql-a", &uid, "node-a", &conf).quiet();
    api.remove_pod(NS, "mysql-a");
    assert!(held(&s, &conf).is_empty());
    let uid_b = api.add_pod_on(NS, "mysql-b", "node-b", &annotated("10.188.0.216"));
    let r = pod_call("ADD", "ctr-b", "mysql-b", &uid_b, "node-b", &conf).ok();
    assert_eq!(addresses(&r), ["10.188.0.216/16"]);
    consistent(&s, &conf);
}

#[test]
fn fixed_ipv6_and_dual_stack() {
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = dual_stack(&s, api.kubeconfig());
    let uid = api.add_pod(
        NS,
        "both",
        &[
            ("kube-ipam.ip", "10.188.0.220,fd00:188::220"),
            ("kube-ipam.netmask", "16,64"),
            ("kube-ipam.gateway", "10.188.0.1,fd00:188::1"),
        ],
    );
    let r = pod_call("ADD", "ctr-1", "both", &uid, "node-a", &conf).ok();
    assert_eq!(addresses(&r), ["10.188.0.220/16", "fd00:188::220/64"]);
    assert_eq!(r["ips"][1]["gateway"], "fd00:188::1");

    // An IPv6 address alone: the IPv4 set gets a dynamic address.
    let uid = api.add_pod(NS, "six", &[("kube-ipam.ip", "fd00:188::221")]);
    let r = pod_call("ADD", "ctr-2", "six", &uid, "node-a", &conf).ok();
    let got = addresses(&r);
    assert_eq!(got.len(), 2, "{r}");
    assert!(got[0].starts_with("10.188.0."), "{got:?}");
    assert_eq!(got[1], "fd00:188::221/64");
    consistent(&s, &conf);
}

#[test]
fn second_pod_with_the_same_annotation_waits_for_the_first() {
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, api.kubeconfig(), json!({}));
    let a = api.add_pod(NS, "keepalived-a", &annotated("10.188.0.217"));
    let b = api.add_pod(NS, "keepalived-b", &annotated("10.188.0.217"));
    pod_call("ADD", "ctr-a", "keepalived-a", &a, "node-a", &conf).ok();
    for _ in 0..3 {
        let e = pod_call("ADD", "ctr-b", "keepalived-b", &b, "node-b", &conf).err(11);
        assert!(
            e.contains("10.188.0.217") && e.contains("prod/keepalived-a"),
            "{e}"
        );
    }
    assert_eq!(held(&s, &conf).len(), 1);
    pod_call("DEL", "ctr-a", "keepalived-a", &a, "node-a", &conf).quiet();
    let r = pod_call("ADD", "ctr-b", "keepalived-b", &b, "node-b", &conf).ok();
    assert_eq!(addresses(&r), ["10.188.0.217/16"]);
    consistent(&s, &conf);
}

#[test]
fn address_of_a_pod_that_is_gone_is_taken_over_and_logged() {
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, api.kubeconfig(), json!({}));
    let a = api.add_pod(NS, "db-a", &annotated("10.188.0.218"));
    pod_call("ADD", "ctr-a", "db-a", &a, "node-a", &conf).ok();
    // node-a dies with the pod on it; the pod object is deleted, no DEL ever comes.
    api.remove_pod(NS, "db-a");
    let b = api.add_pod(NS, "db-b", &annotated("10.188.0.218"));
    let r = pod_call("ADD", "ctr-b", "db-b", &b, "node-b", &conf).ok();
    assert_eq!(addresses(&r), ["10.188.0.218/16"]);
    assert_eq!(
        held(&s, &conf),
        [("10.188.0.218".to_owned(), "prod/db-b".to_owned())]
    );
    let log = std::fs::read_to_string(s.log_file()).expect("log");
    assert!(
        log.contains("took the address over") && log.contains("no longer exists"),
        "{log}"
    );
    // The old sandbox's DEL, if it ever arrives, frees nothing of db-b's.
    pod_call("DEL", "ctr-a", "db-a", &a, "node-a", &conf).quiet();
    assert_eq!(held(&s, &conf).len(), 1);
    consistent(&s, &conf);
}

#[test]
fn bad_annotations_are_error_7_naming_the_value_and_reserve_nothing() {
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, api.kubeconfig(), json!({}));
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("kube-ipam.ip", "10.188.0.1")], "gateway"),
        (&[("kube-ipam.ip", "10.188.0.300")], "10.188.0.300"),
        (
            &[
                ("kube-ipam.ip", "10.188.0.216"),
                ("kube-ipam.netmask", "255.0.255.0"),
            ],
            "255.0.255.0",
        ),
        (
            &[
                ("kube-ipam.ip", "10.188.0.216"),
                ("kube-ipam.netmask", "24"),
            ],
            "kube-ipam.netmask = /24: for 10.188.0.216 differs from subnet 10.188.0.0/16",
        ),
        (
            &[
                ("kube-ipam.ip", "10.188.0.216"),
                ("kube-ipam.netmask", "40"),
            ],
            "/40",
        ),
        (
            &[
                ("kube-ipam.ip", "10.188.0.216"),
                ("kube-ipam.gateway", "10.99.0.1"),
            ],
            "10.99.0.1",
        ),
        (
            &[
                ("kube-ipam.ip", "10.188.0.216"),
                ("kube-ipam.gateway", "gw"),
            ],
            "gw",
        ),
        (&[("kube-ipam.sticky", "maybe")], "maybe"),
    ];
    for (i, (ann, needle)) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        let uid = api.add_pod(NS, &name, ann);
        let e = pod_call("ADD", &format!("ctr-{i}"), &name, &uid, "node-a", &conf).err(7);
        assert!(e.contains(needle), "{ann:?}: {e}");
        assert!(e.contains("pod annotation kube-ipam."), "{ann:?}: {e}");
    }
    assert!(held(&s, &conf).is_empty());
}

#[test]
fn api_trouble_fails_closed_with_error_11() {
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let uid = api.add_pod(NS, "web", &annotated("10.188.0.219"));
    let add = |kubeconfig: &Path, name: &str| {
        let conf = network(&s, kubeconfig, json!({}));
        pod_call("ADD", "ctr-1", name, &uid, "node-a", &conf)
    };
    let e = add(&api.kubeconfig_with_token("wrong"), "web").err(11);
    assert!(e.contains("prod/web"), "{e}");
    let e = add(&api.kubeconfig_with_wrong_ca(), "web").err(11);
    assert!(e.contains("prod/web"), "{e}");
    let e = add(&s.path().join("missing.kubeconfig"), "web").err(11);
    assert!(e.contains("missing.kubeconfig"), "{e}");
    let e = add(api.kubeconfig(), "nobody").err(11);
    assert!(
        e.contains("prod/nobody") && e.contains("does not exist"),
        "{e}"
    );
    api.set_mode(ApiMode::Forbidden);
    let e = add(api.kubeconfig(), "web").err(11);
    assert!(e.contains("forbidden"), "{e}");
    api.set_mode(ApiMode::Unavailable);
    let e = add(api.kubeconfig(), "web").err(11);
    // The API's own answer, at once: not retried into a timeout.
    assert!(e.contains("unable to handle the request"), "{e}");
    api.set_mode(ApiMode::Hang);
    let e = add(api.kubeconfig(), "web").err(11);
    assert!(e.contains("no answer within 5 s"), "{e}");
    api.set_mode(ApiMode::Serve);
    api.stop();
    let e = add(api.kubeconfig(), "web").err(11);
    assert!(!e.contains(api.token()), "token leaked: {e}");
    let conf = network(&s, api.kubeconfig(), json!({}));
    // Refused before the store was even opened.
    assert!(!s.data_dir().exists(), "a refused ADD opened the store");
    let log = std::fs::read_to_string(s.log_file()).expect("log");
    assert!(!log.contains(api.token()), "token in the log");

    // No pod named in CNI_ARGS: no lookup, so the API being down does not matter.
    let r = call("ADD", "ctr-plain", "eth0", &[], &conf).ok();
    assert!(addresses(&r)[0].starts_with("10.188.0."), "{r}");
    assert_eq!(held(&s, &conf).len(), 1);
}

#[test]
fn sticky_pod_keeps_its_dynamic_address_across_recreation() {
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, api.kubeconfig(), json!({}));
    let uid = api.add_pod(NS, "web-0", &[("kube-ipam.sticky", "true")]);
    let first = addresses(&pod_call("ADD", "ctr-1", "web-0", &uid, "node-a", &conf).ok());
    pod_call("DEL", "ctr-1", "web-0", &uid, "node-a", &conf).quiet();
    // Parked for web-0 meanwhile: shown as held by its binding, not handed to others.
    assert_eq!(held(&s, &conf).len(), 1);
    for i in 0..20 {
        let other = addresses(&call("ADD", &format!("x{i}"), "eth0", &[], &conf).ok());
        assert_ne!(other, first);
    }
    // The StatefulSet recreates web-0: new uid, new sandbox, another node.
    let uid = api.add_pod_on(NS, "web-0", "node-b", &[("kube-ipam.sticky", "true")]);
    let again = addresses(&pod_call("ADD", "ctr-2", "web-0", &uid, "node-b", &conf).ok());
    assert_eq!(again, first);
    consistent(&s, &conf);

    // stickyIPs in the config makes every pod of the network sticky, no annotation needed.
    let s2 = Scratch::new();
    let conf = network(&s2, api.kubeconfig(), json!({"stickyIPs": true}));
    let uid = api.add_pod(NS, "plain-0", &[]);
    let first = addresses(&pod_call("ADD", "ctr-1", "plain-0", &uid, "node-a", &conf).ok());
    pod_call("DEL", "ctr-1", "plain-0", &uid, "node-a", &conf).quiet();
    let uid = api.add_pod(NS, "plain-0", &[]);
    let again = addresses(&pod_call("ADD", "ctr-2", "plain-0", &uid, "node-a", &conf).ok());
    assert_eq!(again, first);
    consistent(&s2, &conf);
}

/// Owner records (live attachments) of `network` in etcd that list `ip`.
fn etcd_holders(etcd: &kube_ipam_etcd::testing::EtcdServer, ip: &str) -> Vec<String> {
    use kube_ipam_store::records::decode;
    use kube_ipam_store::{Attachment, Keys, LeaseStore};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = kube_ipam_etcd::EtcdStore::connect(etcd.options())
            .await
            .expect("connect");
        let (from, to) = Keys::new("/kube-ipam", "testnet").owners();
        let mut out = Vec::new();
        for e in store.range(&from, &to, 0).await.expect("range") {
            let att: Attachment = decode(&e.key, &e.value).expect("owner record");
            if att.ips.iter().any(|i| i.address.to_string() == ip) {
                out.push(att.holder.container_id);
            }
        }
        out
    })
}

#[test]
fn on_etcd_the_fixed_address_moves_between_pods_and_is_never_held_twice() {
    let etcd = kube_ipam_etcd::testing::EtcdServer::start().expect("etcd");
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(
        &s,
        api.kubeconfig(),
        json!({"etcdConfig": {"etcdURL": etcd.endpoint()}}),
    );
    let ip = "10.188.0.216";
    let a = api.add_pod_on(NS, "mysql-a", "node-a", &annotated(ip));
    let r = pod_call("ADD", "ctr-a", "mysql-a", &a, "node-a", &conf).ok();
    assert_eq!(addresses(&r), ["10.188.0.216/16"]);
    assert_eq!(etcd_holders(&etcd, ip), ["ctr-a"]);

    // Six replacements on other nodes try at once while mysql-a lives: all told to wait.
    let racers: Vec<(String, String)> = (0..6)
        .map(|i| {
            let name = format!("mysql-r{i}");
            let uid = api.add_pod_on(NS, &name, &format!("node-{i}"), &annotated(ip));
            (name, uid)
        })
        .collect();
    let race = |tag: &str| -> Vec<Out> {
        let children: Vec<_> = racers
            .iter()
            .map(|(name, uid)| {
                let args = format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={NS};K8S_POD_NAME={name};K8S_POD_UID={uid}"
                );
                support::spawn(
                    "ADD",
                    &format!("ctr-{tag}-{name}"),
                    &[("CNI_ARGS", &args)],
                    &conf,
                )
            })
            .collect();
        children.into_iter().map(support::wait).collect()
    };
    for out in race("1") {
        let e = out.err(11);
        assert!(e.contains("prod/mysql-a"), "{e}");
    }
    assert_eq!(etcd_holders(&etcd, ip), ["ctr-a"]);

    // mysql-a is deleted; a new pod with another name gets the address back.
    pod_call("DEL", "ctr-a", "mysql-a", &a, "node-a", &conf).quiet();
    api.remove_pod(NS, "mysql-a");
    assert!(etcd_holders(&etcd, ip).is_empty());
    let b = api.add_pod_on(NS, "mysql-b", "node-b", &annotated(ip));
    let r = pod_call("ADD", "ctr-b", "mysql-b", &b, "node-b", &conf).ok();
    assert_eq!(addresses(&r), ["10.188.0.216/16"]);
    assert_eq!(etcd_holders(&etcd, ip), ["ctr-b"]);

    // Freed again, the racers go at once: exactly one wins, the rest wait.
    pod_call("DEL", "ctr-b", "mysql-b", &b, "node-b", &conf).quiet();
    let outs = race("2");
    let winners: Vec<&Out> = outs.iter().filter(|o| o.code == 0).collect();
    assert_eq!(winners.len(), 1, "{outs:?}");
    for o in outs.iter().filter(|o| o.code != 0) {
        o.err(11);
    }
    assert_eq!(etcd_holders(&etcd, ip).len(), 1);
    consistent(&s, &conf);
}

/// Leaks of every kind, then `kube-ipam gc --once`, with a pod recreated under the same name
/// between its two passes.
fn gc_scenario(extra: Value) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, api.kubeconfig(), extra);
    let path = s.path().join("net.conf");
    std::fs::write(&path, &conf).expect("write conf");
    let path = path.display().to_string();

    let live = api.add_pod(NS, "live", &[]);
    let live_ip = addresses(&pod_call("ADD", "ctr-live", "live", &live, "n1", &conf).ok());
    let gone = api.add_pod(NS, "gone", &[]);
    pod_call("ADD", "ctr-gone", "gone", &gone, "n1", &conf).ok();
    let web = api.add_pod(NS, "web-0", &[]);
    pod_call("ADD", "ctr-w1", "web-0", &web, "n1", &conf).ok();
    let db = api.add_pod(NS, "db-1", &[("kube-ipam.sticky", "true")]);
    pod_call("ADD", "ctr-db", "db-1", &db, "n1", &conf).ok();
    pod_call("DEL", "ctr-db", "db-1", &db, "n1", &conf).quiet();
    // Node n1 is lost with gone and web-0 on it (no DEL); db-1 is scaled away.
    api.remove_pod(NS, "gone");
    api.remove_pod(NS, "web-0");
    api.remove_pod(NS, "db-1");
    assert_eq!(held(&s, &conf).len(), 4);

    // A dry run names the three leaks and frees nothing.
    let (code, out, err) = cli(&["gc", "--conf", &path, "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("would release").count(), 3, "{out}");
    assert!(!out.contains("ctr-live"), "{out}");
    assert_eq!(held(&s, &conf).len(), 4);

    let mut gc = Command::new(support::BIN)
        .env_remove("CNI_COMMAND")
        .args(["gc", "--conf", &path, "--once", "--grace", "2s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gc");
    let mut lines = BufReader::new(gc.stdout.take().expect("stdout")).lines();
    let mut first = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("gc output");
        let done = line.starts_with("pass 1 done");
        first.push(line);
        if done {
            break;
        }
    }
    assert_eq!(
        first.iter().filter(|l| l.starts_with("suspect")).count(),
        3,
        "{first:?}"
    );
    // Between the passes web-0 is recreated under its name and gets an address.
    let web2 = api.add_pod(NS, "web-0", &[]);
    let web2_ip = addresses(&pod_call("ADD", "ctr-w2", "web-0", &web2, "n2", &conf).ok());
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let status = gc.wait().expect("wait gc");
    assert!(status.success(), "{rest:?}");
    assert_eq!(
        rest.iter().filter(|l| l.starts_with("released")).count(),
        3,
        "{rest:?}"
    );

    // Exactly the leaks went: live's and the new web-0's addresses stay.
    let mut left: Vec<String> = held(&s, &conf).into_iter().map(|(a, _)| a).collect();
    left.sort();
    let mut want: Vec<String> = [&live_ip[0], &web2_ip[0]]
        .iter()
        .map(|a| a.split('/').next().unwrap_or_default().to_owned())
        .collect();
    want.sort();
    assert_eq!(left, want);
    consistent(&s, &conf);
}

#[test]
fn gc_frees_exactly_the_leaks_on_the_embedded_store() {
    gc_scenario(json!({}));
}

#[test]
fn gc_frees_exactly_the_leaks_on_etcd() {
    let etcd = kube_ipam_etcd::testing::EtcdServer::start().expect("etcd");
    gc_scenario(json!({"etcdConfig": {"etcdURL": etcd.endpoint()}}));
}

#[test]
fn one_annotation_serves_several_networks() {
    let api = KubeApi::start().expect("stand-in API");
    let uid = api.add_pod(
        NS,
        "multi",
        &[
            ("kube-ipam.ip", "10.188.0.216,10.200.0.9,fd00:188::9"),
            ("kube-ipam.netmask", "16,24,64"),
            ("kube-ipam.gateway", "10.188.0.1"),
        ],
    );
    // net1: 10.188.0.0/16 takes 10.188.0.216, with the annotated gateway.
    let s1 = Scratch::new();
    let net1 = network(&s1, api.kubeconfig(), json!({}));
    let r = pod_call("ADD", "ctr-m", "multi", &uid, "node-a", &net1).ok();
    assert_eq!(addresses(&r), ["10.188.0.216/16"]);
    assert_eq!(r["ips"][0]["gateway"], "10.188.0.1");
    // net2: 10.200.0.0/24 takes 10.200.0.9; the gateway belongs to net1's address.
    let s2 = Scratch::new();
    let net2 = s2.conf(
        "1.0.0",
        json!({"subnet": "10.200.0.0/24", "kubeConfig": api.kubeconfig()}),
    );
    let r = pod_call("ADD", "ctr-m", "multi", &uid, "node-a", &net2).ok();
    assert_eq!(addresses(&r), ["10.200.0.9/24"]);
    assert_eq!(r["ips"][0]["gateway"], "10.200.0.1");
    // net3: none of the addresses is in 10.210.0.0/24: a dynamic address.
    let s3 = Scratch::new();
    let net3 = s3.conf(
        "1.0.0",
        json!({"subnet": "10.210.0.0/24", "kubeConfig": api.kubeconfig()}),
    );
    let r = pod_call("ADD", "ctr-m", "multi", &uid, "node-a", &net3).ok();
    let got = addresses(&r);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with("10.210.0.") && got[0].ends_with("/24"),
        "{got:?}"
    );
    assert_eq!(held(&s3, &net3).len(), 1);
}

/// The pod's annotations as containerd and CRI-O pass them to a plugin that declares the
/// `io.kubernetes.cri.pod-annotations` capability.
fn with_runtime_annotations(conf: &str, annotations: Value) -> String {
    let mut doc: Value = serde_json::from_str(conf).expect("conf");
    doc["runtimeConfig"] = json!({ "io.kubernetes.cri.pod-annotations": annotations });
    doc.to_string()
}

#[test]
fn annotations_from_the_runtime_spare_the_api_its_lookup() {
    let api = KubeApi::start().expect("stand-in API");
    let s = Scratch::new();
    let conf = network(&s, api.kubeconfig(), json!({}));
    let ann = json!({"kube-ipam.ip": "10.188.0.216", "kube-ipam.netmask": "16",
                     "kube-ipam.gateway": "10.188.0.1", "io.kubernetes.pod.name": "x"});
    let uid = api.add_pod(NS, "from-runtime", &[]);
    // The API is down: a free fixed address still goes, as the runtime's annotations say.
    api.set_mode(ApiMode::Unavailable);
    let r = pod_call(
        "ADD",
        "ctr-r",
        "from-runtime",
        &uid,
        "node-a",
        &with_runtime_annotations(&conf, ann.clone()),
    )
    .ok();
    assert_eq!(addresses(&r), ["10.188.0.216/16"]);
    assert_eq!(r["ips"][0]["gateway"], "10.188.0.1");
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    // Held by a live pod: the decision is about that pod, which only the API knows.
    let other = api.add_pod(NS, "second", &[]);
    let second = || {
        pod_call(
            "ADD",
            "ctr-s",
            "second",
            &other,
            "node-a",
            &with_runtime_annotations(&conf, ann.clone()),
        )
    };
    let e = second().err(11);
    assert!(e.contains("prod/from-runtime"), "{e}");
    api.set_mode(ApiMode::Serve);
    let e = second().err(11);
    assert!(
        e.contains("10.188.0.216 is held by pod prod/from-runtime"),
        "{e}"
    );
    assert!(
        api.requests()
            .iter()
            .all(|r| r.contains("/pods/from-runtime")),
        "asked about another pod than the holder: {:?}",
        api.requests()
    );

    // Without any kubeconfig, the runtime's annotations are all there is, and enough.
    let s2 = Scratch::new();
    let bare = s2.conf(
        "1.0.0",
        json!({"subnet": "10.188.0.0/16", "rangeStart": "10.188.0.10", "rangeEnd": "10.188.0.200",
               "gateway": "10.188.0.1"}),
    );
    let r = pod_call(
        "ADD",
        "ctr-b",
        "bare",
        "u-bare",
        "node-a",
        &with_runtime_annotations(&bare, json!({"kube-ipam.ip": "10.188.0.217"})),
    )
    .ok();
    assert_eq!(addresses(&r), ["10.188.0.217/16"]);
    // And they are checked like the API's: a bad one is error 7 naming it.
    let e = pod_call(
        "ADD",
        "ctr-c",
        "bad",
        "u-bad",
        "node-a",
        &with_runtime_annotations(&bare, json!({"kube-ipam.ip": "10.188.0.300"})),
    )
    .err(7);
    assert!(
        e.contains("pod annotation kube-ipam.ip") && e.contains("10.188.0.300"),
        "{e}"
    );
    consistent(&s, &conf);
}
