//! Range search: find a free address whose cost does not depend on the range's size or fill.
//!
//! Most searches end in the first window: one ordered read of the keys of 1024 addresses at
//! a random point, which also keeps concurrent allocators (other processes, other nodes)
//! apart. When that window is full the search turns to the free-space hints
//! ([`super::hints`]): it reads the hints of the top-level blocks of the range, goes down
//! into a block not known to be full, and so on to a window, writing "full" hints for what it
//! finds full on the way. A full range is known from one read of hints; a range that is
//! missing its hints (written by an older version, or imported) is read window by window once
//! and carries hints afterwards.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use kube_ipam_store::{Compare, Keys, LeaseStore, Mutation};

use super::bitmap::Bitmap;
use super::hints::{self, Hint, Seen, Span};
use super::pool::Pool;
use crate::Result;

/// Addresses read per window.
pub const WINDOW: u128 = 1 << hints::BITS;

/// Blocks whose hints are read in one request: a level's fan-out.
const FANOUT: u128 = 1 << hints::BITS;

/// The windows of a range from a starting point to its end, then from its start, until every
/// address has been covered once.
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
/// `rnd` supplies the randomness: where to look first and the spot inside a window.
pub async fn find_free<S: LeaseStore + ?Sized>(
    store: &S,
    keys: &Keys,
    pool: &Pool,
    rnd: &mut impl FnMut() -> u128,
) -> Result<Option<u128>> {
    find_free_avoiding(store, keys, pool, &BTreeSet::new(), rnd).await
}

/// [`find_free`], with `avoid` taken too: addresses held where kube-ipam keeps no record (the
/// original plugin's `used/` keys). They are never picked, but they never go into a hint
/// either: hints say where records are, and those addresses come free without a release of
/// ours to correct a hint.
pub async fn find_free_avoiding<S: LeaseStore + ?Sized>(
    store: &S,
    keys: &Keys,
    pool: &Pool,
    avoid: &BTreeSet<u128>,
    rnd: &mut impl FnMut() -> u128,
) -> Result<Option<u128>> {
    let mut search = Search {
        store,
        keys,
        pool,
        avoid,
        rnd,
    };
    let span = pool.end - pool.start + 1;
    let first = pool.start + (search.rnd)() % span;
    let (bf, bl) = hints::block(0, first);
    let (from, to) = (bf.max(pool.start), bl.min(pool.end));
    let taken = search.taken(from, to).await?;
    if let Some(v) = search.pick(from, to, &taken) {
        return Ok(Some(v));
    }
    search.hinted().await
}

struct Search<'a, S: ?Sized, R> {
    store: &'a S,
    keys: &'a Keys,
    pool: &'a Pool,
    avoid: &'a BTreeSet<u128>,
    rnd: &'a mut R,
}

/// What exploring one block found.
enum Outcome {
    Free(u128),
    /// No free address of the pool; the spans of the block without a record, if few.
    Full(Option<Vec<Span>>),
}

type Boxed<'b, T> = Pin<Box<dyn Future<Output = Result<T>> + 'b>>;

impl<'a, S: LeaseStore + ?Sized, R: FnMut() -> u128> Search<'a, S, R> {
    fn random_below(&mut self, n: usize) -> usize {
        ((self.rnd)() % n.max(1) as u128) as usize
    }

    /// The taken addresses of `from..=to`, ascending: keys only.
    async fn taken(&self, from: u128, to: u128) -> Result<Vec<u128>> {
        let (kf, kt) = self.keys.ip_range(self.pool.addr(from), self.pool.addr(to));
        let entries = self.store.range_keys(&kf, &kt, 0).await?;
        Ok(entries
            .iter()
            .filter_map(|e| self.keys.parse_ip(&e.key))
            .map(super::pool::to_u128)
            .collect())
    }

    /// A free dynamic address of `from..=to` (inside the pool) at a random spot, then the
    /// next free one: two allocators reading the same window still tend to pick apart.
    fn pick(&mut self, from: u128, to: u128, taken: &[u128]) -> Option<u128> {
        let held = taken
            .iter()
            .copied()
            .chain(self.avoid.range(from..=to).copied());
        let bits = window_bitmap(self.pool, from, to, held);
        let spot = self.random_below(bits.len());
        bits.next_clear_wrapping(spot).map(|i| from + i as u128)
    }

