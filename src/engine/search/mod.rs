//! Range search: find a free address whose cost does not depend on the range's size or fill.
//!
//! What costs on etcd is reading keys (each is read from disk); counts come from its index.
//! So a search goes in steps, each in a room of its own:
//!
//! - `start.rs`: the first request, made ready ahead ([`Start`]) so that a range set sends the
//!   first requests of all its ranges as one. It reads the free-space hints
//!   ([`crate::engine::hints`]) above the windows, with counts of where to look next: of the
//!   windows' hints in a range of up to 1024 windows, of the parts of a random window in a
//!   larger one. A range some hint calls full ends there.
//! - `window.rs`: one window, its records counted in parts and only a part with room read, at
//!   a random spot, which also keeps concurrent allocators (other processes, other nodes)
//!   apart.
//! - `descent.rs`: otherwise, down through the hints to a window not known to be full, by
//!   reading the few hints there are, or, when nearly every window has one, by counting hint
//!   keys in groups down to a window without.
//! - `marking.rs`: what a search finds full on the way gets a "full" hint, and the levels above
//!   the windows once it finds the whole range full, each conditional on the hint being as it
//!   was read, so a release in between is never hidden.
//! - `healing.rs`: a range missing its hints (written by an older version, or imported) is
//!   summarised in bulk once two windows without a hint come out full in a row.
//!
//! `windows.rs` holds the geometry every step shares: the windows of a range and the bitmap of
//! one. `Space` is what a search knows before it asks the store anything: where the range's
//! records and hints lie in the key space.

mod descent;
mod healing;
mod marking;
mod start;
mod window;
mod windows;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use kube_ipam_store::{Entry, Keys, LeaseStore, Read};

use super::hints::{self, Seen};
use super::pool::Pool;
use crate::Result;

pub use start::Start;
pub use windows::{window_bitmap, Windows};

/// Addresses read per window.
pub const WINDOW: u128 = 1 << hints::BITS;

/// Finds a free dynamic address of `pool`, or `None` when every one is taken.
/// `rnd` supplies the randomness: where to look first and the spot inside a window.
pub async fn find_free<S: LeaseStore + ?Sized>(
    store: &S,
    keys: &Keys,
    pool: &Pool,
    rnd: &mut impl FnMut() -> u128,
) -> Result<Option<u128>> {
    let first = Start::new(keys, pool, false, None, rnd);
    let answers = store.reads(first.reads()).await?;
    first
        .finish(store, keys, pool, &BTreeSet::new(), rnd, answers)
        .await
}

/// Blocks whose hints are read in one request: a level's fan-out.
pub(super) const FANOUT: u128 = 1 << hints::BITS;

/// `reuseDelay`: a released address waits this long before it goes to another attachment,
/// as long as another address is free. Judged by this node's clock against the release time
/// the releasing node wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooling {
    pub delay_ms: u64,
    pub now_ms: u64,
}

impl Cooling {
    /// Whether a mark written at `released_ms` still holds its address back.
    pub fn holds(&self, released_ms: u64) -> bool {
        self.now_ms < released_ms.saturating_add(self.delay_ms)
    }
}

/// The range a search looks in and its keys: what the search works out without the store.
#[derive(Clone, Copy)]
pub(super) struct Space<'a> {
    pub(super) keys: &'a Keys,
    pub(super) pool: &'a Pool,
    /// Released addresses still cooling down count as taken: never picked while another is
    /// free, and, like taken ones, left out of the free spans a hint lists.
    pub(super) cooling: Option<Cooling>,
}

/// One search of one range, with the store it reads and the randomness it picks with.
pub(super) struct Search<'a, S: ?Sized, R> {
    pub(super) space: Space<'a>,
    pub(super) store: &'a S,
    /// Held where kube-ipam keeps no record (the original plugin's `used/` keys): never
    /// picked, never put in a hint.
    pub(super) avoid: &'a BTreeSet<u128>,
    pub(super) rnd: &'a mut R,
}

