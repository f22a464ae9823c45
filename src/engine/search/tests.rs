//! The search against a model, and what it costs in keys read; the helpers shared with the
//! tests of each step.

use super::*;
use crate::config::Range;
use crate::engine::hints::Hint;
use kube_ipam_store::spy::{Spy, Tally};
use kube_ipam_store::{Compare, MemoryStore, Mutation};
use proptest::prelude::*;

fn pool(start: u32, end: u32, gw: Option<u32>, fixed: Option<(u32, u32)>) -> Pool {
    let ip = |v: u32| std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + v));
    Pool::new(&Range {
        subnet: "10.0.0.0/16".parse().unwrap(),
        range_start: ip(start),
        range_end: ip(end),
        gateway: gw.map(ip),
        fixed: fixed.map(|(a, b)| (ip(a), ip(b))),
        exclude: vec![],
    })
}

#[test]
fn windows_cover_the_range_once_from_any_offset() {
    let p = pool(1, 3000, None, None);
    for offset in [0u128, 1, 1023, 1024, 2999, 5000] {
        let mut seen = BTreeSet::new();
        for (a, b) in Windows::new(&p, offset) {
            assert!(b - a < WINDOW);
            for v in a..=b {
                assert!(seen.insert(v), "offset {offset}: {v} covered twice");
            }
        }
        assert_eq!(seen.len(), 3000);
    }
}

/// A pool of `len` addresses from `10.0.0.0 + start`, with a fixed zone.
pub(super) fn big_pool(start: u32, len: u32, fixed: Option<(u32, u32)>) -> Pool {
    let ip = |v: u32| std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + v));
    Pool::new(&Range {
        subnet: "10.0.0.0/8".parse().unwrap(),
        range_start: ip(start),
        range_end: ip(start + len - 1),
        gateway: Some(ip(1)),
        fixed: fixed.map(|(a, b)| (ip(a), ip(b))),
        exclude: vec![],
    })
}

#[derive(Debug, Clone)]
enum Op {
    /// Search, and claim what was found.
    Claim,
    /// Release the n-th taken address (modulo), as the engine does: hints go with it.
    Release(usize),
    /// Delete the n-th hint (modulo).
    DropHint(usize),
    /// Overwrite the n-th hint (modulo) with a pending marker or with junk.
    Garble(usize, bool),
    /// Overwrite the n-th hint (modulo) with "full, except the whole block": true, if
    /// useless.
    Widen(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Claim),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::DropHint),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(n, b)| Op::Garble(n, b)),
        1 => any::<usize>().prop_map(Op::Widen),
    ]
}

pub(super) fn lcg(seed: u64) -> impl FnMut() -> u128 {
    let mut state = seed;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as u128
    }
}

