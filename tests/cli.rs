//! The operator CLI through the binary, over the embedded store and real etcd.

mod support;

use kube_ipam_etcd::testing::EtcdServer;
use serde_json::{json, Value};
use support::{call, cli, Scratch};

/// A conflist holding the kube-ipam config, as it sits in /etc/cni/net.d.
fn setup(etcd: Option<&EtcdServer>) -> (Scratch, String, String) {
    let s = Scratch::new();
    let mut ipam =
        json!({"subnet": "10.70.0.0/24", "rangeStart": "10.70.0.10", "rangeEnd": "10.70.0.19"});
    if let Some(e) = etcd {
        ipam["etcdConfig"] = json!({"etcdURL": e.endpoint()});
    }
    let conf = s.conf("1.0.0", ipam);
    let plugin: Value = serde_json::from_str(&conf).unwrap();
    let list =
        json!({"cniVersion": "1.0.0", "name": "testnet", "plugins": [plugin, {"type": "portmap"}]});
    let path = s.path().join("10-test.conflist");
    std::fs::write(&path, list.to_string()).unwrap();
    (s, conf, path.display().to_string())
}

#[test]
fn ls_and_usage_json_field_by_field() {
    ls_and_usage(None);
}

#[test]
fn ls_and_usage_on_etcd() {
    let etcd = EtcdServer::start().expect("etcd");
    ls_and_usage(Some(&etcd));
}

fn ls_and_usage(etcd: Option<&EtcdServer>) {
    let (_s, conf, path) = setup(etcd);
    let a = call(
        "ADD",
        "ctr-a",
        "eth0",
        &[
            (
                "CNI_ARGS",
                "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=db-0;K8S_POD_UID=u-1",
            ),
            ("KUBE_IPAM_NODE", "node-1"),
        ],
        &conf,
    )
    .ip();
    let b = call(
        "ADD",
        "ctr-b",
        "net1",
        &[("KUBE_IPAM_NODE", "node-2")],
        &conf,
    )
    .ip();

    let (code, out, err) = cli(&["ls", "--conf", &path, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 2);
    let row_a = rows
        .iter()
        .find(|r| r["address"] == a.as_str())
        .expect("row of a");
    assert_eq!(row_a["kind"], "dynamic");
    assert_eq!(row_a["pod"], "prod/db-0");
    assert_eq!(row_a["podUid"], "u-1");
    assert_eq!(row_a["container"], "ctr-a");
    assert_eq!(row_a["ifname"], "eth0");
    assert_eq!(row_a["node"], "node-1");
    assert_eq!(row_a["parked"], false);
    assert_eq!(row_a["range"], "10.70.0.0/24 10.70.0.10-10.70.0.19");
    assert!(row_a["created"].as_u64().unwrap() > 0);
    assert!(row_a["ageSeconds"].as_u64().unwrap() < 600);
    let row_b = rows
        .iter()
        .find(|r| r["address"] == b.as_str())
        .expect("row of b");
    assert_eq!(row_b["pod"], Value::Null);
    assert_eq!(row_b["ifname"], "net1");

    let (_, out, _) = cli(&[
        "ls", "--conf", &path, "--output", "json", "--node", "node-2",
    ]);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["container"], "ctr-b");
    let (_, out, _) = cli(&[
        "ls",
        "--conf",
        &path,
        "--output",
        "json",
        "--pod",
        "prod/db-0",
    ]);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 1);
    let (_, out, _) = cli(&["ls", "--conf", &path]);
    assert!(out.contains("prod/db-0") && out.contains(&a), "{out}");

    let (code, out, _) = cli(&["usage", "--conf", &path, "--output", "json"]);
    assert_eq!(code, 0);
    let u: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0]["range"], "10.70.0.0/24 10.70.0.10-10.70.0.19");
    assert_eq!(u[0]["size"], "10");
    assert_eq!(u[0]["used"], "2");
    assert_eq!(u[0]["free"], "8");
    assert_eq!(u[0]["percent"], 20.0);
    let (code, out, _) = cli(&["check-store", "--conf", &path]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("consistent: 2 attachments"), "{out}");
    let (_, out, _) = cli(&["usage", "--conf", &path]);
    assert!(
        out.contains("20.0%") && out.contains("[####................]"),
        "{out}"
    );
}

