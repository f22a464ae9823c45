//! One address, one holder, whatever network asks: networks that use the same store share its
//! address space, on etcd and on the embedded store; a store written before that layout is
//! taken over by the new binary with pods still holding their addresses.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kube_ipam_etcd::testing::EtcdServer;
use kube_ipam_store::{LeaseStore, Mutation};
use serde_json::{json, Value};
use std::process::Child;

use support::pods::{conf_file as file, listed};
use support::{call, cli, Out, Scratch};

/// Where the networks of a test keep their records.
enum Store {
    Embedded,
    Etcd(Box<EtcdServer>),
}

impl Store {
    fn start(etcd: bool) -> Store {
        match etcd {
            true => Store::Etcd(Box::new(EtcdServer::start().expect("etcd"))),
            false => Store::Embedded,
        }
    }
}

/// The network `name` on `store` (in `s`'s data directory), with `ipam` over the defaults.
fn net(s: &Scratch, store: &Store, name: &str, ipam: Value) -> String {
    let mut block = json!({
        "type": "kube-ipam",
        "dataDir": s.data_dir(),
        "logFile": s.log_file(),
        "logLevel": "debug",
    });
    if let Store::Etcd(e) = store {
        block["etcdConfig"] = json!({"etcdURL": e.endpoint()});
    }
    support::merge(&mut block, ipam);
    json!({"cniVersion": "1.1.0", "name": name, "type": "bridge", "ipam": block}).to_string()
}

/// Container -> address of the live attachments (parked addresses have no container).
fn held(s: &Scratch, conf: &str) -> std::collections::BTreeMap<String, String> {
    let mut held = std::collections::BTreeMap::new();
    for r in listed(s, conf).iter().filter(|r| r["parked"] != true) {
        let container = r["container"].as_str().expect("container").to_owned();
        let addr = r["address"].as_str().expect("address").to_owned();
        assert!(held.insert(container, addr).is_none(), "{r}");
    }
    held
}

fn check(s: &Scratch, conf: &str) -> usize {
    support::check_store(&file(s, conf))
}

fn usage(s: &Scratch, conf: &str) -> Value {
    support::pods::usage(s, conf)[0].clone()
}

/// 10.62.0.0/29: gateway .1, dynamic .2 to .6.
const SUBNET: &str = "10.62.0.0/29";

