//! Addresses a range never hands out (`exclude`), and a delay before a released address goes
//! to another attachment (`reuseDelay`), through the binary on both stores.

mod support;

use std::collections::BTreeSet;

use kube_ipam_etcd::testing::EtcdServer;
use serde_json::{json, Value};
use support::{call, cli, Scratch};

fn conf(s: &Scratch, etcd: Option<&EtcdServer>, ipam: Value) -> String {
    let mut ipam = ipam;
    if let Some(e) = etcd {
        ipam["etcdConfig"] = json!({"etcdURL": e.endpoint()});
    }
    s.conf("1.0.0", ipam)
}

fn path(s: &Scratch, conf: &str) -> String {
    let p = s.path().join("net.conf");
    std::fs::write(&p, conf).unwrap();
    p.display().to_string()
}

/// 10.90.0.0/27 without .5, .8-.15 and .30: 30 usable (.1 is the gateway) less 10.
fn excluding(s: &Scratch, etcd: Option<&EtcdServer>) -> String {
    conf(
        s,
        etcd,
        json!({"subnet": "10.90.0.0/27", "exclude": ["10.90.0.5", "10.90.0.8/29", "10.90.0.30"],
               "reuseDelay": 0}),
    )
}

fn excluded_addresses_are_never_handed_out(etcd: Option<&EtcdServer>) {
    let s = Scratch::new();
    let c = excluding(&s, etcd);
    let mut got = BTreeSet::new();
    loop {
        let out = call("ADD", &format!("c{}", got.len()), "eth0", &[], &c);
        if out.code != 0 {
            let e = out.err(101);
            assert!(e.contains("19"), "the size left out what is excluded: {e}");
            break;
        }
        assert!(got.insert(out.ip()));
    }
    let want: BTreeSet<String> = (2..=30)
        .filter(|i| *i != 5 && !(8..=15).contains(i) && *i != 30)
        .map(|i| format!("10.90.0.{i}"))
        .collect();
    assert_eq!(got, want);
    // Asked for by name, from any source: error 7 naming exclude and the address.
    for (i, (source, addr)) in [("CNI_ARGS", "IP=10.90.0.12"), ("CNI_ARGS", "IP=10.90.0.30")]
        .into_iter()
        .enumerate()
    {
        let e = call("ADD", &format!("named{i}"), "eth0", &[(source, addr)], &c).err(7);
        assert!(e.contains("exclude") && e.contains(&addr[3..]), "{e}");
    }
    let mut runtime: Value = serde_json::from_str(&c).unwrap();
    runtime["runtimeConfig"] = json!({"ips": ["10.90.0.5/27"]});
    let e = call("ADD", "named-rt", "eth0", &[], &runtime.to_string()).err(7);
    assert!(e.contains("exclude") && e.contains("10.90.0.5"), "{e}");
    // usage leaves them out of the range's size.
    let p = path(&s, &c);
    let (code, out, err) = cli(&["usage", "--conf", &p, "--output", "json"]);
    assert_eq!(code, 0, "{err}");
    let u: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (u[0]["size"].as_str(), u[0]["free"].as_str()),
        (Some("19"), Some("0")),
        "{u}"
    );
    support::check_store(std::path::Path::new(&p));
}

#[test]
fn excluded_addresses_are_never_handed_out_on_the_embedded_store() {
    excluded_addresses_are_never_handed_out(None);
}

#[test]
fn excluded_addresses_are_never_handed_out_on_etcd() {
    let etcd = EtcdServer::start().expect("etcd");
    excluded_addresses_are_never_handed_out(Some(&etcd));
}

#[test]
fn config_check_refuses_an_exclusion_outside_the_subnet() {
    let s = Scratch::new();
    let c = conf(
        &s,
        None,
        json!({"subnet": "10.90.0.0/27", "exclude": ["10.91.0.5"]}),
    );
    let p = path(&s, &c);
    let (code, out, _) = cli(&["config", "check", &p]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ipam.exclude[0]") && out.contains("10.91.0.5"),
        "{out}"
    );
    call("ADD", "c", "eth0", &[], &c).err(7);
}