#[test]
fn show_and_release_on_the_embedded_store() {
    show_and_release(None);
}

#[test]
fn show_and_release_on_etcd() {
    let etcd = EtcdServer::start().expect("etcd");
    show_and_release(Some(&etcd));
}

fn show_and_release(etcd: Option<&EtcdServer>) {
    let (_s, conf, path) = setup(etcd);
    let a = call(
        "ADD",
        "ctr-a",
        "eth0",
        &[("CNI_ARGS", "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=db-0")],
        &conf,
    )
    .ip();
    let (_, out, _) = cli(&["show", "--conf", &path, &a]);
    assert!(
        out.contains("held by pod prod/db-0") && out.contains("ctr-a"),
        "{out}"
    );
    let (_, out, _) = cli(&["show", "--conf", &path, "10.70.0.200"]);
    assert!(out.contains("10.70.0.200: free"), "{out}");
    let (code, out, err) = cli(&["release", "--conf", &path, &a]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("released from pod prod/db-0"), "{out}");
    let (_, out, _) = cli(&["show", "--conf", &path, &a]);
    assert!(out.contains("free"), "{out}");
    // The attachment is gone with it: ADD of the same container starts afresh.
    let mut prev: Value = serde_json::from_str(&conf).unwrap();
    prev["prevResult"] = json!({"cniVersion": "1.0.0", "ips": []});
    assert!(call("CHECK", "ctr-a", "eth0", &[], &prev.to_string())
        .err(102)
        .contains("holds no address"));
}

#[test]
fn config_check_and_examples() {
    let s = Scratch::new();
    let bad = s.path().join("bad.conf");
    std::fs::write(
        &bad,
        json!({"cniVersion": "1.0.0", "name": "x", "type": "macvlan", "ipam": {"type": "kube-ipam", "subnet": "10.1.0.1/16", "rangeStart": "10.2.0.1", "etcdConfig": {"etcdURL": "ftp://h:1"}}}).to_string(),
    )
    .unwrap();
    let (code, out, _) = cli(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        out.contains("10.1.0.1/16") && out.contains("ftp://h:1"),
        "{out}"
    );
    assert!(out.lines().count() >= 2, "{out}");

    for kind in ["macvlan", "ipvlan", "bridge", "multus"] {
        let (code, out, err) = cli(&["config", "example", "--type", kind]);
        assert_eq!(code, 0, "{err}");
        // The runtime passes the pod's annotations, sparing the API a lookup per ADD.
        let doc: serde_json::Value = serde_json::from_str(&out).expect("example is JSON");
        let main = if kind == "multus" {
            &doc["delegates"][0]
        } else {
            &doc
        };
        assert_eq!(
            main["capabilities"]["io.kubernetes.cri.pod-annotations"], true,
            "{kind}: {out}"
        );
        let file = s.path().join(format!("{kind}.conf"));
        std::fs::write(&file, &out).unwrap();
        let (_, out, _) = cli(&["config", "check", file.to_str().unwrap()]);
        // The examples name the files of a real node; here only their absence is reported.
        for line in out.lines().filter(|l| !l.ends_with(": ok")) {
            assert!(
                line.contains("cannot be read"),
                "{kind} example does not pass its own check: {out}"
            );
        }
    }
}

