//! Range search: find a free address whose cost does not depend on the range's size or fill.
//!
//! What costs on etcd is reading keys (each is read from disk); counts come from its index.
//! So a search reads the free-space hints ([`super::hints`]) above the windows in its first
//! request, together with counts of where to look next: of the windows' hints in a range of
//! up to 1024 windows, of the parts of a random window in a larger one. A range some hint
//! calls full ends there. That first request is made ready ahead ([`Start`]), so a range set
//! sends the first requests of all its ranges as one. Otherwise the search goes to a window
//! not known to be full (by reading the few hints there are, or, when nearly every window has
//! one, by counting hint keys in groups down to a window without), counts the window's
//! records in parts and reads only a part with room, at a random spot, which also keeps
//! concurrent allocators (other processes, other nodes) apart. It writes "full" hints for
//! what it finds full on the way, and those above the windows once it finds the whole range
//! full. A range missing its hints (written by an older version, or imported) carries them
//! after the searches that meet it: once two windows without a hint come out full in a row,
//! the rest are counted and marked in bulk ([`Search::heal`]).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use kube_ipam_store::{Answer, Compare, Entry, Keys, LeaseStore, Mutation, Read};

use super::bitmap::Bitmap;
use super::hints::{self, Hint, Seen, Span};
use super::pool::Pool;
use crate::Result;

/// Addresses read per window.
pub const WINDOW: u128 = 1 << hints::BITS;

/// Blocks whose hints are read in one request: a level's fan-out.
const FANOUT: u128 = 1 << hints::BITS;

/// Hints read at once; past this many, blocks without one are found by counts.
const SPARSE: usize = 64;

/// Parts counted in one request when narrowing down.
const PARTS: u128 = 16;

/// Counting stops at parts of this many addresses, which are then read.
const PART: u128 = 64;

/// Groups counted at once when [`Search::by_counts`] narrows down: a group of the first
/// count (up to 64 windows of a /12) is then counted window by window in one request, and
/// 64 counts still fit one etcd transaction.
const SINGLES: u128 = 64;

/// Blocks found full by [`Search::by_counts`] before it leaves the search to the hints.
const TRIES: usize = 4;

/// Windows without a hint a search finds full in a row before it counts the rest at once.
const HEAL_AFTER: usize = 2;

/// Windows claimed and counted in one request when healing: a placeholder and a count
/// each, within etcd's 128 operations of a transaction.
const HEAL_CHUNK: usize = 60;

/// Hints of level 1 and up read at the start of a search, at most.
const ABOVE_LIMIT: usize = 256;

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
    let first = Start::new(keys, pool, false, rnd);
    let answers = store.reads(first.reads()).await?;
    first
        .finish(store, keys, pool, &BTreeSet::new(), rnd, answers)
        .await
}

/// The first request of a search, made ready before the search runs, so that the first
/// requests of every range of a set go out as one ([`LeaseStore::reads`]): a range behind a
/// full one then costs no round trip of its own.
pub struct Start {
    step: Step,
    reads: Vec<Read>,
}

enum Step {
    /// The whole range is one window: its one read is as cheap as any hint.
    Window,
    /// The range is one window, behind another range of its set: a random part of it is
    /// read, which bounds what is read in vain while the ranges ahead have room.
    Glimpse(Span),
    /// The hints above the windows, and counts of where to look next (`groups`): of the
    /// windows' hints when `top` is 0, of the parts of the random window `window` otherwise.
    Counted {
        top: u8,
        window: Span,
        groups: Vec<Span>,
    },
}

impl Start {
    /// The first step of a search of `pool`; `behind`: whether ranges come before it in its
    /// set, in which case it is made ahead of knowing whether it is needed at all.
    pub fn new(keys: &Keys, pool: &Pool, behind: bool, rnd: &mut impl FnMut() -> u128) -> Start {
        let search = Search {
            store: &(),
            keys,
            pool,
            avoid: &BTreeSet::new(),
            rnd,
        };
        let span = pool.end - pool.start + 1;
        if hints::block(0, pool.start) == hints::block(0, pool.end) {
            if behind && span > PART {
                let from = pool.start + (search.rnd)() % (span - PART + 1);
                let to = from + PART - 1;
                return Start {
                    step: Step::Glimpse((from, to)),
                    reads: vec![search.taken_read(from, to)],
                };
            }
            return Start {
                step: Step::Window,
                reads: vec![search.taken_read(pool.start, pool.end)],
            };
        }
        let top = search.top();
        // In a range of up to 1024 windows, the windows' hints are counted: there are few
        // unless the range is nearly full, and then they lead straight to the windows with
        // room. In a larger one (a /8, a /64), the parts of a random window, which nearly
        // always has room.
        let window = hints::block(0, pool.start + (search.rnd)() % span);
        let (groups, ranges) = if top == 0 {
            let s = hints::shift(0);
            search.hint_groups(0, pool.start >> s, pool.end >> s, PARTS)
        } else {
            search.parts(window.0, window.1)
        };
        let (from, to) = search.above_keys();
        let mut reads = vec![Read::Range {
            from,
            to,
            limit: ABOVE_LIMIT,
            keys_only: false,
        }];
        // The counts are wasted on a range the hints call full, and on etcd counting is
        // not free (a full /12 has 1024 window hints to count): etcd leaves them out when
        // the hints a search that found the range full writes first are all there.
        let skip_if_present = if top + 1 < hints::levels(pool.v6) {
            let s = hints::shift(top + 1);
            ((pool.start >> s)..=(pool.end >> s))
                .map(|b| keys.hint(pool.v6, top + 1, b << s))
                .collect()
        } else {
            Vec::new()
        };
        reads.push(Read::Counts {
            ranges,
            skip_if_present,
        });
        Start {
            step: Step::Counted {
                top,
                window,
                groups,
            },
            reads,
        }
    }