fn two_networks_share_a_subnet(etcd: bool) {
    let store = Store::start(etcd);
    let s = Scratch::new();
    let a = net(&s, &store, "tenant-a", json!({"subnet": SUBNET}));
    let b = net(&s, &store, "tenant-b", json!({"subnet": SUBNET}));

    // The two networks take turns until the subnet is full; every address goes once.
    let mut got: Vec<String> = Vec::new();
    for i in 0..4 {
        for (conf, who) in [(&a, "a"), (&b, "b")] {
            let out = call("ADD", &format!("{who}{i}"), "eth0", &[], conf);
            if out.code == 0 {
                got.push(out.ip());
            } else {
                out.err(101);
            }
        }
    }
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(distinct.len(), 5, "an address went twice: {got:?}");
    for conf in [&a, &b] {
        let e = call("ADD", "late", "eth0", &[], conf).err(101);
        assert!(e.contains(SUBNET), "{e}");
    }
    let (held_a, held_b) = (held(&s, &a), held(&s, &b));
    assert_eq!(held_a.len() + held_b.len(), 5);
    assert!(held_a.keys().all(|c| c.starts_with('a')), "{held_a:?}");
    assert!(held_b.keys().all(|c| c.starts_with('b')), "{held_b:?}");
    assert_eq!(check(&s, &a), held_a.len());
    assert_eq!(check(&s, &b), held_b.len());

    // Asked for by name, an address of the other network is held, and says by whom.
    let theirs = held_b.values().next().expect("b holds one");
    let e = call(
        "ADD",
        "named",
        "eth0",
        &[("CNI_ARGS", &format!("IP={theirs}"))],
        &a,
    )
    .err(11);
    assert!(e.contains(theirs) && e.contains("network tenant-b"), "{e}");

    // usage counts the other network's addresses as taken, not as its own.
    let u = usage(&s, &a);
    assert_eq!(u["free"], "0", "{u}");
    assert_eq!(u["dynamic"].as_u64(), Some(held_a.len() as u64), "{u}");
    assert_eq!(
        u["otherNetworks"].as_u64(),
        Some(held_b.len() as u64),
        "{u}"
    );

    // The CNI GC verb of tenant-a, with nothing valid, releases tenant-a's attachments only.
    let mut gc: Value = serde_json::from_str(&a).unwrap();
    gc["cni.dev/valid-attachments"] = json!([]);
    call("GC", "gc", "eth0", &[], &gc.to_string()).quiet();
    assert!(held(&s, &a).is_empty());
    assert_eq!(held(&s, &b), held_b);
    assert_eq!(check(&s, &b), held_b.len());
    // What tenant-a gave back, tenant-b can take now.
    let next = call("ADD", "b-next", "eth0", &[], &b).ip();
    assert!(
        held_a.values().any(|v| *v == next),
        "{next} was not tenant-a's"
    );

    // A network with a store of its own starts afresh.
    let s2 = Scratch::new();
    let apart = match &store {
        Store::Etcd(_) => net(
            &s,
            &store,
            "tenant-c",
            json!({"subnet": SUBNET, "keyPrefix": "/apart"}),
        ),
        Store::Embedded => net(&s2, &store, "tenant-c", json!({"subnet": SUBNET})),
    };
    for i in 0..5 {
        call("ADD", &format!("c{i}"), "eth0", &[], &apart).ip();
    }
    call("ADD", "c5", "eth0", &[], &apart).err(101);
    for conf in [&a, &b] {
        check(&s, conf);
    }
}

#[test]
fn networks_sharing_a_subnet_on_the_embedded_store_hand_out_each_address_once() {
    two_networks_share_a_subnet(false);
}

#[test]
fn networks_sharing_a_subnet_on_etcd_hand_out_each_address_once() {
    two_networks_share_a_subnet(true);
}

/// The networks of the fixture (tests/fixtures/upgrade/README.md).
fn fixture_net(s: &Scratch, store: &Store, name: &str) -> String {
    let subnet = match name {
        "old-a" => "10.70.1.0/28",
        "old-b" => "10.70.2.0/28",
        _ => "10.70.3.0/28",
    };
    net(s, store, name, json!({"subnet": subnet, "stickyIPs": true}))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

/// Puts the fixture's store in place: the data directory, or every key into etcd.
fn plant(s: &Scratch, store: &Store) {
    match store {
        Store::Embedded => {
            std::fs::create_dir_all(s.data_dir()).unwrap();
            let ok = std::process::Command::new("tar")
                .arg("-xzf")
                .arg(fixtures().join("store-per-network.tgz"))
                .arg("-C")
                .arg(s.data_dir())
                .status()
                .expect("tar");
            assert!(ok.success());
        }
        Store::Etcd(etcd) => {
            let dump: std::collections::BTreeMap<String, String> = serde_json::from_slice(
                &std::fs::read(fixtures().join("etcd-per-network.json")).unwrap(),
            )
            .unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let st = kube_ipam_etcd::EtcdStore::connect(etcd.options())
                    .await
                    .unwrap();
                let puts: Vec<Mutation> = dump
                    .into_iter()
                    .map(|(k, v)| Mutation::Put(k, v.into_bytes()))
                    .collect();
                assert!(st.commit(&[], &puts).await.unwrap());
            });
        }
    }
}

