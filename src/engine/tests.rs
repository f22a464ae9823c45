//! Engine properties over the in-memory store.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

use kube_ipam_store::spy::Spy;
use kube_ipam_store::{Holder, Keys, LeaseStore, MemoryStore};
use proptest::prelude::*;

use super::pool::{to_u128, Pool};
use super::{AddRequest, Allocator, Wanted};
use crate::config::{IpamConf, Range, RangeSet, RequestedIp};

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn ipam(sets: Vec<Vec<Range>>) -> IpamConf {
    IpamConf {
        ipam_type: "kube-ipam".into(),
        range_sets: sets.into_iter().map(|ranges| RangeSet { ranges }).collect(),
        routes: vec![],
        resolv_conf: None,
        etcd: None,
        kube_config: None,
        data_dir: PathBuf::from("/nonexistent"),
        log: crate::config::LogConf {
            file: PathBuf::from("/nonexistent.log"),
            level: "info".into(),
            max_bytes: 10 << 20,
        },
        sticky_ips: false,
        key_prefix: "/kube-ipam".into(),
        write_original_keys: false,
        call_timeout: crate::config::DEFAULT_CALL_TIMEOUT,
        node_lost_after: Some(crate::config::DEFAULT_NODE_LOST_AFTER),
        reuse_delay: std::time::Duration::ZERO,
    }
}

pub(crate) fn range(
    subnet: &str,
    start: &str,
    end: &str,
    gw: Option<&str>,
    fixed: Option<(&str, &str)>,
) -> Range {
    Range {
        subnet: subnet.parse().unwrap(),
        range_start: ip(start),
        range_end: ip(end),
        gateway: gw.map(ip),
        fixed: fixed.map(|(a, b)| (ip(a), ip(b))),
        exclude: vec![],
    }
}

fn holder(i: usize) -> Holder {
    Holder {
        container_id: format!("c{i}"),
        ifname: "eth0".into(),
        pod: None,
        node: "n1".into(),
    }
}

pub(crate) fn add(i: usize) -> AddRequest {
    AddRequest {
        holder: holder(i),
        wanted: vec![],
        sticky: false,
        pool: None,
    }
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn small_range_is_used_up_exactly_then_reported_exhausted() {
    // 10.0.0.0/29: .1 gateway, .2-.6 dynamic, .7 broadcast.
    let conf = ipam(vec![vec![range(
        "10.0.0.0/29",
        "10.0.0.1",
        "10.0.0.6",
        Some("10.0.0.1"),
        None,
    )]]);
    let a = Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf);
    rt().block_on(async {
        let mut got = BTreeSet::new();
        for i in 0..5 {
            let att = a.add(&add(i)).await.unwrap();
            assert!(got.insert(att.ips[0].address));
        }
        let want: BTreeSet<IpAddr> = ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
            .map(ip)
            .into();
        assert_eq!(got, want);
        let e = a.add(&add(99)).await.unwrap_err();
        assert_eq!(e.code(), 101);
        assert!(
            e.to_string().contains("10.0.0.0/29 10.0.0.1-10.0.0.6"),
            "{e}"
        );
        assert!(e.to_string().contains("5 addresses"), "{e}");
        a.status().await.unwrap_err();
        // Release one: exactly that address comes back, to the next caller.
        let freed = a.release("c3", "eth0").await.unwrap().unwrap();
        a.status().await.unwrap();
        let again = a.add(&add(100)).await.unwrap();
        assert_eq!(again.ips[0].address, freed.ips[0].address);
    });
}

#[test]
fn add_is_idempotent_and_del_twice_is_fine() {
    let conf = ipam(vec![vec![range(
        "10.1.0.0/16",
        "10.1.0.1",
        "10.1.255.254",
        None,
        None,
    )]]);
    let a = Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf);
    rt().block_on(async {
        let first = a.add(&add(1)).await.unwrap();
        let second = a.add(&add(1)).await.unwrap();
        assert_eq!(first, second);
        assert!(a.release("c1", "eth0").await.unwrap().is_some());
        assert!(a.release("c1", "eth0").await.unwrap().is_none());
        assert!(a.attachments().await.unwrap().is_empty());
    });
}

