//! Moving in from the original plugin on real etcd: its `used/` keys, written here as it
//! writes them (IPv4 dotted, IPv6 compressed), are never handed out again, are imported
//! once, and are freed by their containers' DEL whatever interface name it carries.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_etcd::{EtcdOptions, EtcdStore};
use kube_ipam_store::{Keys, LeaseStore, Mutation};
use serde_json::{json, Value};
use support::{call, cli, Scratch};

const NET: &str = "moving-in";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Dual stack: 10.77.0.2-.30 dynamic (29), 10.77.0.100-.120 fixed; fd77::2-fd77::40 dynamic.
fn conf(s: &Scratch, etcd: &EtcdServer) -> String {
    json!({
        "cniVersion": "1.0.0", "name": NET, "type": "macvlan", "master": "eth0",
        "ipam": {
            "type": "kube-ipam",
            "etcdConfig": {"etcdURL": etcd.endpoint()},
            "logFile": s.log_file(), "dataDir": s.data_dir(),
            "ranges": [
                [{"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.2", "rangeEnd": "10.77.0.30",
                  "gateway": "10.77.0.1", "fixedStart": "10.77.0.100", "fixedEnd": "10.77.0.120"}],
                [{"subnet": "fd77::/120", "rangeStart": "fd77::2", "rangeEnd": "fd77::40"}]
            ]
        }
    })
    .to_string()
}

/// Every key in etcd with its value and revision: the whole state, to compare before/after.
fn snapshot(opts: &EtcdOptions) -> BTreeMap<String, (Vec<u8>, u64)> {
    rt().block_on(async {
        let store = EtcdStore::connect(opts.clone()).await.expect("connect");
        store
            .range("/", "0", 0)
            .await
            .expect("range")
            .into_iter()
            .map(|e| (e.key, (e.value, e.revision)))
            .collect()
    })
}

