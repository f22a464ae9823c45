//! `check-store` on etcd while ADDs and DELs run: every read of one check is pinned to one
//! revision, so it reports what is in the store, never a commit seen half way.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_etcd::EtcdStore;
use kube_ipam_store::records::encode;
use kube_ipam_store::{Compare, Holder, IpRecord, Keys, Kind, LeaseStore, Mutation};
use serde_json::json;
use support::{call, Scratch};

/// Checks run during the storm; before the reads were pinned, about half of them reported
/// problems that were not there.
const CHECKS: usize = 25;

/// Concurrent ADD/DEL loops.
const WORKERS: usize = 4;

#[test]
fn check_store_reports_nothing_false_under_a_live_add_del_storm() {
    let etcd = EtcdServer::start().expect("start etcd");
    let s = Scratch::new();
    // Sticky pods too: their DEL rewrites records as parked, a second kind of commit that a
    // check reading across revisions would see half done.
    let conf = json!({
        "cniVersion": "1.0.0", "name": "storm", "type": "bridge",
        "ipam": {
            "type": "kube-ipam",
            "subnet": "10.196.0.0/23",
            "stickyIPs": true,
            "etcdConfig": {"etcdURL": etcd.endpoint()},
            "logFile": s.log_file(),
            "dataDir": s.data_dir(),
        }
    })
    .to_string();
    let file = s.path().join("net.conf");
    std::fs::write(&file, &conf).expect("write conf");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (stop, done, conf) = (stop.clone(), done.clone(), conf.clone());
            thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("storm-{w}-{n}");
                    // Every fourth attachment stays; the others come and go under a few
                    // pod names, so their DEL parks the address for the pod and their
                    // next ADD takes it back.
                    let pod = match n % 4 {
                        0 => format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME=live-{w}-{n}"),
                        _ => format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME=p{w}-{}", n % 8),
                    };
                    let env = [("CNI_ARGS", pod.as_str())];
                    call("ADD", &id, "eth0", &env, &conf).ok();
                    if !n.is_multiple_of(4) {
                        call("DEL", &id, "eth0", &env, &conf).quiet();
                    }
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let mut false_reports = Vec::new();
    for i in 0..CHECKS {
        let before = done.load(Ordering::Relaxed);
        let (code, out, err) = support::cli(&["check-store", "--conf", file.to_str().unwrap()]);
        if code != 0 {
            false_reports.push(format!("check {i} (exit {code}): {out}{err}"));
        }
        // Each check overlapped commits, or it proves nothing.
        while done.load(Ordering::Relaxed) == before {
            thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    assert!(
        false_reports.is_empty(),
        "{} of {CHECKS} checks reported problems:\n{}",
        false_reports.len(),
        false_reports.join("\n")
    );
    let (code, out, err) =
        support::cli(&["ls", "--conf", file.to_str().unwrap(), "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("ls prints JSON");
    let live = rows.iter().filter(|r| r["parked"] == false).count();
    assert!(live >= WORKERS, "the storm left too few attachments: {out}");
    assert_eq!(support::check_store(&file), live);

    // Pinned reads still see a real problem: a record that no owner record lists, at an
    // address the storm left free (its picks are random).
    let held: Vec<&str> = rows.iter().filter_map(|r| r["address"].as_str()).collect();
    let stray = (200..=254)
        .rev()
        .map(|n| format!("10.196.1.{n}"))
        .find(|a| !held.contains(&a.as_str()))
        .expect("a free address for the stray record");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = EtcdStore::connect(etcd.options()).await.expect("connect");
        let keys = Keys::new("/kube-ipam", "storm");
        let rec = IpRecord {
            network: "storm".into(),
            holder: Holder {
                container_id: "nobody".into(),
                ifname: "eth0".into(),
                pod: None,
                node: "n".into(),
            },
            kind: Kind::Dynamic,
            range: "x".into(),
            created: 0,
        };
        let key = keys.ip(stray.parse().unwrap());
        assert!(store
            .commit(
                &[Compare::Absent(key.clone())],
                &[Mutation::Put(key, encode(&rec))]
            )
            .await
            .expect("plant a stray record"));
    });
    let (code, out, _) = support::cli(&["check-store", "--conf", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(stray.as_str()) && out.contains("no owner record lists it"),
        "{out}"
    );
}

/// The exit code alone tells a consistent store (0) from one with problems (1, each on
/// stdout) and from one that could not be read (2, the reason on stderr): here etcd
/// stopped with SIGSTOP, which answers nothing. An address nobody holds is no error.
#[test]
fn exit_codes_tell_problems_from_a_store_that_cannot_be_read() {
    let mut etcd = EtcdServer::start().expect("start etcd");
    let s = Scratch::new();
    let (conf, file) = s.etcd_network(
        "codes",
        json!({"etcdURL": etcd.endpoint(), "dialTimeout": 1, "requestTimeout": 1}),
        json!({"subnet": "10.203.0.0/24"}),
    );
    let f = file.to_str().unwrap();
    let held = call("ADD", "c1", "eth0", &[], &conf).ip();
    let free = if held == "10.203.0.9" {
        "10.203.0.8"
    } else {
        "10.203.0.9"
    };

    let (code, out, err) = support::cli(&["check-store", "--conf", f]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "consistent: 1 attachments\n", "")
    );
    for args in [["show", "--conf", f, free], ["release", "--conf", f, free]] {
        let (code, out, err) = support::cli(&args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(out.contains("free"), "{args:?}: {out}");
    }

    // A record at the free address that no owner record lists.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = EtcdStore::connect(etcd.options()).await.expect("connect");
        let rec = IpRecord {
            network: "codes".into(),
            holder: Holder {
                container_id: "nobody".into(),
                ifname: "eth0".into(),
                pod: None,
                node: "n".into(),
            },
            kind: Kind::Dynamic,
            range: "x".into(),
            created: 0,
        };
        let key = Keys::new("/kube-ipam", "codes").ip(free.parse().unwrap());
        let put = [Mutation::Put(key, encode(&rec))];
        assert!(store.commit(&[], &put).await.expect("plant"));
    });
    let (code, out, err) = support::cli(&["check-store", "--conf", f]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(free) && out.contains("no owner record lists it"),
        "{out}"
    );
    assert!(err.is_empty(), "{err}");

    etcd.freeze().expect("SIGSTOP etcd");
    for args in [
        vec!["check-store", "--conf", f],
        vec!["ls", "--conf", f],
        vec!["usage", "--conf", f],
        vec!["show", "--conf", f, &held],
        vec!["release", "--conf", f, &held],
    ] {
        let (code, out, err) = support::cli(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
        assert!(err.contains(&etcd.endpoint()), "{args:?}: {err}");
    }
    etcd.thaw().expect("SIGCONT etcd");
    let (code, out, _) = support::cli(&["check-store", "--conf", f]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(support::held(&file).get("c1"), Some(&held));
}
