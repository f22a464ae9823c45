//! Free-space hints: which blocks of addresses were last seen with no room.
//!
//! The address records stay the only truth. A hint only lets a search skip blocks it would
//! otherwise read, so it may be missing or out of date in one direction only: it may call a
//! block roomier than it is (that costs a read), never fuller. That is kept by two rules:
//!
//! - Every commit that deletes an address record also deletes the hints of every block
//!   holding that address ([`crate::engine::Allocator::commit`]). Claims never touch hints, so concurrent
//!   claims never meet on a hint key.
//! - A search writes a "full" hint only conditionally on the hint key being exactly as it was
//!   before the search read the block. A release in between changes or deletes the key, so
//!   the write fails instead of hiding the freed address.
//!
//! Blocks are aligned on the address, not on a range: a window is `2^10` addresses, a block
//! of level `k` is `2^(10 (k + 1))`. A hint lists the spans of its block that have no record
//! (a superset is fine), so it is true whatever range reads it: one range sees the block as
//! full when every span falls in its holes or outside it.

use std::net::IpAddr;

use kube_ipam_store::{Entry, Keys, Mutation, Revision};

use super::pool::{to_u128, Pool};

/// Addresses of a window, as a power of two; also the fan-out of every level above it.
pub const BITS: u32 = 10;

/// Spans a hint may list; a block with more free spans than this is left without a hint.
pub const MAX_SPANS: usize = 16;

/// Inclusive span of addresses.
pub type Span = (u128, u128);

/// Levels of hints: enough that the top level of any IPv4 range, and of an IPv6 range up
/// to a /64, has a few dozen blocks at most.
pub fn levels(v6: bool) -> u8 {
    if v6 {
        6
    } else {
        3
    }
}

/// log2 of the size of a block of `level`.
pub fn shift(level: u8) -> u32 {
    BITS * (u32::from(level) + 1)
}

/// The block of `level` holding `v`.
pub fn block(level: u8, v: u128) -> Span {
    let s = shift(level);
    let first = (v >> s) << s;
    (first, first + ((1u128 << s) - 1))
}

/// What a hint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// Nothing useful: no hint, one being written, or one this version cannot read.
    Unknown,
    /// Every address of the block outside these spans has a record.
    Full(Vec<Span>),
}

/// A hint as read, with the condition that proves it unchanged at a later commit.
#[derive(Debug, Clone)]
pub struct Seen {
    pub hint: Hint,
    pub revision: Option<Revision>,
}

impl Seen {
    pub const ABSENT: Seen = Seen {
        hint: Hint::Unknown,
        revision: None,
    };

    pub fn from_entry(e: &Entry) -> Seen {
        Seen {
            hint: decode(&e.value),
            revision: Some(e.revision),
        }
    }

    /// Whether the block certainly has no free dynamic address of `pool`.
    pub fn full_for(&self, pool: &Pool) -> bool {
        match &self.hint {
            Hint::Full(spans) => spans.iter().all(|&(a, b)| !pool.any_dynamic(a, b)),
            Hint::Unknown => false,
        }
    }
}

/// Written while a search re-reads a block, so that its "full" can be made conditional on
/// the key's revision; reads as [`Hint::Unknown`].
pub const PENDING: &[u8] = b"pending";

pub fn encode(spans: &[Span]) -> Vec<u8> {
    let mut s = String::from("full");
    for (a, b) in spans {
        s.push_str(&format!(" {a:x}-{b:x}"));
    }
    s.into_bytes()
}

pub fn decode(value: &[u8]) -> Hint {
    let Some(rest) = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.strip_prefix("full"))
    else {
        return Hint::Unknown;
    };
    let mut spans = Vec::new();
    for part in rest.split_whitespace() {
        let parsed = part.split_once('-').and_then(|(a, b)| {
            let a = u128::from_str_radix(a, 16).ok()?;
            let b = u128::from_str_radix(b, 16).ok()?;
            (a <= b).then_some((a, b))
        });
        match parsed {
            Some(s) => spans.push(s),
            None => return Hint::Unknown,
        }
    }
    Hint::Full(spans)
}

/// Runs of `first..=last` missing from `taken` (ascending), or `None` past [`MAX_SPANS`].
pub fn gaps(first: u128, last: u128, taken: impl Iterator<Item = u128>) -> Option<Vec<Span>> {
    let mut spans = Vec::new();
    let mut next = first;
    for v in taken {
        if v < next || v > last {
            continue;
        }
        if v > next {
            spans.push((next, v - 1));
        }
        if v == last {
            return (spans.len() <= MAX_SPANS).then_some(spans);
        }
        next = v + 1;
    }
    spans.push((next, last));
    (spans.len() <= MAX_SPANS).then_some(spans)
}

/// Ascending spans merged where they touch, or `None` past [`MAX_SPANS`].
pub fn merge(spans: impl Iterator<Item = Span>) -> Option<Vec<Span>> {
    let mut out: Vec<Span> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => {
                if out.len() == MAX_SPANS {
                    return None;
                }
                out.push((a, b));
            }
        }
    }
    Some(out)
}

/// Deletes of every hint that may count `addr` as taken.
pub fn freed(keys: &Keys, addr: IpAddr) -> impl Iterator<Item = Mutation> + '_ {
    let v6 = addr.is_ipv6();
    let v = to_u128(addr);
    (0..levels(v6)).map(move |level| Mutation::Delete(keys.hint(v6, level, block(level, v).0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_round_trip_and_unknown_values_mean_nothing() {
        let spans = vec![(0x0a00_0000, 0x0a00_0001), (0x0a00_03ff, 0x0a00_03ff)];
        assert_eq!(decode(&encode(&spans)), Hint::Full(spans));
        assert_eq!(decode(&encode(&[])), Hint::Full(vec![]));
        for junk in [&b""[..], PENDING, b"full x-1", b"full 5-1", b"\xff"] {
            assert_eq!(decode(junk), Hint::Unknown, "{junk:?}");
        }
    }

    #[test]
    fn gaps_are_the_runs_without_a_record() {
        assert_eq!(
            gaps(0, 9, [0, 1, 5, 9].into_iter()),
            Some(vec![(2, 4), (6, 8)])
        );
        assert_eq!(gaps(0, 3, [].into_iter()), Some(vec![(0, 3)]));
        assert_eq!(gaps(0, 3, [0, 1, 2, 3].into_iter()), Some(vec![]));
        let every_other = (0..100u128).step_by(2);
        assert_eq!(gaps(0, 99, every_other), None);
    }

    #[test]
    fn blocks_nest() {
        let v = 0x0a12_3456;
        assert_eq!(block(0, v), (0x0a12_3400, 0x0a12_37ff));
        assert_eq!(block(1, v), (0x0a10_0000, 0x0a1f_ffff));
        assert_eq!(block(2, v), (0x0000_0000, 0x3fff_ffff));
    }
}