    /// What to read first.
    pub fn reads(&self) -> &[Read] {
        &self.reads
    }

    /// The search, from the `answers` to [`Self::reads`]. Addresses in `avoid` are taken
    /// too: held where kube-ipam keeps no record (the original plugin's `used/` keys). They
    /// are never picked, but they never go into a hint either: hints say where records are,
    /// and those addresses come free without a release of ours to correct a hint.
    pub async fn finish<S: LeaseStore + ?Sized>(
        self,
        store: &S,
        keys: &Keys,
        pool: &Pool,
        avoid: &BTreeSet<u128>,
        rnd: &mut impl FnMut() -> u128,
        answers: Vec<Answer>,
    ) -> Result<Option<u128>> {
        let mut search = Search {
            store,
            keys,
            pool,
            avoid,
            rnd,
        };
        let mut answers = answers.into_iter();
        let mut next = move || {
            answers.next().ok_or_else(|| {
                crate::Error::Internal("a search's first read came back short".into())
            })
        };
        let (top, (bf, bl), groups) = match self.step {
            Step::Window => {
                let taken = search.parse_taken(next()?.into_entries()?);
                return Ok(search.pick(pool.start, pool.end, &taken));
            }
            Step::Glimpse((from, to)) => {
                let taken = search.parse_taken(next()?.into_entries()?);
                if let Some(v) = search.pick(from, to, &taken) {
                    return Ok(Some(v));
                }
                let taken = search.taken(pool.start, pool.end).await?;
                return Ok(search.pick(pool.start, pool.end, &taken));
            }
            Step::Counted {
                top,
                window,
                groups,
            } => (top, window, groups),
        };
        let entries = next()?.into_entries()?;
        let counted = match next()?.into_counts()? {
            Some(counts) if counts.len() == groups.len() => Some(
                groups
                    .into_iter()
                    .zip(counts.into_iter().map(u128::from))
                    .collect(),
            ),
            Some(counts) => {
                return Err(crate::Error::Internal(format!(
                    "{} counts came back for {} ranges",
                    counts.len(),
                    groups.len()
                )))
            }
            None => None,
        };
        let above = search.above(&entries);
        if above.full {
            return Ok(None);
        }
        let found = if top == 0 {
            search.hinted(top, counted).await?
        } else {
            if let Look::Free(v) = search.look(bf, bl, counted).await? {
                return Ok(Some(v));
            }
            search.hinted(top, None).await?
        };
        if found.is_none() {
            search.mark_above(top, &above.seen).await?;
        }
        Ok(found)
    }
}

/// The hints of the levels above the windows over a range, as one read found them.
struct Above {
    /// Some level's blocks over the range all say it is full.
    full: bool,
    /// Per level (index 0 is level 1), the blocks over the range and their hints; empty for
    /// a level with more blocks than one read holds.
    seen: Vec<Vec<(u128, Seen)>>,
}

struct Search<'a, S: ?Sized, R> {
    store: &'a S,
    keys: &'a Keys,
    pool: &'a Pool,
    avoid: &'a BTreeSet<u128>,
    rnd: &'a mut R,
}

/// What reading one window found.
enum Look {
    Free(u128),
    /// No free dynamic address; every record of the window, ascending.
    Full(Vec<u128>),
}

/// What counting the parts of a window found.
enum Narrowed {
    Free(u128),
    /// A record at every address.
    Taken,
    /// Counts show no part with room, or the part read had none.
    Unknown,
}

/// `a..=b` in at most `n` consecutive spans of equal length (the last may be shorter).
fn split(a: u128, b: u128, n: u128) -> Vec<Span> {
    let step = (b - a + 1).div_ceil(n);
    (0..n)
        .map(|i| a + i * step)
        .take_while(|&x| x <= b)
        .map(|x| (x, (x + step - 1).min(b)))
        .collect()
}

/// What exploring one block found.
enum Outcome {
    Free(u128),
    /// No free address of the pool; the spans of the block without a record, if few.
    Full(Option<Vec<Span>>),
}

/// What exploring the blocks of one level found.
enum Swept {
    Free(u128),
    /// No free address; per block, what exploring it found (`None`: not explored).
    Full(Vec<Option<Option<Vec<Span>>>>),
}

