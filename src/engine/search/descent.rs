//! The descent through hints: from the blocks of the top level down to a window not known to
//! be full, reading the few hints there are or, when nearly every block has one, counting
//! hint keys in groups down to a block without.

use std::future::Future;
use std::pin::Pin;

use kube_ipam_store::LeaseStore;

use super::healing::HEAL_AFTER;
use super::window::{split, Look, PARTS};
use super::{Search, Space, FANOUT};
use crate::engine::hints::{self, Hint, Seen, Span};
use crate::Result;

/// Hints read at once; past this many, blocks without one are found by counts.
pub(super) const SPARSE: usize = 64;

/// Groups counted at once when [`Search::by_counts`] narrows down: a group of the first
/// count (up to 64 windows of a /12) is then counted window by window in one request, and
/// 64 counts still fit one etcd transaction.
pub(super) const SINGLES: u128 = 64;

/// Blocks found full by [`Search::by_counts`] before it leaves the search to the hints.
pub(super) const TRIES: usize = 4;

/// What exploring one block found.
pub(super) enum Outcome {
    Free(u128),
    /// No free address of the pool; the spans of the block without a record, if few.
    Full(Option<Vec<Span>>),
}

/// What exploring the blocks of one level found.
pub(super) enum Swept {
    Free(u128),
    /// No free address; per block, what exploring it found (`None`: not explored).
    Full(Vec<Option<Option<Vec<Span>>>>),
}

pub(super) type Boxed<'b, T> = Pin<Box<dyn Future<Output = Result<T>> + 'b>>;

impl Space<'_> {
    /// The blocks of `level` `lo..=hi` (indexes) in `n` groups, and the key range of each
    /// group's hints.
    pub(super) fn hint_groups(
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

    /// Whether the block of `level` at `first` holds a dynamic address of the pool at all:
    /// blocks inside a fixed zone are never read.
    pub(super) fn in_pool(&self, level: u8, first: u128) -> bool {
        let (_, last) = hints::block(level, first);
        self.pool.any_dynamic(first, last)
    }

    /// Blocks of `level` `a..=b` (indexes) holding a dynamic address of the pool.
    pub(super) fn blocks_in_pool(&self, level: u8, a: u128, b: u128) -> u128 {
        let s = hints::shift(level);
        (a..=b).filter(|i| self.in_pool(level, i << s)).count() as u128
    }
}

impl<S: LeaseStore + ?Sized, R: FnMut() -> u128> Search<'_, S, R> {
    /// The hints of blocks `first..=last` of `level` (block indexes), in order.
    pub(super) async fn hints(&self, level: u8, first: u128, last: u128) -> Result<Vec<Seen>> {
        let s = hints::shift(level);
        let (kf, kt) = self
            .space
            .keys
            .hint_range(self.space.pool.v6, level, first << s, last << s);
        let entries = self.store.range(&kf, &kt, 0).await?;
        Ok(self.space.seen_of(level, first, last, entries))
    }

    /// The search over hints, from the blocks of `top`; `counted`: the hint keys of the
    /// pool's blocks of `top` already counted in groups ([`Self::hint_groups`]).
    pub(super) async fn hinted(
        &mut self,
        top: u8,
        mut counted: Option<Vec<(Span, u128)>>,
    ) -> Result<Option<u128>> {
        let s = hints::shift(top);
        let (first, last) = (self.space.pool.start >> s, self.space.pool.end >> s);
        let n = last - first + 1;
        // Only an IPv6 range wider than a /58 has more top blocks than one read holds; it
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
    pub(super) async fn count_hints(
        &self,
        level: u8,
        lo: u128,
        hi: u128,
        n: u128,
    ) -> Result<Vec<(Span, u128)>> {
        let (groups, ranges) = self.space.hint_groups(level, lo, hi, n);
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
    pub(super) async fn by_counts(
        &mut self,
        level: u8,
        groups: Vec<(Span, u128)>,
    ) -> Result<Option<u128>> {
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
                    .filter(|&&((x, y), n)| n < self.space.blocks_in_pool(level, x, y))
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

    /// Explores the blocks of the pool not known to be full, from a random one; returns the
    /// first free address found.
    pub(super) async fn among(
        &mut self,
        level: u8,
        blocks: &[(u128, Seen)],
    ) -> Result<Option<u128>> {
        Ok(match self.sweep(level, blocks).await? {
            Swept::Free(v) => Some(v),
            Swept::Full(_) => None,
        })
    }

    /// Explores `blocks` of `level` (each with its hint as read) that hold a dynamic address
    /// of the pool and are not known to be full, from a random one, up to the first free
    /// address. Windows without a hint found full in a row ([`HEAL_AFTER`]) mean a nearly
    /// full range that nothing has summarised yet: the rest of them are then counted in bulk
    /// ([`Search::heal`], `healing.rs`) rather than explored one by one.
    pub(super) async fn sweep(&mut self, level: u8, blocks: &[(u128, Seen)]) -> Result<Swept> {
        let mut found: Vec<Option<Option<Vec<Span>>>> = vec![None; blocks.len()];
        let mut open: Vec<usize> = (0..blocks.len())
            .filter(|&i| {
                self.space.in_pool(level, blocks[i].0) && !blocks[i].1.full_for(self.space.pool)
            })
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

    /// Looks for a free address of the pool in the block of `level` at `first`, whose hint
    /// was read as `seen` before anything in the block was.
    pub(super) fn explore<'b>(
        &'b mut self,
        level: u8,
        first: u128,
        seen: &'b Seen,
    ) -> Boxed<'b, Outcome> {
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
}
