//! The original plugin's records beside ours, on the memory store: guarded claims, imports
//! of unknown interfaces, and the rolling-upgrade mirror.

use std::collections::BTreeSet;
use std::net::IpAddr;

use kube_ipam_store::{Compare, Holder, Keys, LeaseStore, MemoryStore, Mutation, OriginalKeys};

use super::pod_tests::sticky;
use super::tests::{ipam, range, rt};
use super::{AddRequest, Allocator, Imported, Wanted};
use crate::config::{AttachmentRef, RequestedIp};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn add(id: &str) -> AddRequest {
    AddRequest {
        holder: Holder {
            container_id: id.into(),
            ifname: "eth0".into(),
            pod: None,
            node: "n1".into(),
        },
        wanted: vec![],
        sticky: false,
        pool: None,
    }
}

/// 10.9.0.2-.6 dynamic, .20-.30 fixed.
fn small(write: bool) -> Allocator<MemoryStore> {
    let mut conf = ipam(vec![vec![range(
        "10.9.0.0/24",
        "10.9.0.2",
        "10.9.0.6",
        Some("10.9.0.1"),
        Some(("10.9.0.20", "10.9.0.30")),
    )]]);
    conf.write_original_keys = write;
    Allocator::new(MemoryStore::new(), Keys::new("/k", "n"), &conf)
}

async fn original_holds(store: &MemoryStore, addr: &str, container: &str) {
    let key = OriginalKeys::new("n").used(ip(addr));
    store
        .commit(&[], &[Mutation::Put(key, container.as_bytes().to_vec())])
        .await
        .unwrap();
}

async fn original_has(store: &MemoryStore, addr: &str) -> bool {
    let key = OriginalKeys::new("n").used(ip(addr));
    !store.commit(&[Compare::Absent(key)], &[]).await.unwrap()
}

#[test]
fn addresses_the_original_holds_are_never_given_then_the_range_is_full() {
    let a = small(false);
    rt().block_on(async {
        for v in ["10.9.0.2", "10.9.0.3", "10.9.0.5", "10.9.0.6"] {
            original_holds(a.store(), v, "old").await;
        }
        let got = a.add(&add("c1")).await.unwrap();
        assert_eq!(got.ips[0].address, ip("10.9.0.4"));
        let e = a.add(&add("c2")).await.unwrap_err();
        assert_eq!(e.code(), 101, "{e}");
        // A fixed address the original holds is someone's: try again later, naming it.
        let mut fixed = add("c3");
        original_holds(a.store(), "10.9.0.21", "oldfixed").await;
        fixed.wanted = vec![Wanted {
            source: "CNI_ARGS IP".into(),
            ip: RequestedIp {
                address: ip("10.9.0.21"),
                prefix_len: None,
            },
            mask_source: None,
            gateway: None,
        }];
        let e = a.add(&fixed).await.unwrap_err();
        assert_eq!(e.code(), 11, "{e}");
        assert!(e.to_string().contains("oldfixed"), "{e}");
        assert!(a.attachment("c3", "eth0").await.unwrap().is_none());
    });
}

#[test]
fn an_import_of_unknown_interface_is_released_by_any_interface_and_frees_the_original_key() {
    let a = small(false);
    rt().block_on(async {
        for v in ["10.9.0.2", "10.9.0.3"] {
            original_holds(a.store(), v, "old").await;
        }
        let holder = Holder {
            container_id: "old".into(),
            ifname: String::new(),
            pod: None,
            node: String::new(),
        };
        let addrs = [ip("10.9.0.2"), ip("10.9.0.3")];
        let done = a.import(&holder, &addrs, false, false).await.unwrap();
        assert!(done.iter().all(|(_, o)| *o == Imported::New), "{done:?}");
        let again = a.import(&holder, &addrs, false, false).await.unwrap();
        assert!(
            again.iter().all(|(_, o)| *o == Imported::AlreadyThere),
            "{again:?}"
        );
        assert!(a.verify().await.unwrap().is_empty());
        a.check(&add("old").holder, &addrs).await.unwrap();
        // GC keeps it while any interface of the container is alive.
        let alive = [AttachmentRef {
            container_id: "old".into(),
            ifname: "net1".into(),
        }];
        assert!(a.gc(&alive).await.unwrap().is_empty());
        let freed = a.release("old", "net1").await.unwrap().unwrap();
        assert_eq!(freed.ips.len(), 2);
        assert!(!original_has(a.store(), "10.9.0.2").await);
        assert!(!original_has(a.store(), "10.9.0.3").await);
        // Both are free again: the whole dynamic range goes to new pods.
        let mut got = BTreeSet::new();
        for i in 0..5 {
            got.insert(a.add(&add(&format!("new{i}"))).await.unwrap().ips[0].address);
        }
        assert!(got.contains(&ip("10.9.0.2")) && got.contains(&ip("10.9.0.3")));
        assert_eq!(a.add(&add("one-too-many")).await.unwrap_err().code(), 101);
    });
}

#[test]
fn mirror_writes_the_original_key_with_the_claim_and_deletes_it_with_the_release() {
    let a = small(true);
    rt().block_on(async {
        let got = a.add(&add("c1")).await.unwrap().ips[0].address;
        let key = OriginalKeys::new("n").used(got);
        let e = a
            .store()
            .get(&key)
            .await
            .unwrap()
            .expect("used key written");
        assert_eq!(e.value, b"c1");
        a.release("c1", "eth0").await.unwrap().unwrap();
        assert!(a.store().get(&key).await.unwrap().is_none());
        // A key the original wrote for someone else is not ours to delete.
        let got = a.add(&add("c2")).await.unwrap().ips[0].address;
        let key = OriginalKeys::new("n").used(got);
        a.store()
            .commit(&[], &[Mutation::Put(key.clone(), b"other".to_vec())])
            .await
            .unwrap();
        a.release("c2", "eth0").await.unwrap().unwrap();
        assert!(a.store().get(&key).await.unwrap().is_some());
    });
}

#[test]
fn a_sticky_address_the_original_gave_away_meanwhile_is_replaced_and_mirrored_when_kept() {
    rt().block_on(async {
        let a = small(true);
        let first = a.add(&sticky("c1", "web-0", "u1")).await.unwrap();
        let kept = first.ips[0].address;
        // Parked between lives: the mirrored key goes, so the pod's next claim can write it.
        a.release("c1", "eth0").await.unwrap().unwrap();
        assert!(!original_has(a.store(), &kept.to_string()).await);
        let again = a.add(&sticky("c2", "web-0", "u2")).await.unwrap();
        assert_eq!(again.ips[0].address, kept);
        assert!(original_has(a.store(), &kept.to_string()).await);
        // Parked again, and a node of the original hands the address out meanwhile: the
        // pod gets another address rather than a twin.
        a.release("c2", "eth0").await.unwrap().unwrap();
        original_holds(a.store(), &kept.to_string(), "old").await;
        let moved = a.add(&sticky("c3", "web-0", "u3")).await.unwrap();
        assert_ne!(moved.ips[0].address, kept);
        assert!(a.verify().await.unwrap().is_empty());
    });
}
