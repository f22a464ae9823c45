//! Many plugin processes at once on one embedded store, as kubelet does during a burst.

mod support;

use std::collections::BTreeSet;

use serde_json::json;
use support::Scratch;

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