async fn hint_keys(store: &MemoryStore, keys: &Keys) -> Vec<String> {
    let (f, t) = keys.hints();
    store
        .range(&f, &t, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    // The hinted search against a model, with hints dropped, garbled and widened at random
    // between searches and releases: it finds an address exactly when one is free, and
    // what it finds is free and dynamic. The fixed zone spans most of a range of over
    // 2^21 addresses, so the dynamic addresses lie in several blocks of the second level
    // and the search goes through every level of hints to reach them.
    #[test]
    fn hinted_search_never_misses_a_free_address_nor_returns_a_taken_one(
        start in 0u32..4000,
        head in 1u32..2500,
        tail in 1u32..2500,
        big in any::<bool>(),
        fill in prop_oneof![0.5f64..1.0, Just(1.0)],
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let len = if big { (1 << 21) + head + tail } else { head + tail };
        let fixed = big.then(|| (start + head, start + len - tail - 1));
        let p = big_pool(start, len, fixed);
        let keys = Keys::new("/t", "n");
        let store = MemoryStore::new();
        let mut rnd = lcg(seed);
        let dynamic: Vec<u128> = (p.start..=p.end).filter(|v| p.contains_dynamic(*v)).collect();
        let mut taken = BTreeSet::new();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            for &v in &dynamic {
                if (rnd() % 1000) as f64 / 1000.0 < fill {
                    taken.insert(v);
                    store.commit(&[], &[Mutation::Put(keys.ip(p.addr(v)), vec![])]).await.unwrap();
                }
            }
            for op in ops {
                match op {
                    Op::Claim => {
                        let found = find_free(&store, &keys, &p, &mut rnd).await.unwrap();
                        let free = dynamic.iter().find(|v| !taken.contains(v));
                        match found {
                            None => prop_assert!(free.is_none(), "missed free {:?}", free),
                            Some(v) => {
                                prop_assert!(p.contains_dynamic(v), "{v} is not dynamic");
                                prop_assert!(!taken.contains(&v), "{v} is taken");
                                let key = keys.ip(p.addr(v));
                                let ok = store
                                    .commit(&[Compare::Absent(key.clone())], &[Mutation::Put(key, vec![])])
                                    .await
                                    .unwrap();
                                prop_assert!(ok);
                                taken.insert(v);
                            }
                        }
                    }
                    Op::Release(n) => {
                        if let Some(&v) = taken.iter().nth(n % taken.len().max(1)) {
                            let addr = p.addr(v);
                            let mut m = vec![Mutation::Delete(keys.ip(addr))];
                            m.extend(hints::freed(&keys, addr));
                            store.commit(&[], &m).await.unwrap();
                            taken.remove(&v);
                        }
                    }
                    Op::DropHint(n) | Op::Garble(n, _) | Op::Widen(n) => {
                        let hk = hint_keys(&store, &keys).await;
                        let Some(k) = hk.get(n % hk.len().max(1)) else { continue };
                        let m = match op {
                            Op::DropHint(_) => Mutation::Delete(k.clone()),
                            Op::Garble(_, true) => Mutation::Put(k.clone(), hints::PENDING.to_vec()),
                            Op::Garble(_, false) => Mutation::Put(k.clone(), b"full zz".to_vec()),
                            _ => {
                                let level: u8 = k.split('/').nth(5).unwrap().parse().unwrap();
                                let first = keys.parse_hint(false, level, k).unwrap();
                                Mutation::Put(k.clone(), hints::encode(&[hints::block(level, first)]))
                            }
                        };
                        store.commit(&[], &[m]).await.unwrap();
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// What a search read, in keys: each entry and each key looked up, and as much for each
/// range that found nothing and each figure counted (etcd answers a count from its index).
fn keys_read(t: Tally) -> usize {
    t.gets + t.entries + t.empty_ranges + t.counts
}

/// A full range is known from its hints: after one search has written them, the next
/// reads the few hints above its windows, not the range nor the windows' hints.
#[test]
fn a_full_range_is_known_from_a_few_reads() {
    let p = big_pool(0, 1 << 18, None);
    let keys = Keys::new("/t", "n");
    let store = Spy::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut rnd = lcg(7);
    rt.block_on(async {
        let all: Vec<Mutation> = (p.start..=p.end)
            .filter(|v| p.contains_dynamic(*v))
            .map(|v| Mutation::Put(keys.ip(p.addr(v)), vec![]))
            .collect();
        store.inner().commit(&[], &all).await.unwrap();
        assert_eq!(find_free(&store, &keys, &p, &mut rnd).await.unwrap(), None);
        // Without hints yet, the first search counts the windows rather than read them.
        let first = keys_read(store.take());
        assert!(first < 16 * 1024, "the first search read {first} keys");
        for _ in 0..5 {
            assert_eq!(find_free(&store, &keys, &p, &mut rnd).await.unwrap(), None);
            let later = keys_read(store.take());
            // The hints above the windows, and a look at the one that says so: no
            // count of where to look next.
            assert!(later <= 4, "a later search read {later} keys");
        }
        // One address freed the way the engine frees it: found at once.
        let v = p.start + 77_777;
        let mut m = vec![Mutation::Delete(keys.ip(p.addr(v)))];
        m.extend(hints::freed(&keys, p.addr(v)));
        store.inner().commit(&[], &m).await.unwrap();
        assert_eq!(
            find_free(&store, &keys, &p, &mut rnd).await.unwrap(),
            Some(v)
        );
        // The hints above the windows went with the release. Counts of the windows'
        // hints lead to the one window without, and counts of its records to the part
        // of it with room.
        let found = keys_read(store.take());
        assert!(found <= 3 * 64 + 32, "finding it read {found} keys");
    });
}

/// Every address of `pool` recorded but `free`, the way a fill by an older version or an
/// import leaves it: no hints.
pub(super) async fn fill_all_but<S: LeaseStore>(
    store: &S,
    keys: &Keys,
    pool: &Pool,
    free: &[u128],
) {
    let all: Vec<Mutation> = (pool.start..=pool.end)
        .filter(|v| pool.contains_dynamic(*v) && !free.contains(v))
        .map(|v| Mutation::Put(keys.ip(pool.addr(v)), vec![]))
        .collect();
    store.commit(&[], &all).await.unwrap();
}

/// Every "full" hint in `store` is true: each address of its block outside its spans
/// has a record.
pub(super) async fn hints_hold(store: &MemoryStore, keys: &Keys) {
    let (f, t) = keys.hints();
    let (rf, rt) = keys.ip_range(
        std::net::Ipv4Addr::new(0, 0, 0, 0).into(),
        std::net::Ipv4Addr::new(255, 255, 255, 255).into(),
    );
    let taken: BTreeSet<u128> = store
        .range(&rf, &rt, 0)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| keys.parse_ip(&e.key))
        .map(crate::engine::pool::to_u128)
        .collect();
    for e in store.range(&f, &t, 0).await.unwrap() {
        let Hint::Full(spans) = hints::decode(&e.value) else {
            continue;
        };
        let level: u8 = e.key.split('/').nth(5).unwrap().parse().unwrap();
        let first = keys.parse_hint(false, level, &e.key).unwrap();
        let (bf, bl) = hints::block(level, first);
        // The block outside the spans, run by run: each run wholly recorded.
        let mut next = bf;
        for &(a, b) in spans.iter().chain([(bl + 1, bl + 1)].iter()) {
            if a > next {
                let held = taken.range(next..a).count() as u128;
                assert_eq!(held, a - next, "{} calls {next:x}..{a:x} taken", e.key);
            }
            next = next.max(b + 1);
        }
    }
}