#[test]
fn config_check_reads_the_files_the_config_names() {
    let s = Scratch::new();
    let resolv = s.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.96.0.10\n").unwrap();
    let conf = |kubeconfig: &str| {
        json!({"cniVersion": "1.0.0", "name": "x", "type": "macvlan", "ipam": {
            "type": "kube-ipam", "subnet": "10.1.0.0/16", "resolvConf": resolv,
            "kubeConfig": kubeconfig,
        }})
        .to_string()
    };
    let file = s.path().join("net.conf");
    std::fs::write(&file, conf(resolv.to_str().unwrap())).unwrap();
    let (code, out, _) = cli(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let missing = s.path().join("nope.kubeconfig");
    std::fs::write(&file, conf(missing.to_str().unwrap())).unwrap();
    let (code, out, _) = cli(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ipam.kubeConfig") && out.contains("nope.kubeconfig"),
        "{out}"
    );
}

#[test]
fn read_only_commands_never_create_a_store() {
    let s = Scratch::new();
    let conf = s.conf("1.0.0", json!({"subnet": "10.2.0.0/24"}));
    let file = s.path().join("net.conf");
    std::fs::write(&file, &conf).unwrap();
    let f = file.to_str().unwrap();
    for args in [
        vec!["ls", "--conf", f],
        vec!["usage", "--conf", f],
        vec!["show", "--conf", f, "10.2.0.5"],
        vec!["check-store", "--conf", f],
    ] {
        let (code, out, err) = cli(&args);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(
            err.contains("testnet") && err.contains(s.data_dir().to_str().unwrap()),
            "{args:?}: {err}"
        );
        assert!(!s.data_dir().exists(), "{args:?} created a store");
    }
}

#[test]
fn an_unreadable_record_is_shown_and_can_be_removed() {
    let etcd = EtcdServer::start().expect("etcd");
    let (_s, conf, path) = setup(Some(&etcd));
    let good = call("ADD", "ctr-a", "eth0", &[], &conf).ip();
    // A record that is not one, at an address of the range.
    let bad_ip = if good == "10.70.0.15" {
        "10.70.0.16"
    } else {
        "10.70.0.15"
    };
    let key = kube_ipam_store::Keys::new("/kube-ipam", "testnet").ip(bad_ip.parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use kube_ipam_store::{LeaseStore, Mutation};
        let store = kube_ipam_etcd::EtcdStore::connect(etcd.options())
            .await
            .unwrap();
        let put = [Mutation::Put(key.clone(), b"\x00 not a record".to_vec())];
        assert!(store.commit(&[], &put).await.unwrap());
    });
    // ls goes on past it, in both outputs.
    let (code, out, err) = cli(&["ls", "--conf", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&good) && out.contains(bad_ip) && out.contains("UNREADABLE"),
        "{out}"
    );
    let (code, out, err) = cli(&["ls", "--conf", &path, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{out}");
    assert!(
        rows[0]["unreadable"].is_string() || rows[1]["unreadable"].is_string(),
        "{out}"
    );
    // show says what it is, and how to remove it.
    let (code, out, _) = cli(&["show", "--conf", &path, bad_ip]);
    assert_eq!(code, 1);
    assert!(
        out.contains("unreadable") && out.contains("release"),
        "{out}"
    );
    let (code, out, err) = cli(&["release", "--conf", &path, bad_ip]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"), "{out}");
    let (_, out, _) = cli(&["show", "--conf", &path, bad_ip]);
    assert!(out.contains("free"), "{out}");
    support::check_store(std::path::Path::new(&path));
}

#[test]
fn show_outside_every_subnet_and_usage_of_fixed_addresses() {
    let (_s, conf, path) = setup(None);
    // A fixed address inside the dynamic range and one outside it, named before the dynamic
    // ADD so that its random pick cannot take the first one.
    call(
        "ADD",
        "ctr-f1",
        "eth0",
        &[("CNI_ARGS", "IP=10.70.0.12")],
        &conf,
    )
    .ip();
    call(
        "ADD",
        "ctr-f2",
        "eth0",
        &[("CNI_ARGS", "IP=10.70.0.50")],
        &conf,
    )
    .ip();
    call("ADD", "ctr-a", "eth0", &[], &conf).ip();
    let (code, out, err) = cli(&["show", "--conf", &path, "192.0.2.7"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("192.0.2.7") && err.contains("10.70.0.0/24"),
        "{err}"
    );
    let (code, out, err) = cli(&["usage", "--conf", &path, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["fixed"], 2, "{out}");
    // ctr-a and the fixed 10.70.0.12 fill two of the ten dynamic addresses.
    assert_eq!(v[0]["used"], "2", "{out}");
    assert_eq!(v[0]["free"], "8", "{out}");
    let (_, out, _) = cli(&["usage", "--conf", &path]);
    assert!(out.contains("FIXED"), "{out}");
}