    /// The hints of blocks `first..=last` of `level` (block indexes), in order.
    async fn hints(&self, level: u8, first: u128, last: u128) -> Result<Vec<Seen>> {
        let s = hints::shift(level);
        let v6 = self.pool.v6;
        let (kf, kt) = self.keys.hint_range(v6, level, first << s, last << s);
        let mut seen = vec![Seen::ABSENT; (last - first + 1) as usize];
        for e in self.store.range(&kf, &kt, 0).await? {
            if let Some(at) = self.keys.parse_hint(v6, level, &e.key) {
                let i = (at >> s) - first;
                if let Some(slot) = seen.get_mut(i as usize) {
                    *slot = Seen::from_entry(&e);
                }
            }
        }
        Ok(seen)
    }

    /// The search over hints, from the lowest level whose blocks in the pool fit one read.
    async fn hinted(&mut self) -> Result<Option<u128>> {
        let v6 = self.pool.v6;
        let mut top = 0;
        while top + 1 < hints::levels(v6)
            && (self.pool.end >> hints::shift(top)) - (self.pool.start >> hints::shift(top)) + 1
                > FANOUT
        {
            top += 1;
        }
        let s = hints::shift(top);
        let (first, last) = (self.pool.start >> s, self.pool.end >> s);
        let n = last - first + 1;
        // Only an IPv6 range wider than a /54 has more top blocks than one read holds; it
        // is read in slices from a random one, and cannot be full in practice.
        let begin = (self.rnd)() % n;
        let mut done = 0;
        while done < n {
            let i = (begin + done) % n;
            let len = FANOUT.min(n - i).min(n - done);
            let seen = self.hints(top, first + i, first + i + len - 1).await?;
            let blocks: Vec<(u128, Seen)> = seen
                .into_iter()
                .enumerate()
                .map(|(j, h)| ((first + i + j as u128) << s, h))
                .collect();
            if let Some(v) = self.among(top, &blocks).await? {
                return Ok(Some(v));
            }
            done += len;
        }
        Ok(None)
    }

