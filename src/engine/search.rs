//! Range search: find a free address by reading one window of the range at a time.
//!
//! The cost of one search is a handful of ordered range reads of at most [`WINDOW`] keys,
//! whatever the size of the range, until the range is nearly full. A random starting point
//! keeps concurrent allocators (other processes, other nodes) apart so their claims rarely
//! collide.

use std::collections::BTreeSet;

use kube_ipam_store::{Keys, LeaseStore};

use super::bitmap::Bitmap;
use super::pool::Pool;
use crate::Result;

/// Addresses read per window.
pub const WINDOW: u128 = 1024;

/// Windows scanned before asking the store how full the range is, so that an exhausted
/// huge range is reported after one count instead of a scan of every window.
const WINDOWS_BEFORE_COUNT: u32 = 8;

/// The windows of one search: from a starting point to the end of the range, then from its
/// start, until every address has been covered once.
#[derive(Debug, Clone)]
pub struct Windows {
    start: u128,
    end: u128,
    pos: u128,
    left: u128,
}

impl Windows {
    /// `offset` is taken modulo the range's span.
    pub fn new(pool: &Pool, offset: u128) -> Windows {
        let span = pool.end - pool.start + 1;
        Windows {
            start: pool.start,
            end: pool.end,
            pos: pool.start + offset % span,
            left: span,
        }
    }
}

impl Iterator for Windows {
    type Item = (u128, u128);

    fn next(&mut self) -> Option<(u128, u128)> {
        if self.left == 0 {
            return None;
        }
        let len = WINDOW.min(self.left).min(self.end - self.pos + 1);
        let window = (self.pos, self.pos + len - 1);
        self.left -= len;
        self.pos = if window.1 == self.end {
            self.start
        } else {
            window.1 + 1
        };
        Some(window)
    }
}

/// The bitmap of `from..=to`: taken addresses and the pool's holes marked.
pub fn window_bitmap(
    pool: &Pool,
    from: u128,
    to: u128,
    taken: impl Iterator<Item = u128>,
) -> Bitmap {
    let mut bits = Bitmap::new((to - from + 1) as usize);
    for &(a, b) in &pool.holes {
        if b >= from && a <= to {
            bits.set_span((a.max(from) - from) as usize, (b.min(to) - from) as usize);
        }
    }
    for v in taken {
        if v >= from && v <= to {
            bits.set((v - from) as usize);
        }
    }
    bits
}

/// Finds a free dynamic address of `pool`, or `None` when every one is taken.
/// `rnd` supplies the randomness: the starting point and the spot inside the window.
pub async fn find_free<S: LeaseStore + ?Sized>(
    store: &S,
    keys: &Keys,
    pool: &Pool,
    rnd: &mut impl FnMut() -> u128,
) -> Result<Option<u128>> {
    find_free_avoiding(store, keys, pool, &BTreeSet::new(), rnd).await
}

/// [`find_free`], with `avoid` taken too: addresses held where kube-ipam keeps no record (the
/// original plugin's `used/` keys). The count shortcut ignores them, so it never calls a
/// range full too early; a range filled by them is found full by the scan.
pub async fn find_free_avoiding<S: LeaseStore + ?Sized>(
    store: &S,
    keys: &Keys,
    pool: &Pool,
    avoid: &BTreeSet<u128>,
    rnd: &mut impl FnMut() -> u128,
) -> Result<Option<u128>> {
    let mut windows = 0u32;
    for (from, to) in Windows::new(pool, rnd()) {
        let (kf, kt) = keys.ip_range(pool.addr(from), pool.addr(to));
        let entries = store.range(&kf, &kt, 0).await?;
        let taken = entries
            .iter()
            .filter_map(|e| keys.parse_ip(&e.key))
            .map(super::pool::to_u128)
            .chain(avoid.range(from..=to).copied());
        let bits = window_bitmap(pool, from, to, taken);
        // A random spot inside the window, then the next free one: two allocators reading
        // the same window still tend to pick different addresses.
        let spot = (rnd() % bits.len() as u128) as usize;
        if let Some(i) = bits.next_clear_wrapping(spot) {
            return Ok(Some(from + i as u128));
        }
        windows += 1;
        if windows == WINDOWS_BEFORE_COUNT && is_full(store, keys, pool).await? {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Whether every dynamic address of `pool` has a record: one count, no transfer of records.
pub async fn is_full<S: LeaseStore + ?Sized>(store: &S, keys: &Keys, pool: &Pool) -> Result<bool> {
    let (kf, kt) = keys.ip_range(pool.addr(pool.start), pool.addr(pool.end));
    let held = store.count(&kf, &kt).await? as u128;
    Ok(held >= pool.size())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Range;
    use kube_ipam_store::{Compare, MemoryStore, Mutation};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn pool(start: u32, end: u32, gw: Option<u32>, fixed: Option<(u32, u32)>) -> Pool {
        let ip = |v: u32| std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + v));
        Pool::new(&Range {
            subnet: "10.0.0.0/16".parse().unwrap(),
            range_start: ip(start),
            range_end: ip(end),
            gateway: gw.map(ip),
            fixed: fixed.map(|(a, b)| (ip(a), ip(b))),
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

    proptest! {
        // The windowed search agrees with a naive model: it finds an address exactly when
        // one is free, and what it finds is free, dynamic and not in a hole.
        #[test]
        fn search_agrees_with_naive_model(
            start in 1u32..100,
            len in 1u32..2500,
            gw in proptest::option::of(0u32..3000),
            fixed in proptest::option::of((0u32..3000, 0u32..50)),
            fill in 0.0f64..1.0,
            seed in any::<u64>(),
        ) {
            let p = pool(start, start + len - 1, gw, fixed.map(|(a, w)| (a, a + w)));
            let keys = Keys::new("/t", "n");
            let store = MemoryStore::new();
            let mut state = seed;
            let mut rnd = move || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 11) as u128
            };
            let mut taken = BTreeSet::new();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                for v in p.start..=p.end {
                    if !p.in_hole(v) && (rnd() % 1000) as f64 / 1000.0 < fill {
                        taken.insert(v);
                        store.commit(&[], &[Mutation::Put(keys.ip(p.addr(v)), vec![])]).await.unwrap();
                    }
                }
                let free: Vec<u128> = (p.start..=p.end).filter(|v| !p.in_hole(*v) && !taken.contains(v)).collect();
                let found = find_free(&store, &keys, &p, &mut rnd).await.unwrap();
                match found {
                    None => prop_assert!(free.is_empty(), "missed free {:?}", free.first()),
                    Some(v) => {
                        prop_assert!(p.contains_dynamic(v));
                        prop_assert!(!taken.contains(&v));
                        let ok = store.commit(&[Compare::Absent(keys.ip(p.addr(v)))], &[]).await.unwrap();
                        prop_assert!(ok);
                    }
                }
                Ok(())
            })?;
        }
    }
}