#[test]
fn fixed_addresses_are_checked_and_reserved() {
    let conf = ipam(vec![vec![range(
        "10.188.0.0/16",
        "10.188.1.0",
        "10.188.255.254",
        Some("10.188.0.1"),
        Some(("10.188.0.10", "10.188.0.255")),
    )]]);
    let a = Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf);
    let want = |i: usize, s: &str| AddRequest {
        holder: holder(i),
        wanted: vec![Wanted {
            source: "CNI_ARGS IP".into(),
            ip: RequestedIp {
                address: ip(s),
                prefix_len: None,
            },
            mask_source: None,
            gateway: None,
        }],
        sticky: false,
        pool: None,
    };
    rt().block_on(async {
        let att = a.add(&want(1, "10.188.0.216")).await.unwrap();
        assert_eq!(att.ips[0].address, ip("10.188.0.216"));
        assert_eq!(att.ips[0].prefix_len, 16);
        let busy = a.add(&want(2, "10.188.0.216")).await.unwrap_err();
        assert_eq!(busy.code(), 11);
        assert!(busy.to_string().contains("container c1"), "{busy}");
        for (addr, why) in [
            ("10.188.0.5", "fixed zone"),
            ("10.188.0.1", "gateway"),
            ("10.189.0.5", "not in any configured subnet"),
        ] {
            let e = a.add(&want(3, addr)).await.unwrap_err();
            assert_eq!(e.code(), 7, "{addr}");
            assert!(
                e.to_string().contains(addr) && e.to_string().contains(why),
                "{e}"
            );
            assert!(e.to_string().contains("CNI_ARGS IP"), "{e}");
        }
        // Nothing was reserved by the refused requests.
        assert_eq!(a.attachments().await.unwrap().len(), 1);
        // Inside the dynamic range is fine too (host-local and CONVENTIONS.md), and the
        // address is then taken for everyone.
        let att = a.add(&want(4, "10.188.1.5")).await.unwrap();
        assert_eq!(att.ips[0].address, ip("10.188.1.5"));
        let busy = a.add(&want(5, "10.188.1.5")).await.unwrap_err();
        assert_eq!(busy.code(), 11, "{busy}");
        a.release("c4", "eth0").await.unwrap();
        a.release("c1", "eth0").await.unwrap();
        assert_eq!(
            a.add(&want(2, "10.188.0.216")).await.unwrap().ips[0].address,
            ip("10.188.0.216")
        );
    });
}

#[test]
fn dual_stack_gets_one_address_per_set_in_one_commit() {
    let conf = ipam(vec![
        vec![range(
            "10.2.0.0/24",
            "10.2.0.1",
            "10.2.0.254",
            Some("10.2.0.1"),
            None,
        )],
        vec![range(
            "fd00::/64",
            "fd00::1",
            "fd00::ffff:ffff:ffff:ffff",
            Some("fd00::1"),
            None,
        )],
    ]);
    let a = Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf);
    rt().block_on(async {
        let att = a.add(&add(1)).await.unwrap();
        assert_eq!(att.ips.len(), 2);
        assert!(att.ips[0].address.is_ipv4() && att.ips[1].address.is_ipv6());
        assert_eq!(att.ips[1].prefix_len, 64);
        let (f, t) = a.keys().ips();
        assert_eq!(a.store().range(&f, &t, 0).await.unwrap().len(), 2);
    });
}

#[test]
fn stale_release_never_frees_a_reassigned_address() {
    let conf = ipam(vec![vec![range(
        "10.3.0.0/30",
        "10.3.0.1",
        "10.3.0.2",
        Some("10.3.0.1"),
        None,
    )]]);
    let a = Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf);
    rt().block_on(async {
        let first = a.add(&add(1)).await.unwrap();
        let (seen, rev) = a.attachment("c1", "eth0").await.unwrap().unwrap();
        a.release("c1", "eth0").await.unwrap();
        let second = a.add(&add(2)).await.unwrap();
        assert_eq!(first.ips[0].address, second.ips[0].address);
        // A late GC pass acting on what it read before: nothing happens.
        assert!(!a
            .release_seen(&seen, rev, super::Release::Park)
            .await
            .unwrap());
        assert_eq!(a.attachment("c2", "eth0").await.unwrap().unwrap().0, second);
        let freed = a.gc(&[]).await.unwrap();
        assert_eq!(freed.len(), 1);
    });
}

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Del(usize),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    // Any sequence of ADD and DEL: no address twice, never outside the dynamic range, never a
    // hole, and the records mirror the model exactly.
    #[test]
    fn random_add_del_sequences_keep_every_invariant(
        len in 2u32..40,
        gw_at in 0u32..40,
        fixed in proptest::option::of((0u32..40, 0u32..6)),
        ops in proptest::collection::vec(prop_oneof![(0usize..30).prop_map(Op::Add), (0usize..30).prop_map(Op::Del)], 1..120),
    ) {
        let base = 0x0a05_0000u32;
        let a4 = |v: u32| std::net::Ipv4Addr::from(base + v).to_string();
        let r = range(
            "10.5.0.0/24",
            &a4(1),
            &a4(len),
            Some(&a4(gw_at.min(254))),
            fixed.map(|(f, w)| (a4(f.min(254)), a4((f + w).min(254)))).as_ref().map(|(x, y)| (x.as_str(), y.as_str())),
        );
        let pool = Pool::new(&r);
        let conf = ipam(vec![vec![r]]);
        let alloc = Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf);
        let mut model: HashMap<usize, IpAddr> = HashMap::new();
        rt().block_on(async {
            for op in ops {
                match op {
                    Op::Add(i) => match alloc.add(&add(i)).await {
                        Ok(att) => {
                            let addr = att.ips[0].address;
                            if let Some(prev) = model.get(&i) {
                                prop_assert_eq!(*prev, addr, "idempotent ADD moved");
                            }
                            prop_assert!(pool.contains_dynamic(to_u128(addr)), "{} outside range or in a hole", addr);
                            prop_assert!(model.iter().all(|(k, v)| *k == i || *v != addr), "{} handed out twice", addr);
                            model.insert(i, addr);
                        }
                        Err(e) => {
                            prop_assert_eq!(e.code(), 101);
                            prop_assert_eq!(model.len() as u128, pool.size(), "exhausted while free");
                        }
                    },
                    Op::Del(i) => {
                        let freed = alloc.release(&format!("c{i}"), "eth0").await.unwrap();
                        prop_assert_eq!(freed.map(|f| f.ips[0].address), model.remove(&i));
                    }
                }
                let (f, t) = alloc.keys().ips();
                let held = alloc.store().count(&f, &t).await.unwrap();
                prop_assert_eq!(held as usize, model.len());
            }
            Ok(())
        })?;
    }
}

