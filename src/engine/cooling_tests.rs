//! The reuse delay against the hints: an address released in a range the hints call full is
//! found through its cooling mark, with or without a delay now.

use std::sync::Arc;

use kube_ipam_store::{Keys, LeaseStore, MemoryStore};

use super::tests::{add, ipam, range, rt};
use super::Allocator;

/// A /16 of two windows' worth of dynamic addresses, so that the search goes through hints.
fn setup(delay_secs: u64) -> Allocator<Arc<MemoryStore>> {
    on(Arc::new(MemoryStore::new()), delay_secs)
}

/// The same network on `store`, with a delay of `delay_secs`.
fn on(store: Arc<MemoryStore>, delay_secs: u64) -> Allocator<Arc<MemoryStore>> {
    let conf = ipam(vec![vec![range(
        "10.30.0.0/16",
        "10.30.0.1",
        "10.30.7.254",
        Some("10.30.0.1"),
        None,
    )]]);
    let mut a = Allocator::new(store, Keys::new("/k", "n"), &conf);
    a.reuse_delay_secs = delay_secs;
    a
}

#[test]
fn an_address_released_behind_full_hints_is_found_through_its_mark() {
    let a = setup(30);
    rt().block_on(async {
        let size = a.pools().next().unwrap().size() as usize;
        for i in 0..size {
            a.add(&add(i)).await.unwrap();
        }
        // The search that finds it full writes the hints that say so.
        assert_eq!(a.add(&add(size)).await.unwrap_err().code(), 101);
        let (from, to) = a.keys().hints();
        assert!(a.store().count(&from, &to).await.unwrap() > 0);
        // A release with a delay leaves the hints and a mark: the next ADD finds the address.
        let freed = a.release("c17", "eth0").await.unwrap().unwrap().ips[0].address;
        assert!(a.store().count(&from, &to).await.unwrap() > 0, "hints kept");
        assert!(a
            .store()
            .get(&a.keys().cool(freed))
            .await
            .unwrap()
            .is_some());
        a.status().await.unwrap();
        let got = a.add(&add(size)).await.unwrap();
        assert_eq!(got.ips[0].address, freed);
        assert!(
            a.store()
                .get(&a.keys().cool(freed))
                .await
                .unwrap()
                .is_none(),
            "mark gone"
        );
        assert_eq!(a.add(&add(size + 1)).await.unwrap_err().code(), 101);
        assert!(a.verify().await.unwrap().is_empty());
    });
}

#[test]
fn a_mark_left_from_a_delay_since_turned_off_still_finds_its_address() {
    let delayed = setup(30);
    rt().block_on(async {
        let size = delayed.pools().next().unwrap().size() as usize;
        for i in 0..size {
            delayed.add(&add(i)).await.unwrap();
        }
        assert_eq!(delayed.add(&add(size)).await.unwrap_err().code(), 101);
        let freed = delayed.release("c3", "eth0").await.unwrap().unwrap().ips[0].address;
        // The same store, the delay turned off in the config.
        let off = on(delayed.store().clone(), 0);
        assert_eq!(off.add(&add(size)).await.unwrap().ips[0].address, freed);
    });
}