type Boxed<'b, T> = Pin<Box<dyn Future<Output = Result<T>> + 'b>>;

/// What a search reads and works out without the store.
impl<S: ?Sized, R> Search<'_, S, R> {
    /// [`Self::taken`] as a read of a batch.
    fn taken_read(&self, from: u128, to: u128) -> Read {
        let (from, to) = self.keys.ip_range(self.pool.addr(from), self.pool.addr(to));
        Read::Range {
            from,
            to,
            limit: 0,
            keys_only: true,
        }
    }

    /// The addresses of the address records `entries`.
    fn parse_taken(&self, entries: Vec<Entry>) -> Vec<u128> {
        entries
            .iter()
            .filter_map(|e| self.keys.parse_ip(&e.key))
            .map(super::pool::to_u128)
            .collect()
    }

    /// The hints of blocks `first..=last` of `level` (block indexes), in order, from the
    /// entries of their key range.
    fn seen_of(&self, level: u8, first: u128, last: u128, entries: Vec<Entry>) -> Vec<Seen> {
        let s = hints::shift(level);
        let mut seen = vec![Seen::ABSENT; (last - first + 1) as usize];
        for e in entries {
            if let Some(at) = self.keys.parse_hint(self.pool.v6, level, &e.key) {
                let i = (at >> s) - first;
                if let Some(slot) = seen.get_mut(i as usize) {
                    *slot = Seen::from_entry(&e);
                }
            }
        }
        seen
    }

    /// Blocks of `level` over the pool.
    fn blocks_over(&self, level: u8) -> u128 {
        let s = hints::shift(level);
        (self.pool.end >> s) - (self.pool.start >> s) + 1
    }

    /// The lowest level whose blocks over the pool fit one read.
    fn top(&self) -> u8 {
        let mut top = 0;
        while top + 1 < hints::levels(self.pool.v6) && self.blocks_over(top) > FANOUT {
            top += 1;
        }
        top
    }

    /// Where the hints of every level above the windows over the pool lie: from the pool's
    /// first block of level 1 to its last block of the top level. The range also holds the
    /// few hints of level 1 and up past the pool (each covers a million addresses or more).
    fn above_keys(&self) -> (String, String) {
        let v6 = self.pool.v6;
        let levels = hints::levels(v6);
        let first = hints::block(1, self.pool.start).0;
        let last = hints::block(levels - 1, self.pool.end).0;
        let (from, _) = self.keys.hint_range(v6, 1, first, first);
        let (_, to) = self.keys.hint_range(v6, levels - 1, last, last);
        (from, to)
    }

    /// What the hints above the windows (read from [`Self::above_keys`], at most
    /// [`ABOVE_LIMIT`]) say of the pool: a range some level calls full is known full from a
    /// handful of keys, and a range behind it in the config costs nothing more. A read that
    /// came back full to its limit tells nothing.
    fn above(&self, entries: &[Entry]) -> Above {
        let v6 = self.pool.v6;
        let levels = hints::levels(v6);
        let mut above = Above {
            full: false,
            seen: vec![Vec::new(); usize::from(levels - 1)],
        };
        if entries.len() >= ABOVE_LIMIT {
            return above;
        }
        for level in 1..levels {
            if self.blocks_over(level) > FANOUT {
                continue;
            }
            let s = hints::shift(level);
            let blocks: Vec<(u128, Seen)> = ((self.pool.start >> s)..=(self.pool.end >> s))
                .map(|b| {
                    let first = b << s;
                    let seen = entries
                        .iter()
                        .find(|e| self.keys.parse_hint(v6, level, &e.key) == Some(first))
                        .map_or(Seen::ABSENT, Seen::from_entry);
                    (first, seen)
                })
                .collect();
            above.full |= blocks.iter().all(|(_, seen)| seen.full_for(self.pool));
            above.seen[usize::from(level - 1)] = blocks;
        }
        above
    }

    /// The blocks of `level` `lo..=hi` (indexes) in `n` groups, and the key range of each
    /// group's hints.
    fn hint_groups(
        &self,
        level: u8,
        lo: u128,
        hi: u128,
        n: u128,
    ) -> (Vec<Span>, Vec<(String, String)>) {
        let s = hints::shift(level);
        let groups = split(lo, hi, n);
        let ranges = groups
            .iter()
            .map(|&(x, y)| self.keys.hint_range(self.pool.v6, level, x << s, y << s))
            .collect();
        (groups, ranges)
    }

    /// `a..=b` in [`PARTS`] parts, and the key range of each part's address records.
    fn parts(&self, a: u128, b: u128) -> (Vec<Span>, Vec<(String, String)>) {
        let parts = split(a, b, PARTS);
        let ranges = parts
            .iter()
            .map(|&(x, y)| self.keys.ip_range(self.pool.addr(x), self.pool.addr(y)))
            .collect();
        (parts, ranges)
    }
}

impl<'a, S: LeaseStore + ?Sized, R: FnMut() -> u128> Search<'a, S, R> {
    fn random_below(&mut self, n: usize) -> usize {
        ((self.rnd)() % n.max(1) as u128) as usize
    }

