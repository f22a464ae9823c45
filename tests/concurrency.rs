//! Many plugin processes at once on one embedded store, as kubelet does during a burst.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::Scratch;

/// The documented default `callTimeout`: a call answers 11 only after waiting this long.
const WAIT: Duration = Duration::from_secs(20);

#[test]
fn fifty_processes_at_once_get_fifty_distinct_addresses() {
    let s = Scratch::new();
    // Exactly 50 dynamic addresses: any duplicate would also show up as an exhausted range.
    let conf = s.conf(
        "1.0.0",
        json!({"subnet": "10.90.0.0/24", "rangeStart": "10.90.0.10", "rangeEnd": "10.90.0.59"}),
    );
    let spawn = |cmd: &str, i: usize| support::spawn(cmd, &format!("burst-{i}"), &[], &conf);
    let children: Vec<_> = (0..50).map(|i| spawn("ADD", i)).collect();
    let mut got = BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ADD failed: {stdout}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        let addr = v["ips"][0]["address"].as_str().expect("address").to_owned();
        assert!(got.insert(addr.clone()), "{addr} handed out twice");
    }
    assert_eq!(got.len(), 50);

    let children: Vec<_> = (0..50).map(|i| spawn("DEL", i)).collect();
    for child in children {
        assert!(child.wait_with_output().expect("wait").status.success());
    }
    // Everything was freed: the whole range can be handed out again.
    let children: Vec<_> = (50..100).map(|i| spawn("ADD", i)).collect();
    for child in children {
        assert!(child.wait_with_output().expect("wait").status.success());
    }
}

/// A hundred processes at once on one store, every verb that touches it and the operator's
/// `ls`, first on a network whose store does not exist yet. Each either succeeds or, past
/// its wait, answers 11 (try again later); none reports a corrupt store, no address is
/// handed out twice, and the store is consistent afterwards.
#[test]
fn hundred_processes_of_every_verb_at_once() {
    let s = Scratch::new();
    let conf = s.conf("1.0.0", json!({"subnet": "10.89.0.0/24"}));
    let file = s.path().join("net.conf");
    std::fs::write(&file, &conf).unwrap();
    let id = |i: usize| format!("many-{i}");

    // On a new network: all of them race to create the store.
    let started = Instant::now();
    let children: Vec<_> = (0..100)
        .map(|i| support::spawn("ADD", &id(i), &[], &conf))
        .collect();
    let mut held = BTreeMap::new();
    let mut results = BTreeMap::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = support::wait(child);
        if out.code == 0 {
            let ip = out.ip();
            assert!(!held.values().any(|v| *v == ip), "{ip} handed out twice");
            held.insert(id(i), ip);
            results.insert(id(i), out.json());
        } else {
            assert_eq!(out.cni_error().0, 11, "{out:?}");
            assert!(started.elapsed() >= WAIT, "11 before the wait: {out:?}");
        }
    }
    assert_eq!(support::check_store(&file), held.len());
    assert!(held.len() > 50, "only {} of 100 got through", held.len());

    // Then every verb at once: new ADDs, DELs and CHECKs of existing ones, and `ls`.
    let existing: Vec<String> = held.keys().cloned().collect();
    let started = Instant::now();
    let mut calls: Vec<(&str, String, std::process::Child)> = Vec::new();
    for i in 100..140 {
        calls.push(("ADD", id(i), support::spawn("ADD", &id(i), &[], &conf)));
    }
    for c in existing.iter().take(30) {
        calls.push(("DEL", c.clone(), support::spawn("DEL", c, &[], &conf)));
    }
    for c in existing.iter().skip(30).take(20) {
        let mut with_prev: Value = serde_json::from_str(&conf).unwrap();
        with_prev["prevResult"] = results[c].clone();
        let check = support::spawn("CHECK", c, &[], &with_prev.to_string());
        calls.push(("CHECK", c.clone(), check));
    }
    let lister = || {
        std::process::Command::new(support::BIN)
            .args(["ls", "--conf", file.to_str().unwrap(), "--output", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let listers: Vec<_> = (0..10).map(|_| lister()).collect();
    // A DEL may free an address that a concurrent ADD then gets: duplicates are judged on
    // what is held once every call has ended.
    let mut added = Vec::new();
    for (verb, c, child) in calls {
        let out = support::wait(child);
        match (out.code, verb) {
            (0, "ADD") => added.push((c, out.ip())),
            (0, "DEL") => {
                out.quiet();
                held.remove(&c);
            }
            (0, _) => out.quiet(),
            _ => {
                assert_eq!(out.cni_error().0, 11, "{verb} {c}: {out:?}");
                assert!(started.elapsed() >= WAIT, "11 before the wait: {out:?}");
            }
        }
    }
    for (c, ip) in added {
        assert!(!held.values().any(|v| *v == ip), "{ip} handed out twice");
        held.insert(c, ip);
    }
    for l in listers {
        let out = l.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("ls prints JSON");
        assert!(!rows.is_empty());
    }
    assert_eq!(support::held(&file), held);
    assert_eq!(support::check_store(&file), held.len());
}