/// Writes the original plugin's `used/` keys: `(address as Go spells it, container id)`.
fn original_holds(opts: &EtcdOptions, held: &[(String, String)]) {
    rt().block_on(async {
        let store = EtcdStore::connect(opts.clone()).await.expect("connect");
        let puts: Vec<Mutation> = held
            .iter()
            .map(|(ip, id)| {
                Mutation::Put(
                    format!("/etcd-cni/networks/{NET}/used/{ip}"),
                    id.as_bytes().to_vec(),
                )
            })
            .collect();
        assert!(store.commit(&[], &puts).await.expect("put"));
    })
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .map(|i| {
            i["address"]
                .as_str()
                .expect("address")
                .split('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn import(conf: &Path, extra: &[&str]) -> (i32, String) {
    let conf = conf.to_str().expect("utf-8");
    let mut args = vec!["import", "--conf", conf, "--from", "original"];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(&args);
    (code, format!("{out}{err}"))
}

#[test]
fn original_allocations_are_never_reused_then_imported_and_freed_by_del() {
    let etcd = EtcdServer::start().expect("etcd");
    let opts = etcd.options();
    let s = Scratch::new();
    let conf = conf(&s, &etcd);
    let conf_path = s.path().join("net.conf");
    std::fs::write(&conf_path, &conf).expect("write conf");

    // The original's pods: old0..old24 each hold 10.77.0.(2+i) and fd77::(2+i), compressed
    // the way Go writes it, plus one address outside every range.
    let mut legacy: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut keys = Vec::new();
    for i in 0..25u32 {
        let id = format!("old{i}");
        let v4 = format!("10.77.0.{}", 2 + i);
        let v6 = format!("fd77::{:x}", 2 + i);
        keys.push((v4.clone(), id.clone()));
        keys.push((v6.clone(), id.clone()));
        legacy.insert(id, vec![v4, v6]);
    }
    keys.push(("10.99.0.5".into(), "old-outside".into()));
    original_holds(&opts, &keys);
    let legacy_addrs: BTreeSet<&String> = legacy.values().flatten().collect();

    // A pod of kube-ipam at a fixed address, which a node of the original then also gave out.
    let fixed = call(
        "ADD",
        "kube0",
        "eth0",
        &[("CNI_ARGS", "IP=10.77.0.110")],
        &conf,
    )
    .ok();
    assert_eq!(addresses(&fixed)[0], "10.77.0.110");
    original_holds(&opts, &[("10.77.0.110".into(), "old-dup".into())]);

    // Four v4 addresses are free; every ADD gets one of them, never a legacy one.
    let mut given = BTreeSet::new();
    for i in 0..4 {
        let r = call("ADD", &format!("new{i}"), "eth0", &[], &conf).ok();
        for a in addresses(&r) {
            assert!(
                !legacy_addrs.contains(&a),
                "ADD returned {a}, held by the original"
            );
            assert!(given.insert(a.clone()), "{a} given twice");
        }
    }
    // The rest of the v4 range is the original's: full, and nothing written for the caller.
    let before = snapshot(&opts);
    let full = call("ADD", "new-too-many", "eth0", &[], &conf);
    let details = full.err(101);
    assert!(details.contains("10.77.0.0/24"), "{details}");
    assert_eq!(snapshot(&opts), before, "a refused ADD changed the store");

    // A dry run says what it would do and does nothing.
    let (code, out) = import(&conf_path, &["--dry-run"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("would import 50"), "{out}");
    assert_eq!(snapshot(&opts), before, "a dry run changed the store");

    // The import: 25 containers, two addresses each; the duplicate is a conflict left alone,
    // the outside address refused; both make the exit code 1.
    let (code, out) = import(&conf_path, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("imported 50, already there 0, conflicts 1, outside every range 1"),
        "{out}"
    );
    assert!(
        out.contains("conflict: 10.77.0.110 of container old-dup"),
        "{out}"
    );
    assert!(out.contains("container kube0 (eth0"), "{out}");
    let (code, ls, err) = cli(&[
        "ls",
        "--conf",
        conf_path.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&ls).expect("ls prints JSON");
    let holder = |a: &str| {
        rows.iter()
            .find(|r| r["address"] == a)
            .map(|r| r["container"].clone())
    };
    assert_eq!(holder("10.77.0.110"), Some(json!("kube0")));
    assert_eq!(holder("fd77::a"), Some(json!("old8")));
    assert_eq!(rows.len(), 2 * (25 + 5));
    assert_eq!(support::check_store(&conf_path), 25 + 5);

    // Again: nothing changes, not even a revision.
    let imported = snapshot(&opts);
    let (code, out) = import(&conf_path, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("imported 0, already there 50, conflicts 1"),
        "{out}"
    );
    assert_eq!(
        snapshot(&opts),
        imported,
        "a second import changed the store"
    );

    // Each old container's DEL, with whatever interface name its runtime sends, frees
    // exactly its addresses and the original's keys for them.
    for (n, (id, addrs)) in legacy.iter().enumerate().take(5) {
        let ifname = ["eth0", "net1", "eth1", "macvlan0", "eth0"][n];
        let before = snapshot(&opts);
        call("DEL", id, ifname, &[], &conf).quiet();
        let after = snapshot(&opts);
        let gone: BTreeSet<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
        let used: BTreeSet<String> = addrs
            .iter()
            .map(|a| format!("/etcd-cni/networks/{NET}/used/{a}"))
            .collect();
        assert!(used.iter().all(|k| gone.contains(k)), "{id}: {gone:?}");
        assert_eq!(
            gone.len(),
            2 + 2 + 1,
            "{id} freed more or less than its own: {gone:?}"
        );
        // Only its own addresses' cooling marks are new (reuseDelay).
        let marks: BTreeSet<String> = addrs
            .iter()
            .map(|a| Keys::new("/kube-ipam", NET).cool(a.parse().expect("address")))
            .collect();
        assert!(
            after
                .iter()
                .all(|(k, v)| before.get(k) == Some(v) || marks.contains(k)),
            "{id}'s DEL changed someone else's record"
        );
        // A second DEL finds nothing and succeeds.
        call("DEL", id, ifname, &[], &conf).quiet();
    }
    // Exactly those five v4 addresses came free: five ADDs get them, the sixth is refused.
    let freed: BTreeSet<String> = legacy.values().take(5).map(|a| a[0].clone()).collect();
    let mut got = BTreeSet::new();
    for i in 0..5 {
        got.insert(
            addresses(&call("ADD", &format!("late{i}"), "eth0", &[], &conf).ok())[0].clone(),
        );
    }
    assert_eq!(got, freed);
    call("ADD", "late-too-many", "eth0", &[], &conf).err(101);
    support::check_store(&conf_path);
}