    /// The taken addresses of `from..=to`, ascending: keys only.
    async fn taken(&self, from: u128, to: u128) -> Result<Vec<u128>> {
        let (kf, kt) = self.keys.ip_range(self.pool.addr(from), self.pool.addr(to));
        let entries = self.store.range_keys(&kf, &kt, 0).await?;
        Ok(self.parse_taken(entries))
    }

    /// Looks for a free address in the window `bf..=bl`.
    ///
    /// Reading keys is what a search pays for on etcd (each one is read from disk), while a
    /// count is answered from its index. So a window is not read whole: the records of its
    /// parts are counted at once ([`LeaseStore::counts`]), and a part with fewer records than
    /// dynamic addresses is read. The window is read whole only when counting cannot show
    /// room (records in the range's holes can hide it) or the part read has none after all
    /// (a claim got there in between).
    async fn look(
        &mut self,
        bf: u128,
        bl: u128,
        counted: Option<Vec<(Span, u128)>>,
    ) -> Result<Look> {
        match self.narrow(bf, bl, counted).await? {
            Narrowed::Free(v) => return Ok(Look::Free(v)),
            // A record at every address: full for any range, nothing to read.
            Narrowed::Taken => return Ok(Look::Full((bf..=bl).collect())),
            Narrowed::Unknown => {}
        }
        let (from, to) = (bf.max(self.pool.start), bl.min(self.pool.end));
        let taken = self.taken(bf, bl).await?;
        Ok(match self.pick(from, to, &taken) {
            Some(v) => Look::Free(v),
            None => Look::Full(taken),
        })
    }

    /// Splits `bf..=bl` in [`PARTS`] parts, counts their records in one request and goes on
    /// in a part with room (a random one), down to [`PART`] addresses, which are read.
    /// `counted`: the parts of `bf..=bl` ([`Self::parts`]) with their records, if counted.
    async fn narrow(
        &mut self,
        bf: u128,
        bl: u128,
        mut counted: Option<Vec<(Span, u128)>>,
    ) -> Result<Narrowed> {
        let (mut a, mut b) = (bf, bl);
        loop {
            if b - a < PART {
                let taken = self.taken(a, b).await?;
                let (from, to) = (a.max(self.pool.start), b.min(self.pool.end));
                return Ok(match self.pick(from, to, &taken) {
                    Some(v) => Narrowed::Free(v),
                    None => Narrowed::Unknown,
                });
            }
            let parts = match counted.take() {
                Some(parts) => parts,
                None => {
                    let (parts, ranges) = self.parts(a, b);
                    let records = self.store.counts(&ranges).await?;
                    parts
                        .into_iter()
                        .zip(records.into_iter().map(u128::from))
                        .collect()
                }
            };
            if (a, b) == (bf, bl) && parts.iter().map(|p| p.1).sum::<u128>() > bl - bf {
                return Ok(Narrowed::Taken);
            }
            let open: Vec<Span> = parts
                .iter()
                .filter(|&&((x, y), n)| n < self.pool.dynamic_in(x, y))
                .map(|&(p, _)| p)
                .collect();
            if open.is_empty() {
                return Ok(Narrowed::Unknown);
            }
            (a, b) = open[self.random_below(open.len())];
        }
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
        let (kf, kt) = self
            .keys
            .hint_range(self.pool.v6, level, first << s, last << s);
        let entries = self.store.range(&kf, &kt, 0).await?;
        Ok(self.seen_of(level, first, last, entries))
    }

    /// After a search found the pool full from the blocks of `top`, records it level by
    /// level above, so that [`Self::above`] knows it next time. `seen` holds the hints of
    /// those levels as read before the search.
    async fn mark_above(&mut self, top: u8, seen: &[Vec<(u128, Seen)>]) -> Result<()> {
        for level in (top + 1)..hints::levels(self.pool.v6) {
            let Some(blocks) = seen.get(usize::from(level - 1)) else {
                break;
            };
            if blocks.is_empty() {
                break;
            }
            for (first, was) in blocks {
                let Some(spans) = self.reread(level, *first).await? else {
                    return Ok(());
                };
                self.mark(level, *first, was, Some(&spans)).await?;
            }
        }
        Ok(())
    }