#[test]
fn verify_finds_records_without_owners_and_owners_without_records() {
    use kube_ipam_store::{Compare, Mutation};
    let conf = ipam(vec![vec![range(
        "10.6.0.0/24",
        "10.6.0.1",
        "10.6.0.200",
        None,
        None,
    )]]);
    let a = Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf);
    rt().block_on(async {
        let att = a.add(&add(1)).await.unwrap();
        a.add(&add(2)).await.unwrap();
        assert!(a.verify().await.unwrap().is_empty());
        // Drop c1's address record behind the engine's back, and plant an orphan record
        // outside the dynamic range, where no allocation can collide with it.
        let key = a.keys().ip(att.ips[0].address);
        assert!(a
            .store()
            .commit(&[], &[Mutation::Delete(key)])
            .await
            .unwrap());
        let stray = a.keys().ip(ip("10.6.0.250"));
        let rec = kube_ipam_store::records::encode(&kube_ipam_store::IpRecord {
            network: a.keys().network().into(),
            holder: holder(9),
            kind: kube_ipam_store::Kind::Dynamic,
            range: "x".into(),
            created: 0,
        });
        assert!(a
            .store()
            .commit(
                &[Compare::Absent(stray.clone())],
                &[Mutation::Put(stray, rec)]
            )
            .await
            .unwrap());
        let problems = a.verify().await.unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("10.6.0.250") && p.contains("no owner record")));
        assert!(problems.iter().any(
            |p| p.contains(&att.ips[0].address.to_string()) && p.contains("no address record")
        ));
    });
}