impl Space<'_> {
    /// [`Search::taken`] as a read of a batch.
    pub(super) fn taken_read(&self, from: u128, to: u128) -> Read {
        let (from, to) = self.keys.ip_range(self.pool.addr(from), self.pool.addr(to));
        Read::Range {
            from,
            to,
            limit: 0,
            keys_only: true,
        }
    }

    /// [`Self::taken_read`], and with a reuse delay the cooling marks of the same addresses:
    /// one batch, answered by [`Self::parse_taken_answers`].
    pub(super) fn taken_reads(&self, from: u128, to: u128) -> Vec<Read> {
        let mut reads = vec![self.taken_read(from, to)];
        if self.cooling.is_some() {
            let (from, to) = self
                .keys
                .cool_range(self.pool.addr(from), self.pool.addr(to));
            reads.push(Read::Range {
                from,
                to,
                limit: 0,
                keys_only: false,
            });
        }
        reads
    }

    /// The taken addresses from the answers to [`Self::taken_reads`], ascending.
    pub(super) fn parse_taken_answers(
        &self,
        answers: &mut impl Iterator<Item = kube_ipam_store::Answer>,
    ) -> Result<Vec<u128>> {
        let mut next = || {
            answers
                .next()
                .ok_or_else(|| crate::Error::Internal("a search's read came back short".into()))
        };
        let mut taken = self.parse_taken(next()?.into_entries()?);
        if let Some(cooling) = self.cooling {
            let marks = next()?.into_entries()?;
            let before = taken.len();
            taken.extend(
                marks
                    .iter()
                    .filter(|e| cooling.holds(super::cooling::released(&e.value)))
                    .filter_map(|e| self.keys.parse_cool(&e.key))
                    .map(super::pool::to_u128),
            );
            if taken.len() > before {
                taken.sort_unstable();
                taken.dedup();
            }
        }
        Ok(taken)
    }

    /// The addresses of the address records `entries`.
    pub(super) fn parse_taken(&self, entries: Vec<Entry>) -> Vec<u128> {
        entries
            .iter()
            .filter_map(|e| self.keys.parse_ip(&e.key))
            .map(super::pool::to_u128)
            .collect()
    }

    /// The hints of blocks `first..=last` of `level` (block indexes), in order, from the
    /// entries of their key range.
    pub(super) fn seen_of(
        &self,
        level: u8,
        first: u128,
        last: u128,
        entries: Vec<Entry>,
    ) -> Vec<Seen> {
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
    pub(super) fn blocks_over(&self, level: u8) -> u128 {
        let s = hints::shift(level);
        (self.pool.end >> s) - (self.pool.start >> s) + 1
    }

    /// The lowest level whose blocks over the pool fit one read.
    pub(super) fn top(&self) -> u8 {
        let mut top = 0;
        while top + 1 < hints::levels(self.pool.v6) && self.blocks_over(top) > FANOUT {
            top += 1;
        }
        top
    }
}

impl<S: LeaseStore + ?Sized, R: FnMut() -> u128> Search<'_, S, R> {
    pub(super) fn random_below(&mut self, n: usize) -> usize {
        ((self.rnd)() % n.max(1) as u128) as usize
    }

    /// The taken addresses of `from..=to`, ascending: keys only (and, with a reuse delay,
    /// the addresses still cooling down, read in the same request).
    pub(super) async fn taken(&self, from: u128, to: u128) -> Result<Vec<u128>> {
        if self.space.cooling.is_some() {
            let reads = self.space.taken_reads(from, to);
            let answers = self.store.reads(&reads).await?;
            return self.space.parse_taken_answers(&mut answers.into_iter());
        }
        let (kf, kt) = self
            .space
            .keys
            .ip_range(self.space.pool.addr(from), self.space.pool.addr(to));
        let entries = self.store.range_keys(&kf, &kt, 0).await?;
        Ok(self.space.parse_taken(entries))
    }

    /// A free dynamic address of `from..=to` (inside the pool) at a random spot, then the
    /// next free one: two allocators reading the same window still tend to pick apart.
    pub(super) fn pick(&mut self, from: u128, to: u128, taken: &[u128]) -> Option<u128> {
        let held = taken
            .iter()
            .copied()
            .chain(self.avoid.range(from..=to).copied());
        let bits = window_bitmap(self.space.pool, from, to, held);
        let spot = self.random_below(bits.len());
        bits.next_clear_wrapping(spot).map(|i| from + i as u128)
    }
}