    /// The search over hints, from the blocks of `top`; `counted`: the hint keys of the
    /// pool's blocks of `top` already counted in groups ([`Self::hint_groups`]).
    async fn hinted(
        &mut self,
        top: u8,
        mut counted: Option<Vec<(Span, u128)>>,
    ) -> Result<Option<u128>> {
        let s = hints::shift(top);
        let (first, last) = (self.pool.start >> s, self.pool.end >> s);
        let n = last - first + 1;
        // Only an IPv6 range wider than a /54 has more top blocks than one read holds; it
        // is read in slices from a random one, and cannot be full in practice.
        let begin = if n > FANOUT { (self.rnd)() % n } else { 0 };
        let mut done = 0;
        while done < n {
            let i = (begin + done) % n;
            let len = FANOUT.min(n - i).min(n - done);
            let (lo, hi) = (first + i, first + i + len - 1);
            let groups = match counted.take() {
                Some(g) if (lo, hi) == (first, last) => g,
                _ => self.count_hints(top, lo, hi, PARTS).await?,
            };
            let hinted = groups.iter().map(|g| g.1).sum::<u128>();
            if hinted >= SPARSE as u128 {
                if let Some(v) = self.by_counts(top, groups).await? {
                    return Ok(Some(v));
                }
            }
            let seen = if hinted == 0 {
                vec![Seen::ABSENT; len as usize]
            } else {
                self.hints(top, lo, hi).await?
            };
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

    /// Counts the hint keys of the groups of [`Self::hint_groups`], in one request.
    async fn count_hints(
        &self,
        level: u8,
        lo: u128,
        hi: u128,
        n: u128,
    ) -> Result<Vec<(Span, u128)>> {
        let (groups, ranges) = self.hint_groups(level, lo, hi, n);
        let have = self.store.counts(&ranges).await?;
        Ok(groups
            .into_iter()
            .zip(have.into_iter().map(u128::from))
            .collect())
    }

    /// Looks for room in the blocks of `level` that have no hint, found by counting hint keys
    /// instead of reading them (`groups`: a first count of them): when nearly every block has
    /// a hint, reading them all is what costs. Gives up after [`TRIES`] blocks found full
    /// after all (each now has its hint): the caller then reads the hints.
    async fn by_counts(&mut self, level: u8, groups: Vec<(Span, u128)>) -> Result<Option<u128>> {
        let (Some(&((lo, _), _)), Some(&((_, hi), _))) = (groups.first(), groups.last()) else {
            return Ok(None);
        };
        let mut counted = Some(groups);
        for _ in 0..TRIES {
            let (mut a, mut b) = (lo, hi);
            while a < b {
                let groups = match counted.take() {
                    Some(g) => g,
                    None => self.count_hints(level, a, b, SINGLES).await?,
                };
                let open: Vec<Span> = groups
                    .iter()
                    .filter(|&&((x, y), n)| n < self.blocks_in_pool(level, x, y))
                    .map(|&(g, _)| g)
                    .collect();
                if open.is_empty() {
                    return Ok(None);
                }
                (a, b) = open[self.random_below(open.len())];
            }
            let first = a << hints::shift(level);
            if let Outcome::Free(v) = self.explore(level, first, &Seen::ABSENT).await? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Blocks of `level` `a..=b` (indexes) holding a dynamic address of the pool.
    fn blocks_in_pool(&self, level: u8, a: u128, b: u128) -> u128 {
        let s = hints::shift(level);
        (a..=b).filter(|i| self.in_pool(level, i << s)).count() as u128
    }

    /// Explores the blocks of the pool not known to be full, from a random one; returns the
    /// first free address found.
    async fn among(&mut self, level: u8, blocks: &[(u128, Seen)]) -> Result<Option<u128>> {
        Ok(match self.sweep(level, blocks).await? {
            Swept::Free(v) => Some(v),
            Swept::Full(_) => None,
        })
    }

    /// Explores `blocks` of `level` (each with its hint as read) that hold a dynamic address
    /// of the pool and are not known to be full, from a random one, up to the first free
    /// address. Windows without a hint found full in a row ([`HEAL_AFTER`]) mean a nearly
    /// full range that nothing has summarised yet: the rest of them are then counted in bulk
    /// ([`Self::heal`]) rather than explored one by one.
    async fn sweep(&mut self, level: u8, blocks: &[(u128, Seen)]) -> Result<Swept> {
        let mut found: Vec<Option<Option<Vec<Span>>>> = vec![None; blocks.len()];
        let mut open: Vec<usize> = (0..blocks.len())
            .filter(|&i| self.in_pool(level, blocks[i].0) && !blocks[i].1.full_for(self.pool))
            .collect();
        let from = self.random_below(open.len());
        open.rotate_left(from);
        let mut in_row = 0;
        for k in 0..open.len() {
            let i = open[k];
            if found[i].is_some() {
                continue;
            }
            let (first, seen) = &blocks[i];
            match self.explore(level, *first, seen).await? {
                Outcome::Free(v) => return Ok(Swept::Free(v)),
                Outcome::Full(spans) => found[i] = Some(spans),
            }
            in_row = if level == 0 && seen.revision.is_none() {
                in_row + 1
            } else {
                0
            };
            if in_row == HEAL_AFTER {
                let rest: Vec<usize> = open[k + 1..]
                    .iter()
                    .copied()
                    .filter(|&j| blocks[j].1.revision.is_none())
                    .collect();
                let firsts: Vec<u128> = rest.iter().map(|&j| blocks[j].0).collect();
                for j in self.heal(&firsts).await? {
                    found[rest[j]] = Some(Some(Vec::new()));
                }
            }
        }
        Ok(Swept::Full(found))
    }

    /// Claims the windows at `firsts` (seen without a hint) with placeholders and counts
    /// their records, a chunk per request, then writes "full" over those with a record at
    /// every address, conditional on their placeholders, and takes the others back. A
    /// nearly full range without hints (filled by an older version, or imported) heals in
    /// two requests per [`HEAL_CHUNK`] windows, not five per window and search. Returns which
    /// of `firsts` (indexes) it marked full.
    async fn heal(&mut self, firsts: &[u128]) -> Result<Vec<usize>> {
        let v6 = self.pool.v6;
        let mut marked = Vec::new();
        for (c, chunk) in firsts.chunks(HEAL_CHUNK).enumerate() {
            let keys: Vec<String> = chunk.iter().map(|&f| self.keys.hint(v6, 0, f)).collect();
            let ranges = chunk
                .iter()
                .map(|&f| {
                    let (a, b) = hints::block(0, f);
                    self.keys.ip_range(self.pool.addr(a), self.pool.addr(b))
                })
                .collect();
            let claim: Vec<Compare> = keys.iter().map(|k| Compare::Absent(k.clone())).collect();
            let pending: Vec<Mutation> = keys
                .iter()
                .map(|k| Mutation::Put(k.clone(), hints::PENDING.to_vec()))
                .collect();
            let read = Read::Counts {
                ranges,
                skip_if_present: Vec::new(),
            };
            let done = self
                .store
                .commit_and_read(&claim, &pending, &[read])
                .await?;
            // Another search holds one of them: this chunk is left to the searches.
            let Some(revision) = done.revision else {
                continue;
            };
            let counts = done.answers.into_iter().next().map(Answer::into_counts);
            let counts = match counts.transpose()?.flatten() {
                Some(n) if n.len() == chunk.len() => n,
                _ => {
                    return Err(crate::Error::Internal(
                        "a commit's counts came back short".into(),
                    ))
                }
            };
            let mut ours = Vec::with_capacity(keys.len());
            let mut outcome = Vec::with_capacity(keys.len());
            for (j, (key, n)) in keys.into_iter().zip(counts).enumerate() {
                ours.push(Compare::Revision(key.clone(), revision));
                if u128::from(n) >= WINDOW {
                    outcome.push(Mutation::Put(key, hints::encode(&[])));
                    marked.push(c * HEAL_CHUNK + j);
                } else {
                    outcome.push(Mutation::Delete(key));
                }
            }
            if self.store.commit(&ours, &outcome).await? {
                continue;
            }
            // A release took one placeholder with it (and freed an address there): the
            // others one by one.
            for (j, (cond, m)) in ours.into_iter().zip(outcome).enumerate() {
                let put = matches!(m, Mutation::Put(..));
                if !self.store.commit(&[cond], &[m]).await? && put {
                    marked.retain(|&x| x != c * HEAL_CHUNK + j);
                }
            }
        }
        Ok(marked)
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
                let taken = match self.look(bf, bl, None).await? {
                    Look::Free(v) => return Ok(Outcome::Free(v)),
                    Look::Full(taken) => taken,
                };
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
            let found = match self.sweep(below, &children).await? {
                Swept::Free(v) => return Ok(Outcome::Free(v)),
                Swept::Full(found) => found,
            };
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
                // The placeholder and the reread in one request where the store can: the
                // reread comes after the placeholder, whose revision it returns.
                let done = self
                    .store
                    .commit_and_read(
                        &[Compare::Absent(key.clone())],
                        &[Mutation::Put(key.clone(), hints::PENDING.to_vec())],
                        &[self.reread_read(level, first)],
                    )
                    .await?;
                let (revision, spans) = match done.revision {
                    Some(r) => {
                        let answer = done.answers.into_iter().next().ok_or_else(|| {
                            crate::Error::Internal("a commit's read came back short".into())
                        })?;
                        (r, self.reread_from(level, first, answer).await?)
                    }
                    None => {
                        // Someone else's placeholder or hint: what was read with the attempt
                        // may predate its revision, so it is read again.
                        let Some(now) = self.store.get(&key).await? else {
                            return Ok(());
                        };
                        if hints::decode(&now.value) != Hint::Unknown {
                            // Another search marked it meanwhile.
                            return Ok(());
                        }
                        (now.revision, self.reread(level, first).await?)
                    }
                };
                match spans {
                    Some(spans) => (revision, spans),
                    None => {
                        // Not full after all: take the placeholder back, if it is still ours.
                        if done.revision.is_some() {
                            self.store
                                .commit(
                                    &[Compare::Revision(key.clone(), revision)],
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
        let read = self.reread_read(level, first);
        let answer = self.store.reads(&[read]).await?.into_iter().next();
        let answer =
            answer.ok_or_else(|| crate::Error::Internal("a read came back short".into()))?;
        self.reread_from(level, first, answer).await
    }

    /// What [`Self::reread`] reads first: the count of a window's records, or the hints of
    /// the level below.
    fn reread_read(&self, level: u8, first: u128) -> Read {
        let (bf, bl) = hints::block(level, first);
        if level == 0 {
            let range = self.keys.ip_range(self.pool.addr(bf), self.pool.addr(bl));
            return Read::Counts {
                ranges: vec![range],
                skip_if_present: Vec::new(),
            };
        }
        let s = hints::shift(level - 1);
        let (from, to) = self
            .keys
            .hint_range(self.pool.v6, level - 1, bf, bl >> s << s);
        Read::Range {
            from,
            to,
            limit: 0,
            keys_only: false,
        }
    }

    /// [`Self::reread`] from the answer to [`Self::reread_read`].
    async fn reread_from(
        &mut self,
        level: u8,
        first: u128,
        answer: Answer,
    ) -> Result<Option<Vec<Span>>> {
        let (bf, bl) = hints::block(level, first);
        if level == 0 {
            let counted = answer.into_counts()?.and_then(|n| n.first().copied());
            if counted.is_some_and(|n| u128::from(n) > bl - bf) {
                return Ok(Some(Vec::new()));
            }
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
        let children = self.seen_of(level - 1, bf >> s, bl >> s, answer.into_entries()?);
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

    /// A full range is known from its hints: after one search has written them, the next
    /// reads the few hints above its windows, not the range nor the windows' hints.
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
            // Without hints yet, the first search counts the windows rather than read them.
            let first = store.read();
            assert!(first < 16 * 1024, "the first search read {first} keys");
            for _ in 0..5 {
                assert_eq!(find_free(&store, &keys, &p, &mut rnd).await.unwrap(), None);
                let later = store.read();
                // The hints above the windows, and a look at the one that says so: no
                // count of where to look next.
                assert!(later <= 4, "a later search read {later} keys");
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
            // The hints above the windows went with the release. Counts of the windows'
            // hints lead to the one window without, and counts of its records to the part
            // of it with room.
            let found = store.read();
            assert!(found <= 3 * 64 + 32, "finding it read {found} keys");
        });
    }

    /// Every address of `pool` recorded but `free`, the way a fill by an older version or an
    /// import leaves it: no hints.
    async fn fill_all_but<S: LeaseStore>(store: &S, keys: &Keys, pool: &Pool, free: &[u128]) {
        let all: Vec<Mutation> = (pool.start..=pool.end)
            .filter(|v| pool.contains_dynamic(*v) && !free.contains(v))
            .map(|v| Mutation::Put(keys.ip(pool.addr(v)), vec![]))
            .collect();
        store.commit(&[], &all).await.unwrap();
    }

    /// Every "full" hint in `store` is true: each address of its block outside its spans
    /// has a record.
    async fn hints_hold(store: &MemoryStore, keys: &Keys) {
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

    /// A nearly full range that carries no hints is summarised by the first search that
    /// meets it, in bulk, instead of five requests per window and search.
    #[test]
    fn a_nearly_full_range_without_hints_heals_in_one_search() {
        let p = big_pool(0, 1 << 16, None);
        let keys = Keys::new("/t", "n");
        let store = MemoryStore::new();
        let free = [
            p.start + 10 * 1024 + 7,
            p.start + 20 * 1024,
            p.start + 30 * 1024 + 1023,
        ];
        let mut rnd = lcg(3);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            fill_all_but(&store, &keys, &p, &free).await;
            let found = find_free(&store, &keys, &p, &mut rnd).await.unwrap();
            assert!(found.is_some_and(|v| free.contains(&v)), "{found:?}");
            // Every window with a record at each address now says so; the three with room
            // and the first (the network address and the gateway have no record) do not.
            for w in 1..64u128 {
                let first = p.start + w * WINDOW;
                let hint = store.get(&keys.hint(false, 0, first)).await.unwrap();
                let full = hint.is_some_and(|e| hints::decode(&e.value) == Hint::Full(vec![]));
                assert_eq!(full, ![10, 20, 30].contains(&w), "window {w}");
            }
            hints_hold(&store, &keys).await;
            // Each free address is found in turn, then none.
            for _ in 0..3 {
                let v = find_free(&store, &keys, &p, &mut rnd)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(free.contains(&v), "{v}");
                let key = keys.ip(p.addr(v));
                store
                    .commit(
                        &[Compare::Absent(key.clone())],
                        &[Mutation::Put(key, vec![])],
                    )
                    .await
                    .unwrap();
            }
            assert_eq!(find_free(&store, &keys, &p, &mut rnd).await.unwrap(), None);
            hints_hold(&store, &keys).await;
        });
    }

    /// A release lands between a heal's placeholders and its "full" hints, in a window it
    /// counted full: that window's hint is not written, and the address is found.
    #[test]
    fn a_release_while_healing_is_never_hidden() {
        let p = big_pool(0, 1 << 16, None);
        let keys = Keys::new("/t", "n");
        let store = Releasing {
            inner: MemoryStore::new(),
            keys: keys.clone(),
            pool: p.clone(),
            armed: std::sync::atomic::AtomicBool::new(true),
            victim: std::sync::Mutex::new(None),
            released: std::sync::Mutex::new(None),
        };
        let mut rnd = lcg(5);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            fill_all_but(&store.inner, &keys, &p, &[p.start + 40 * 1024 + 9]).await;
            let found = find_free(&store, &keys, &p, &mut rnd).await.unwrap();
            assert!(found.is_some());
            let released = store.released.lock().unwrap().expect("a heal ran");
            let window = hints::block(0, released).0;
            assert_eq!(
                store.inner.get(&keys.hint(false, 0, window)).await.unwrap(),
                None
            );
            hints_hold(&store.inner, &keys).await;
            let mut seen = BTreeSet::new();
            while let Some(v) = find_free(&store, &keys, &p, &mut rnd).await.unwrap() {
                assert!(seen.insert(v), "{v} found twice");
                let key = keys.ip(p.addr(v));
                store
                    .commit(
                        &[Compare::Absent(key.clone())],
                        &[Mutation::Put(key, vec![])],
                    )
                    .await
                    .unwrap();
            }
            assert!(seen.contains(&released), "{released} never found");
        });
    }

    /// The memory store, releasing an address (as the engine does, hints with it) of the
    /// first window a bulk claim of placeholders took, just before the commit that follows.
    struct Releasing {
        inner: MemoryStore,
        keys: Keys,
        pool: Pool,
        /// Until the first bulk claim.
        armed: std::sync::atomic::AtomicBool,
        victim: std::sync::Mutex<Option<u128>>,
        released: std::sync::Mutex<Option<u128>>,
    }

    #[async_trait::async_trait]
    impl LeaseStore for Releasing {
        async fn get(
            &self,
            key: &str,
        ) -> std::result::Result<Option<kube_ipam_store::Entry>, kube_ipam_store::StoreError>
        {
            self.inner.get(key).await
        }
        async fn range(
            &self,
            from: &str,
            to: &str,
            limit: usize,
        ) -> std::result::Result<Vec<kube_ipam_store::Entry>, kube_ipam_store::StoreError> {
            self.inner.range(from, to, limit).await
        }
        async fn snapshot(
            &self,
        ) -> std::result::Result<Box<dyn kube_ipam_store::Snapshot + '_>, kube_ipam_store::StoreError>
        {
            self.inner.snapshot().await
        }
        async fn count(
            &self,
            from: &str,
            to: &str,
        ) -> std::result::Result<u64, kube_ipam_store::StoreError> {
            self.inner.count(from, to).await
        }
        async fn commit(
            &self,
            c: &[Compare],
            m: &[Mutation],
        ) -> std::result::Result<bool, kube_ipam_store::StoreError> {
            let victim = self.victim.lock().unwrap().take();
            if let Some(v) = victim {
                let addr = self.pool.addr(v);
                let mut release = vec![Mutation::Delete(self.keys.ip(addr))];
                release.extend(hints::freed(&self.keys, addr));
                self.inner.commit(&[], &release).await?;
                *self.released.lock().unwrap() = Some(v);
            }
            self.inner.commit(c, m).await
        }
        async fn commit_and_read(
            &self,
            c: &[Compare],
            m: &[Mutation],
            r: &[Read],
        ) -> std::result::Result<kube_ipam_store::Committed, kube_ipam_store::StoreError> {
            let done = self.inner.commit_and_read(c, m, r).await?;
            if m.len() > 1
                && done.revision.is_some()
                && self.armed.swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                let first = self.keys.parse_hint(false, 0, m[0].key()).unwrap();
                *self.victim.lock().unwrap() = Some(first + 100);
            }
            Ok(done)
        }
        async fn ping(&self) -> std::result::Result<(), kube_ipam_store::StoreError> {
            Ok(())
        }
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
        async fn snapshot(
            &self,
        ) -> std::result::Result<Box<dyn kube_ipam_store::Snapshot + '_>, kube_ipam_store::StoreError>
        {
            self.inner.snapshot().await
        }
        async fn count(
            &self,
            from: &str,
            to: &str,
        ) -> std::result::Result<u64, kube_ipam_store::StoreError> {
            // One figure comes back, answered from an index: one key's worth.
            let n = self.inner.count(from, to).await?;
            self.add(1);
            Ok(n)
        }
        async fn commit(
            &self,
            c: &[Compare],
            m: &[Mutation],
        ) -> std::result::Result<bool, kube_ipam_store::StoreError> {
            self.inner.commit(c, m).await
        }
        async fn commit_and_read(
            &self,
            c: &[Compare],
            m: &[Mutation],
            r: &[Read],
        ) -> std::result::Result<kube_ipam_store::Committed, kube_ipam_store::StoreError> {
            let done = self.inner.commit_and_read(c, m, r).await?;
            for a in &done.answers {
                match a {
                    Answer::Entries(e) => self.add(e.len().max(1)),
                    Answer::Counts(n) => self.add(n.as_ref().map_or(0, Vec::len)),
                }
            }
            Ok(done)
        }
        async fn ping(&self) -> std::result::Result<(), kube_ipam_store::StoreError> {
            Ok(())
        }
    }
}
