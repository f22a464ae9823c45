//! One window: its records counted in parts, and only a part with room read.

use super::{Search, Space};
use crate::engine::hints::Span;
use crate::Result;
use kube_ipam_store::LeaseStore;

/// Parts counted in one request when narrowing down.
pub(super) const PARTS: u128 = 16;

/// Counting stops at parts of this many addresses, which are then read.
pub(super) const PART: u128 = 64;

/// What reading one window found.
pub(super) enum Look {
    Free(u128),
    /// No free dynamic address; every record of the window, ascending.
    Full(Vec<u128>),
}

/// What counting the parts of a window found.
pub(super) enum Narrowed {
    Free(u128),
    /// A record at every address.
    Taken,
    /// Counts show no part with room, or the part read had none.
    Unknown,
}

/// `a..=b` in at most `n` consecutive spans of equal length (the last may be shorter).
pub(super) fn split(a: u128, b: u128, n: u128) -> Vec<Span> {
    let step = (b - a + 1).div_ceil(n);
    (0..n)
        .map(|i| a + i * step)
        .take_while(|&x| x <= b)
        .map(|x| (x, (x + step - 1).min(b)))
        .collect()
}

impl Space<'_> {
    /// `a..=b` in [`PARTS`] parts, and the key range of each part's address records.
    pub(super) fn parts(&self, a: u128, b: u128) -> (Vec<Span>, Vec<(String, String)>) {
        let parts = split(a, b, PARTS);
        let ranges = parts
            .iter()
            .map(|&(x, y)| self.keys.ip_range(self.pool.addr(x), self.pool.addr(y)))
            .collect();
        (parts, ranges)
    }
}

impl<S: LeaseStore + ?Sized, R: FnMut() -> u128> Search<'_, S, R> {
    /// Looks for a free address in the window `bf..=bl`.
    ///
    /// Reading keys is what a search pays for on etcd (each one is read from disk), while a
    /// count is answered from its index. So a window is not read whole: the records of its
    /// parts are counted at once ([`LeaseStore::counts`]), and a part with fewer records than
    /// dynamic addresses is read. The window is read whole only when counting cannot show
    /// room (records in the range's holes can hide it) or the part read has none after all
    /// (a claim got there in between).
    pub(super) async fn look(
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
        let (from, to) = (bf.max(self.space.pool.start), bl.min(self.space.pool.end));
        let taken = self.taken(bf, bl).await?;
        Ok(match self.pick(from, to, &taken) {
            Some(v) => Look::Free(v),
            None => Look::Full(taken),
        })
    }

    /// Splits `bf..=bl` in [`PARTS`] parts, counts their records in one request and goes on
    /// in a part with room (a random one), down to [`PART`] addresses, which are read.
    /// `counted`: the parts of `bf..=bl` ([`Self::parts`]) with their records, if counted.
    pub(super) async fn narrow(
        &mut self,
        bf: u128,
        bl: u128,
        mut counted: Option<Vec<(Span, u128)>>,
    ) -> Result<Narrowed> {
        let (mut a, mut b) = (bf, bl);
        loop {
            if b - a < PART {
                let taken = self.taken(a, b).await?;
                let (from, to) = (a.max(self.space.pool.start), b.min(self.space.pool.end));
                return Ok(match self.pick(from, to, &taken) {
                    Some(v) => Narrowed::Free(v),
                    None => Narrowed::Unknown,
                });
            }
            let parts = match counted.take() {
                Some(parts) => parts,
                None => {
                    let (parts, ranges) = self.space.parts(a, b);
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
                .filter(|&&((x, y), n)| n < self.space.pool.dynamic_in(x, y))
                .map(|&(p, _)| p)
                .collect();
            if open.is_empty() {
                return Ok(Narrowed::Unknown);
            }
            (a, b) = open[self.random_below(open.len())];
        }
    }
}