/// What the fixture's network held, as the earlier release recorded it, read before the new
/// binary touches the store: container -> address, and the addresses kept for parked pods.
fn recorded(s: &Scratch, store: &Store, network: &str) -> (Vec<(String, String)>, Vec<String>) {
    let entries: Vec<(String, Vec<u8>)> = match store {
        Store::Etcd(_) => {
            let dump: std::collections::BTreeMap<String, String> = serde_json::from_slice(
                &std::fs::read(fixtures().join("etcd-per-network.json")).unwrap(),
            )
            .unwrap();
            dump.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
        }
        Store::Embedded => {
            let old = kube_ipam_sqlite::SqliteStore::open(
                &s.data_dir().join(network),
                std::time::Duration::from_secs(5),
            )
            .expect("the earlier release's database");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(old.range("/", "~", 0))
                .unwrap()
                .into_iter()
                .map(|e| (e.key, e.value))
                .collect()
        }
    };
    let mut owners = Vec::new();
    let mut kept = Vec::new();
    for (k, v) in entries {
        let Some(rest) = k.strip_prefix(&format!("/kube-ipam/{network}/")) else {
            continue;
        };
        let v: Value = serde_json::from_slice(&v).unwrap();
        let first = v["ips"][0]["address"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(owner) = rest.strip_prefix("owner/") {
            owners.push((owner.split('/').next().unwrap().to_owned(), first));
        } else if rest.starts_with("pod/") {
            kept.push(first);
        }
    }
    let parked = kept
        .into_iter()
        .filter(|ip| !owners.iter().any(|(_, o)| o == ip))
        .collect();
    (owners, parked)
}

fn upgrade(etcd: bool) {
    let store = Store::start(etcd);
    let s = Scratch::new();
    plant(&s, &store);
    let (want_a, parked) = recorded(&s, &store, "old-a");
    assert_eq!(
        (want_a.len(), parked.len()),
        (4, 1),
        "{want_a:?} {parked:?}"
    );
    let (want_b, _) = recorded(&s, &store, "old-b");
    let old_a = fixture_net(&s, &store, "old-a");
    let old_b = fixture_net(&s, &store, "old-b");

    // The operator commands see the old records at once: the first of them moves them in.
    let listed = held(&s, &old_a);
    for (c, ip) in &want_a {
        assert_eq!(listed.get(c), Some(ip), "{listed:?}");
    }
    assert_eq!(check(&s, &old_a), 4);
    assert_eq!(check(&s, &old_b), 2);
    assert_eq!(held(&s, &old_b).len(), want_b.len());

    // New attachments get only what nobody holds, the parked address of db-0 included.
    let mut taken: BTreeSet<String> = want_a.iter().map(|(_, ip)| ip.clone()).collect();
    taken.extend(parked.iter().cloned());
    let mut new = Vec::new();
    loop {
        let out = call("ADD", &format!("n{}", new.len()), "eth0", &[], &old_a);
        if out.code != 0 {
            out.err(101);
            break;
        }
        let ip = out.ip();
        assert!(!taken.contains(&ip), "{ip} handed out again");
        assert!(taken.insert(ip.clone()));
        new.push(ip);
    }
    assert_eq!(
        taken.len(),
        13,
        "10.70.1.0/28 has 13 dynamic addresses: {taken:?}"
    );
    // db-0 comes back and gets its parked address; the old pods' DELs free theirs.
    let args = "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=db-0;K8S_POD_UID=u10";
    let back = call("ADD", "ap2", "eth0", &[("CNI_ARGS", args)], &old_a).ip();
    assert_eq!(back, parked[0]);
    for (c, _) in &want_a {
        call("DEL", c, "eth0", &[], &old_a).quiet();
    }
    assert!(want_a
        .iter()
        .all(|(c, _)| !held(&s, &old_a).contains_key(c)));
    check(&s, &old_a);

    // Two networks that both held 10.70.3.5: it stays held, twice, and check-store says so
    // until one of the two attachments goes.
    let dup_a = fixture_net(&s, &store, "dup-a");
    let dup_b = fixture_net(&s, &store, "dup-b");
    let reports: Vec<(i32, String)> = [&dup_a, &dup_b]
        .iter()
        .map(|c| {
            let f = file(&s, c);
            let (code, out, _) = cli(&["check-store", "--conf", f.to_str().unwrap()]);
            (code, out)
        })
        .collect();
    let twice: Vec<&(i32, String)> = reports.iter().filter(|(c, _)| *c == 1).collect();
    assert_eq!(twice.len(), 1, "{reports:?}");
    assert!(
        twice[0].1.contains("10.70.3.5 is held twice"),
        "{reports:?}"
    );
    let e = call("ADD", "dx", "eth0", &[("CNI_ARGS", "IP=10.70.3.5")], &dup_a).err(11);
    assert!(e.contains("10.70.3.5"), "{e}");
    // The holder whose record stayed in its own network goes: both are clean.
    let (loser, container) = if reports[0].0 == 1 {
        (&dup_a, "da")
    } else {
        (&dup_b, "db")
    };
    call("DEL", container, "eth0", &[], loser).quiet();
    check(&s, &dup_a);
    check(&s, &dup_b);
    let out: Out = call("ADD", "dx", "eth0", &[("CNI_ARGS", "IP=10.70.3.5")], loser);
    out.err(11);

    if let Store::Embedded = store {
        // The old databases are out of the way, each under a name that says where it went.
        for n in ["old-a", "old-b", "dup-a", "dup-b"] {
            assert!(!s.data_dir().join(n).exists(), "{n} still in place");
            let moved = format!("{n}{}", kube_ipam_sqlite::ADOPTED_SUFFIX);
            assert!(s.data_dir().join(moved).exists(), "{n} not kept aside");
        }
    }
}

#[test]
fn a_store_of_the_per_network_layout_is_taken_over_on_the_embedded_store() {
    upgrade(false);
}

#[test]
fn a_store_of_the_per_network_layout_is_taken_over_on_etcd() {
    upgrade(true);
}

#[test]
fn a_mistyped_network_name_is_an_error_of_the_operator_commands() {
    let store = Store::Embedded;
    let s = Scratch::new();
    let a = net(&s, &store, "tenant-a", json!({"subnet": SUBNET}));
    call("ADD", "a0", "eth0", &[], &a).ip();
    let typo = net(&s, &store, "tenant-aa", json!({"subnet": SUBNET}));
    let f = file(&s, &typo);
    let (code, _, err) = cli(&["ls", "--conf", f.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no network \"tenant-aa\""), "{err}");
}

/// Many processes of two networks at once on one store, some of them killed mid-call: no
/// address is ever held by both networks, each network's store is consistent, and once every
/// pod is gone the whole subnet is there to hand out again.
fn two_networks_at_once_under_kills(etcd: bool) {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    let mut rng = StdRng::seed_from_u64(support::fault_seed());
    let store = Store::start(etcd);
    let s = Scratch::new();
    // 10.63.0.0/26: gateway .1, 61 dynamic addresses, shared by both.
    let nets = [
        net(&s, &store, "left", json!({"subnet": "10.63.0.0/26"})),
        net(&s, &store, "right", json!({"subnet": "10.63.0.0/26"})),
    ];
    let both = |what: &str| -> Vec<std::collections::BTreeMap<String, String>> {
        nets.iter()
            .map(|c| {
                let h = held(&s, c);
                check(&s, c);
                let all: BTreeSet<&String> = h.values().collect();
                assert_eq!(all.len(), h.len(), "{what}: {h:?}");
                h
            })
            .collect()
    };
    let started = Instant::now();
    call("ADD", "calibrate", "eth0", &[], &nets[0]).ip();
    call("DEL", "calibrate", "eth0", &[], &nets[0]).quiet();
    // Half the kills fall within two calls' time, where every call is still running; the
    // rest spread over the span of a whole batch.
    let one_call = started.elapsed() / 2;
    let early = (one_call * 2).as_millis().max(1) as u64;
    let window = (one_call * 16).as_millis().max(2) as u64;
    let mut landed = 0;
    for round in 0..5 {
        let mut running: Vec<(Instant, Child)> = (0..16)
            .map(|i| {
                let n = i % 2;
                let verb = if round > 0 && rng.random_bool(0.3) {
                    "DEL"
                } else {
                    "ADD"
                };
                let id = format!("n{n}-{}", rng.random_range(0..24));
                let child = support::spawn(verb, &id, &[], &nets[n]);
                let span = if rng.random_bool(0.5) { early } else { window };
                let at = Instant::now() + Duration::from_millis(rng.random_range(0..=span));
                (at, child)
            })
            .collect();
        running.sort_by_key(|r| r.0);
        for (at, mut child) in running {
            // The delay is the fault being injected, not a wait for anything.
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if child.try_wait().expect("try_wait").is_none() {
                let _ = child.kill();
            }
            let out = child.wait_with_output().expect("wait");
            if out.status.signal() == Some(libc::SIGKILL) {
                landed += 1;
                continue;
            }
            let out: Out = out.into();
            if out.code != 0 {
                let (code, _) = out.cni_error();
                assert!(code == 11 || code == 101, "{out:?}");
            }
        }
        let held = both(&format!("round {round}"));
        let left: BTreeSet<&String> = held[0].values().collect();
        assert!(
            held[1].values().all(|a| !left.contains(a)),
            "round {round}: an address held by both networks: {held:?}"
        );
    }
    assert!(
        landed > 0,
        "no kill landed mid-call: the test tested nothing"
    );
    // Every pod goes; then the whole subnet, every address once, across both networks.
    for (n, c) in nets.iter().enumerate() {
        for id in held(&s, c).keys() {
            call("DEL", id, "eth0", &[], c).quiet();
        }
        assert!(held(&s, c).is_empty(), "network {n}");
    }
    let mut all = BTreeSet::new();
    for i in 0..61 {
        let ip = call("ADD", &format!("after-{i}"), "eth0", &[], &nets[i % 2]).ip();
        assert!(all.insert(ip.clone()), "{ip} handed out twice");
    }
    call("ADD", "one-too-many", "eth0", &[], &nets[0]).err(101);
    both("after");
}

#[test]
fn two_networks_at_once_under_kills_on_the_embedded_store() {
    two_networks_at_once_under_kills(false);
}

#[test]
fn two_networks_at_once_under_kills_on_etcd() {
    two_networks_at_once_under_kills(true);
}

/// Fifty processes at once, half of each network, on a subnet of exactly fifty dynamic
/// addresses: every one gets an address and no two get the same, whatever network asks.
fn fifty_at_once_across_two_networks(etcd: bool) {
    let store = Store::start(etcd);
    let s = Scratch::new();
    let ipam =
        json!({"subnet": "10.64.0.0/24", "rangeStart": "10.64.0.10", "rangeEnd": "10.64.0.59"});
    let nets = [
        net(&s, &store, "east", ipam.clone()),
        net(&s, &store, "west", ipam),
    ];
    let children: Vec<_> = (0..50)
        .map(|i| support::spawn("ADD", &format!("burst-{i}"), &[], &nets[i % 2]))
        .collect();
    let mut got = BTreeSet::new();
    for child in children {
        let out = support::wait(child);
        assert!(got.insert(out.ip()), "handed out twice: {out:?}");
    }
    assert_eq!(got.len(), 50);
    for c in &nets {
        assert_eq!(check(&s, c), 25);
        call("ADD", "late", "eth0", &[], c).err(101);
    }
}

#[test]
fn fifty_at_once_across_two_networks_on_the_embedded_store() {
    fifty_at_once_across_two_networks(false);
}

#[test]
fn fifty_at_once_across_two_networks_on_etcd() {
    fifty_at_once_across_two_networks(true);
}
