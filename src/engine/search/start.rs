//! The first request of a search: the hints above the windows, and counts of where to look.

use std::collections::BTreeSet;

use kube_ipam_store::{Answer, Entry, Keys, LeaseStore, Read};

use super::window::{Look, PART, PARTS};
use super::{Cooling, Search, Space, FANOUT};
use crate::engine::hints::{self, Seen, Span};
use crate::engine::pool::Pool;
use crate::Result;

/// Hints of level 1 and up read at the start of a search, at most.
pub(super) const ABOVE_LIMIT: usize = 256;

/// The first request of a search, made ready before the search runs, so that the first
/// requests of every range of a set go out as one ([`LeaseStore::reads`]): a range behind a
/// full one then costs no round trip of its own.
pub struct Start {
    step: Step,
    reads: Vec<Read>,
    cooling: Option<Cooling>,
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
    pub fn new(
        keys: &Keys,
        pool: &Pool,
        behind: bool,
        cooling: Option<Cooling>,
        rnd: &mut impl FnMut() -> u128,
    ) -> Start {
        let space = Space {
            keys,
            pool,
            cooling,
        };
        let span = pool.end - pool.start + 1;
        if hints::block(0, pool.start) == hints::block(0, pool.end) {
            if behind && span > PART {
                let from = pool.start + rnd() % (span - PART + 1);
                let to = from + PART - 1;
                return Start {
                    step: Step::Glimpse((from, to)),
                    reads: space.taken_reads(from, to),
                    cooling,
                };
            }
            return Start {
                step: Step::Window,
                reads: space.taken_reads(pool.start, pool.end),
                cooling,
            };
        }
        let top = space.top();
        // In a range of up to 1024 windows, the windows' hints are counted: there are few
        // unless the range is nearly full, and then they lead straight to the windows with
        // room. In a larger one (a /8, a /64), the parts of a random window, which nearly
        // always has room.
        // A spot among the addresses the range hands out: a large excluded span is not
        // looked at in vain.
        let spot = match pool.size() {
            0 => pool.start,
            n => pool.nth_dynamic(rnd() % n),
        };
        let window = hints::block(0, spot);
        let (groups, ranges) = if top == 0 {
            let s = hints::shift(0);
            space.hint_groups(0, pool.start >> s, pool.end >> s, PARTS)
        } else {
            space.parts(window.0, window.1)
        };
        let (from, to) = space.above_keys();
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
            cooling,
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
            space: Space {
                keys,
                pool,
                cooling: self.cooling,
            },
            store,
            avoid,
            rnd,
        };
        let mut answers = answers.into_iter();
        let (top, (bf, bl), groups) = match self.step {
            Step::Window => {
                let taken = search.space.parse_taken_answers(&mut answers)?;
                return Ok(search.pick(pool.start, pool.end, &taken));
            }
            Step::Glimpse((from, to)) => {
                let taken = search.space.parse_taken_answers(&mut answers)?;
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
        let mut next = move || {
            answers.next().ok_or_else(|| {
                crate::Error::Internal("a search's first read came back short".into())
            })
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
        let above = search.space.above(&entries);
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
pub(super) struct Above {
    /// Some level's blocks over the range all say it is full.
    full: bool,
    /// Per level (index 0 is level 1), the blocks over the range and their hints; empty for
    /// a level with more blocks than one read holds.
    seen: Vec<Vec<(u128, Seen)>>,
}

impl Space<'_> {
    /// Where the hints of every level above the windows over the pool lie: from the pool's
    /// first block of level 1 to its last block of the top level. The range also holds the
    /// few hints of level 1 and up past the pool (each covers a million addresses or more).
    pub(super) fn above_keys(&self) -> (String, String) {
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
    pub(super) fn above(&self, entries: &[Entry]) -> Above {
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
}
