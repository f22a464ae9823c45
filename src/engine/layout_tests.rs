//! Moving a network's records of the per-network layout into the store's shared space.

use std::sync::Arc;

use kube_ipam_store::records::encode;
use kube_ipam_store::{
    AttachedIp, Attachment, IpRecord, Keys, Kind, LeaseStore, MemoryStore, Mutation,
};

use super::pod_tests::holder;
use super::tests::{ip, ipam, range, rt};
use super::Allocator;

fn network(store: Arc<MemoryStore>, name: &str) -> Allocator<Arc<MemoryStore>> {
    let conf = ipam(vec![vec![range(
        "10.5.0.0/24",
        "10.5.0.2",
        "10.5.0.200",
        Some("10.5.0.1"),
        None,
    )]]);
    Allocator::new(store, Keys::new("/k", name), &conf)
}

/// The attachment `container` of network `keys` holding `addr`, written as the per-network
/// layout kept it: the record under the network, without the network's name in it.
fn old_attachment(keys: &Keys, container: &str, addr: &str) -> Vec<Mutation> {
    let h = holder(container, container, "u");
    let record = IpRecord {
        network: String::new(),
        holder: h.clone(),
        kind: Kind::Dynamic,
        range: "10.5.0.0/24 10.5.0.2-10.5.0.200".into(),
        created: 1,
    };
    let att = Attachment {
        holder: h,
        ips: vec![AttachedIp {
            address: ip(addr),
            prefix_len: 24,
            gateway: None,
            kind: Kind::Dynamic,
            range: record.range.clone(),
        }],
        created: 1,
    };
    vec![
        Mutation::Put(keys.network_ip(ip(addr)), encode(&record)),
        Mutation::Put(keys.owner(container, "eth0"), encode(&att)),
        // A hint of that layout, under the network too.
        Mutation::Put(
            format!("/k/{}/hint/4/0/0a050000", keys.network()),
            b"full".to_vec(),
        ),
    ]
}

#[test]
fn the_old_records_move_in_once_and_a_doubly_held_address_is_reported() {
    let store = Arc::new(MemoryStore::new());
    let n = network(store.clone(), "n");
    let m = network(store.clone(), "m");
    rt().block_on(async {
        // m, already in the shared space, holds 10.5.0.9; n held it too, in its own keys.
        let mut writes = Vec::new();
        for (c, a) in [("c1", "10.5.0.7"), ("c2", "10.5.0.8"), ("c3", "10.5.0.9")] {
            writes.extend(old_attachment(n.keys(), c, a));
        }
        writes.extend(old_attachment(m.keys(), "m1", "10.5.0.9"));
        store.commit(&[], &writes).await.unwrap();
        m.settle_layout(false).await.unwrap();

        // Two calls of n settle at once: every record moves exactly once.
        let (x, y) = tokio::join!(n.settle_layout(true), n.settle_layout(true));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.moved + y.moved, 2, "{x:?} {y:?}");
        assert_eq!(x.held_twice + y.held_twice, 1, "{x:?} {y:?}");
        let (from, to) = n.keys().network_ips();
        assert_eq!(store.count(&from, &to).await.unwrap(), 0);
        let (from, to) = n.keys().network_hints();
        assert_eq!(
            store.count(&from, &to).await.unwrap(),
            0,
            "old hints dropped"
        );
        // The moved records name their network; m's stays m's.
        let rec: IpRecord = kube_ipam_store::records::decode(
            "k",
            &store
                .get(&n.keys().ip(ip("10.5.0.7")))
                .await
                .unwrap()
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(rec.network, "n");
        let v = n.verify_store().await.unwrap();
        assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
        assert!(
            v.problems[0].contains("10.5.0.9 is held twice"),
            "{:?}",
            v.problems
        );
        assert!(m.verify_store().await.unwrap().problems.is_empty());

        // Nothing left to do: one request, nothing moved.
        assert_eq!(n.settle_layout(false).await.unwrap(), Default::default());
        // The doubly held attachment of n goes: both networks are clean, m keeps 10.5.0.9.
        assert!(n.release("c3", "eth0").await.unwrap().is_some());
        assert!(n.verify_store().await.unwrap().problems.is_empty());
        assert!(m.attachment("m1", "eth0").await.unwrap().is_some());
        assert!(store
            .get(&n.keys().ip(ip("10.5.0.9")))
            .await
            .unwrap()
            .is_some());
        assert!(n.release("c1", "eth0").await.unwrap().is_some());
        assert!(store
            .get(&n.keys().ip(ip("10.5.0.7")))
            .await
            .unwrap()
            .is_none());
    });
}

#[test]
fn a_claim_waits_for_a_record_still_in_the_old_layout() {
    let store = Arc::new(MemoryStore::new());
    let n = network(store.clone(), "n");
    rt().block_on(async {
        // Written by a node of the earlier release after the network was settled.
        let old = old_attachment(n.keys(), "late", "10.5.0.20");
        store.commit(&[], &old[..1]).await.unwrap();
        let req = super::AddRequest {
            holder: holder("c", "p", "u"),
            wanted: vec![super::Wanted {
                source: "CNI_ARGS IP".into(),
                ip: crate::config::RequestedIp {
                    address: ip("10.5.0.20"),
                    prefix_len: None,
                },
                mask_source: None,
                gateway: None,
            }],
            sticky: false,
            pool: None,
        };
        // Not settled yet: the claim's condition on the old key keeps it out.
        let e = n.add(&req).await.unwrap_err();
        assert_eq!(e.code(), 11, "{e}");
        // Settled, the record is in the space and the address is held there.
        n.settle_layout(false).await.unwrap();
        let e = n.add(&req).await.unwrap_err();
        assert!(e.to_string().contains("10.5.0.20 is held by"), "{e}");
    });
}