#[test]
fn requests_as_host_local_reads_them() {
    let conf = ipam(vec![vec![range(
        "10.188.0.0/16",
        "10.188.1.0",
        "10.188.1.254",
        None,
        None,
    )]]);
    let a = Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf);
    let w = |s: &str, len: Option<u8>| Wanted {
        source: "runtimeConfig.ips".into(),
        ip: RequestedIp {
            address: ip(s),
            prefix_len: len,
        },
        mask_source: None,
        gateway: None,
    };
    let req = |i: usize, wanted: Vec<Wanted>| AddRequest {
        holder: holder(i),
        wanted,
        sticky: false,
        pool: None,
    };
    rt().block_on(async {
        // Anywhere in the subnet without a fixed zone; the same address twice counts once; a
        // prefix length that differs from the subnet's is ignored.
        let att = a
            .add(&req(
                1,
                vec![w("10.188.7.7", Some(24)), w("10.188.7.7", None)],
            ))
            .await
            .unwrap();
        assert_eq!(att.ips.len(), 1);
        assert_eq!(att.ips[0].address, ip("10.188.7.7"));
        assert_eq!(att.ips[0].prefix_len, 16);
        // The same ADD again gets the same answer; asking for another address is an error
        // naming both, and changes nothing.
        assert_eq!(
            a.add(&req(1, vec![w("10.188.7.7", None)])).await.unwrap(),
            att
        );
        assert_eq!(a.add(&req(1, vec![])).await.unwrap(), att);
        let e = a
            .add(&req(1, vec![w("10.188.7.8", None)]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 7);
        let text = e.to_string();
        assert!(
            text.contains("10.188.7.8") && text.contains("10.188.7.7"),
            "{text}"
        );
        assert_eq!(a.attachments().await.unwrap().len(), 1);
        // Two different addresses for one range set cannot both be given.
        let e = a
            .add(&req(2, vec![w("10.188.7.9", None), w("10.188.7.10", None)]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("second address"), "{e}");
        assert_eq!(a.attachments().await.unwrap().len(), 1);
    });
}

#[test]
fn gc_goes_on_past_an_unreadable_record_and_reports_it() {
    let conf = ipam(vec![vec![range(
        "10.0.0.0/24",
        "10.0.0.10",
        "10.0.0.99",
        None,
        None,
    )]]);
    let keys = Keys::new("/k", "n");
    let a = Allocator::new(MemoryStore::new(), keys.clone(), &conf);
    rt().block_on(async {
        for i in 1..=3 {
            a.add(&add(i)).await.unwrap();
        }
        // An owner record that is not one: between c1 and c2 in key order.
        let bad = keys.owner("c1x", "eth0");
        let put = [kube_ipam_store::Mutation::Put(
            bad.clone(),
            b"{not json".to_vec(),
        )];
        assert!(a.store().commit(&[], &put).await.unwrap());
        let keep = [crate::config::AttachmentRef {
            container_id: "c3".into(),
            ifname: "eth0".into(),
        }];
        let e = a.gc(&keep).await.unwrap_err();
        assert_eq!(e.code(), 103, "{e}");
        let text = e.to_string();
        assert!(text.contains("released 2") && text.contains(&bad), "{text}");
        // c1 and c2 were freed all the same; c3 is kept; the bad record is left for an operator.
        let left: Vec<String> = a
            .store()
            .range(&keys.owners().0, &keys.owners().1, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(left, [bad, keys.owner("c3", "eth0")]);
    });
}

#[test]
fn a_set_is_used_up_range_by_range_in_order() {
    // One window, two windows, then one window past the part a range behind is first
    // glimpsed at: every kind of first step, and the way on from each once it is full.
    let conf = ipam(vec![vec![
        range("10.4.0.0/29", "10.4.0.2", "10.4.0.6", None, None),
        range("10.5.0.0/21", "10.5.0.10", "10.5.7.250", None, None),
        range("10.6.0.0/24", "10.6.0.1", "10.6.0.200", None, None),
    ]]);
    let a = Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf);
    let which = |v: IpAddr| match v {
        IpAddr::V4(v4) => usize::from(v4.octets()[1]) - 4,
        IpAddr::V6(_) => usize::MAX,
    };
    rt().block_on(async {
        let total = 5 + (0x0507fa - 0x05000a + 1) + 200;
        let mut got = BTreeSet::new();
        let mut last = 0;
        for i in 0..total {
            let v = a.add(&add(i)).await.unwrap().ips[0].address;
            assert!(got.insert(v), "{v} handed out twice");
            let r = which(v);
            assert!(
                r >= last && r < 3,
                "ADD {i} got {v} from range {r} after {last}"
            );
            last = r;
        }
        let e = a.add(&add(total)).await.unwrap_err();
        assert_eq!(e.code(), 101, "{e}");
        // A freed address of the last range is found behind the two full ones.
        let freed = a.release(&format!("c{}", total - 1), "eth0").await.unwrap();
        let freed = freed.unwrap().ips[0].address;
        assert_eq!(which(freed), 2);
        assert_eq!(a.add(&add(total)).await.unwrap().ips[0].address, freed);
    });
}

#[test]
fn a_range_behind_a_full_one_costs_no_round_trip() {
    let small = || range("10.8.0.0/24", "10.8.0.1", "10.8.0.254", None, None);
    let big = range("10.7.0.0/16", "10.7.0.1", "10.7.255.254", None, None);
    let trips_of_an_add = |conf: IpamConf, fill: Option<Range>| {
        let store = std::sync::Arc::new(Spy::default());
        let a = Allocator::new(store.clone(), Keys::new("/k", "n"), &conf);
        rt().block_on(async {
            if let Some(r) = fill {
                let p = Pool::new(&r);
                let all: Vec<kube_ipam_store::Mutation> = (p.start..=p.end)
                    .map(|v| kube_ipam_store::Mutation::Put(a.keys().ip(p.addr(v)), vec![]))
                    .collect();
                store.inner().commit(&[], &all).await.unwrap();
            }
            // The first ADD finds the full range full, and says so in its hints.
            a.add(&add(1)).await.unwrap();
            store.take();
            let v = a.add(&add(2)).await.unwrap().ips[0].address;
            assert!(v.to_string().starts_with("10.8.0."), "{v}");
            store.take().trips
        })
    };
    let alone = trips_of_an_add(ipam(vec![vec![small()]]), None);
    let behind = trips_of_an_add(ipam(vec![vec![big.clone(), small()]]), Some(big));
    assert_eq!(
        behind, alone,
        "round trips of an ADD behind a full /16, and alone"
    );
}