/// 10.91.0.0/29: gateway .1, dynamic .2 to .6, with the default reuse delay of 30 s.
fn reuse_waits_while_others_are_free(etcd: Option<&EtcdServer>) {
    let s = Scratch::new();
    let c = conf(&s, etcd, json!({"subnet": "10.91.0.0/29"}));
    // Three held, then released again: two never used remain.
    let first: Vec<String> = (0..3)
        .map(|i| call("ADD", &format!("a{i}"), "eth0", &[], &c).ip())
        .collect();
    for i in 0..3 {
        call("DEL", &format!("a{i}"), "eth0", &[], &c).quiet();
    }
    // The two never used go first, whichever the random spot.
    let fresh: Vec<String> = (0..2)
        .map(|i| call("ADD", &format!("b{i}"), "eth0", &[], &c).ip())
        .collect();
    for ip in &fresh {
        assert!(
            !first.contains(ip),
            "{ip} was released a moment ago: {first:?} {fresh:?}"
        );
    }
    // Only the released ones are free now: they go at once, the longest released first,
    // rather than a 101.
    let reused: Vec<String> = (0..3)
        .map(|i| call("ADD", &format!("c{i}"), "eth0", &[], &c).ip())
        .collect();
    assert_eq!(reused, first, "handed out in the order they were released");
    call("ADD", "d", "eth0", &[], &c).err(101);
    // An address asked for by name is not delayed.
    call("DEL", "c0", "eth0", &[], &c).quiet();
    let named = call(
        "ADD",
        "e",
        "eth0",
        &[("CNI_ARGS", &format!("IP={}", first[0]))],
        &c,
    )
    .ip();
    assert_eq!(named, first[0]);
    support::check_store(std::path::Path::new(&path(&s, &c)));
}

#[test]
fn a_released_address_waits_while_others_are_free_on_the_embedded_store() {
    reuse_waits_while_others_are_free(None);
}

#[test]
fn a_released_address_waits_while_others_are_free_on_etcd() {
    let etcd = EtcdServer::start().expect("etcd");
    reuse_waits_while_others_are_free(Some(&etcd));
}

#[test]
fn without_a_reuse_delay_a_released_address_may_go_at_once() {
    let s = Scratch::new();
    let c = conf(&s, None, json!({"subnet": "10.92.0.0/29", "reuseDelay": 0}));
    // With one address, every release is followed by its reuse, whatever the delay; with
    // five, a delay keeps the released one out, no delay lets the random pick take it: over
    // enough rounds it comes back.
    let mut again = 0;
    for round in 0..80 {
        let ip = call("ADD", &format!("r{round}"), "eth0", &[], &c).ip();
        call("DEL", &format!("r{round}"), "eth0", &[], &c).quiet();
        let next = call("ADD", &format!("s{round}"), "eth0", &[], &c).ip();
        call("DEL", &format!("s{round}"), "eth0", &[], &c).quiet();
        if next == ip {
            again += 1;
        }
    }
    assert!(
        again > 0,
        "with reuseDelay 0 a released address never came back at once"
    );
    let delayed = Scratch::new();
    let d = conf(&delayed, None, json!({"subnet": "10.92.0.0/29"}));
    for round in 0..2 {
        let ip = call("ADD", &format!("r{round}"), "eth0", &[], &d).ip();
        call("DEL", &format!("r{round}"), "eth0", &[], &d).quiet();
        let next = call("ADD", &format!("s{round}"), "eth0", &[], &d).ip();
        assert_ne!(
            next, ip,
            "round {round}: reused at once although four were free"
        );
        call("DEL", &format!("s{round}"), "eth0", &[], &d).quiet();
    }
}