    /// Explores the blocks of the pool not known to be full, from a random one; returns the
    /// first free address found.
    async fn among(&mut self, level: u8, blocks: &[(u128, Seen)]) -> Result<Option<u128>> {
        let open: Vec<usize> = (0..blocks.len())
            .filter(|&i| self.in_pool(level, blocks[i].0) && !blocks[i].1.full_for(self.pool))
            .collect();
        let from = self.random_below(open.len());
        for k in 0..open.len() {
            let (first, seen) = &blocks[open[(from + k) % open.len()]];
            if let Outcome::Free(v) = self.explore(level, *first, seen).await? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Whether the block of `level` at `first` holds a dynamic address of the pool at all:
    /// blocks inside a fixed zone are never read.
    fn in_pool(&self, level: u8, first: u128) -> bool {
        let (_, last) = hints::block(level, first);
        self.pool.any_dynamic(first, last)
    }

    /// Looks for a free address of the pool in the block of `level` at `first`, whose hint
    /// was read as `seen` before anything in the block was.
    fn explore<'b>(&'b mut self, level: u8, first: u128, seen: &'b Seen) -> Boxed<'b, Outcome> {
        Box::pin(async move {
            let (bf, bl) = hints::block(level, first);
            if level == 0 {
                let taken = self.taken(bf, bl).await?;
                let (from, to) = (bf.max(self.pool.start), bl.min(self.pool.end));
                if let Some(v) = self.pick(from, to, &taken) {
                    return Ok(Outcome::Free(v));
                }
                let spans = hints::gaps(bf, bl, taken.into_iter());
                self.mark(level, bf, seen, spans.as_deref()).await?;
                return Ok(Outcome::Full(spans));
            }
            let below = level - 1;
            let s = hints::shift(below);
            let children: Vec<(u128, Seen)> = self
                .hints(below, bf >> s, bl >> s)
                .await?
                .into_iter()
                .enumerate()
                .map(|(j, h)| (bf + ((j as u128) << s), h))
                .collect();
            let mut found: Vec<Option<Option<Vec<Span>>>> = vec![None; children.len()];
            let open: Vec<usize> = (0..children.len())
                .filter(|&i| {
                    self.in_pool(below, children[i].0) && !children[i].1.full_for(self.pool)
                })
                .collect();
            let from = self.random_below(open.len());
            for k in 0..open.len() {
                let i = open[(from + k) % open.len()];
                let (cf, cseen) = &children[i];
                match self.explore(below, *cf, cseen).await? {
                    Outcome::Free(v) => return Ok(Outcome::Free(v)),
                    Outcome::Full(spans) => found[i] = Some(spans),
                }
            }
            let spans = hints::merge(children.iter().zip(&found).flat_map(|((cf, cseen), f)| {
                let whole = vec![hints::block(below, *cf)];
                match (f, &cseen.hint) {
                    (Some(Some(spans)), _) => spans.clone(),
                    (Some(None), _) => whole,
                    (None, Hint::Full(spans)) => spans.clone(),
                    (None, Hint::Unknown) => whole,
                }
            }));
            self.mark(level, bf, seen, spans.as_deref()).await?;
            Ok(Outcome::Full(spans))
        })
    }

    /// Records that the block of `level` at `first` has no record only in `spans`, if its
    /// hint is still as `seen` (read before the block's content). A block without a hint
    /// gets a pending one first and is read again, so that the "full" can be conditional.
    async fn mark(
        &mut self,
        level: u8,
        first: u128,
        seen: &Seen,
        spans: Option<&[Span]>,
    ) -> Result<()> {
        let Some(spans) = spans else {
            return Ok(());
        };
        if matches!(&seen.hint, Hint::Full(have) if have == spans) {
            return Ok(());
        }
        // Records leave room here: the block was found full only because of addresses held
        // outside kube-ipam's records, which a hint must not describe.
        if spans.iter().any(|&(a, b)| self.pool.any_dynamic(a, b)) {
            return Ok(());
        }
        let key = self.keys.hint(self.pool.v6, level, first);
        let (revision, spans) = match seen.revision {
            Some(r) => (r, spans.to_vec()),
            None => {
                let created = self
                    .store
                    .commit(
                        &[Compare::Absent(key.clone())],
                        &[Mutation::Put(key.clone(), hints::PENDING.to_vec())],
                    )
                    .await?;
                let Some(now) = self.store.get(&key).await? else {
                    return Ok(());
                };
                if !created && hints::decode(&now.value) != Hint::Unknown {
                    // Another search marked it meanwhile.
                    return Ok(());
                }
                match self.reread(level, first).await? {
                    Some(spans) => (now.revision, spans),
                    None => {
                        // Not full after all: take the placeholder back, if it is still ours.
                        if created {
                            self.store
                                .commit(
                                    &[Compare::Revision(key.clone(), now.revision)],
                                    &[Mutation::Delete(key)],
                                )
                                .await?;
                        }
                        return Ok(());
                    }
                }
            }
        };
        // Losing this race only means another search or a release got there first.
        self.store
            .commit(
                &[Compare::Revision(key.clone(), revision)],
                &[Mutation::Put(key, hints::encode(&spans))],
            )
            .await?;
        Ok(())
    }

    /// The spans without a record of a block, read now from the records (a window) or from
    /// the hints of the level below; `None` when that does not show the block full.
    async fn reread(&mut self, level: u8, first: u128) -> Result<Option<Vec<Span>>> {
        let (bf, bl) = hints::block(level, first);
        if level == 0 {
            let taken = self.taken(bf, bl).await?;
            let (from, to) = (bf.max(self.pool.start), bl.min(self.pool.end));
            if window_bitmap(self.pool, from, to, taken.iter().copied())
                .next_clear(0)
                .is_some()
            {
                return Ok(None);
            }
            return Ok(hints::gaps(bf, bl, taken.into_iter()));
        }
        let s = hints::shift(level - 1);
        let children = self.hints(level - 1, bf >> s, bl >> s).await?;
        let mut parts = Vec::with_capacity(children.len());
        for (j, c) in children.iter().enumerate() {
            let cf = bf + ((j as u128) << s);
            match &c.hint {
                Hint::Full(spans) if c.full_for(self.pool) || !self.in_pool(level - 1, cf) => {
                    parts.extend(spans.iter().copied())
                }
                Hint::Unknown if !self.in_pool(level - 1, cf) => {
                    parts.push(hints::block(level - 1, cf))
                }
                _ => return Ok(None),
            }
        }
        Ok(hints::merge(parts.into_iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Range;
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
    fn big_pool(start: u32, len: u32, fixed: Option<(u32, u32)>) -> Pool {
        let ip = |v: u32| std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + v));
        Pool::new(&Range {
            subnet: "10.0.0.0/8".parse().unwrap(),
            range_start: ip(start),
            range_end: ip(start + len - 1),
            gateway: Some(ip(1)),
            fixed: fixed.map(|(a, b)| (ip(a), ip(b))),
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

    fn lcg(seed: u64) -> impl FnMut() -> u128 {
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
            fill in 0.5f64..1.0,
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

    /// A full range is known from its hints: after one search has written them, the next
    /// reads a handful of keys, not the range.
    #[test]
    fn a_full_range_is_known_from_a_few_reads() {
        let p = big_pool(0, 1 << 18, None);
        let keys = Keys::new("/t", "n");
        let store = Counting::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut rnd = lcg(7);
        rt.block_on(async {
            let all: Vec<Mutation> = (p.start..=p.end)
                .filter(|v| p.contains_dynamic(*v))
                .map(|v| Mutation::Put(keys.ip(p.addr(v)), vec![]))
                .collect();
            store.inner.commit(&[], &all).await.unwrap();
            assert_eq!(find_free(&store, &keys, &p, &mut rnd).await.unwrap(), None);
            let first = store.read();
            assert!(first > 1 << 18, "the first search reads the range: {first}");
            for _ in 0..5 {
                assert_eq!(find_free(&store, &keys, &p, &mut rnd).await.unwrap(), None);
                let later = store.read();
                assert!(later <= 2 * 1024 + 16, "a later search read {later} keys");
            }
            // One address freed the way the engine frees it: found at once.
            let v = p.start + 77_777;
            let mut m = vec![Mutation::Delete(keys.ip(p.addr(v)))];
            m.extend(hints::freed(&keys, p.addr(v)));
            store.inner.commit(&[], &m).await.unwrap();
            assert_eq!(
                find_free(&store, &keys, &p, &mut rnd).await.unwrap(),
                Some(v)
            );
            let found = store.read();
            assert!(found <= 4 * 1024 + 16, "finding it read {found} keys");
        });
    }

    /// The memory store, counting the keys every read returns.
    #[derive(Default)]
    struct Counting {
        inner: MemoryStore,
        keys: std::sync::atomic::AtomicUsize,
    }

    impl Counting {
        /// Keys read since the last call.
        fn read(&self) -> usize {
            self.keys.swap(0, std::sync::atomic::Ordering::Relaxed)
        }
        fn add(&self, n: usize) {
            self.keys.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[async_trait::async_trait]
    impl LeaseStore for Counting {
        async fn get(
            &self,
            key: &str,
        ) -> std::result::Result<Option<kube_ipam_store::Entry>, kube_ipam_store::StoreError>
        {
            self.add(1);
            self.inner.get(key).await
        }
        async fn range(
            &self,
            from: &str,
            to: &str,
            limit: usize,
        ) -> std::result::Result<Vec<kube_ipam_store::Entry>, kube_ipam_store::StoreError> {
            let r = self.inner.range(from, to, limit).await?;
            self.add(r.len().max(1));
            Ok(r)
        }
        async fn count(
            &self,
            from: &str,
            to: &str,
        ) -> std::result::Result<u64, kube_ipam_store::StoreError> {
            let n = self.inner.count(from, to).await?;
            self.add(n as usize);
            Ok(n)
        }
        async fn commit(
            &self,
            c: &[Compare],
            m: &[Mutation],
        ) -> std::result::Result<bool, kube_ipam_store::StoreError> {
            self.inner.commit(c, m).await
        }
        async fn ping(&self) -> std::result::Result<(), kube_ipam_store::StoreError> {
            Ok(())
        }
    }
}
