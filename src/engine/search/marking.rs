//! Writing "full" hints: conditional on the hint key being as it was before the block was read,
//! so that a release in between is never hidden.

use kube_ipam_store::{Answer, Compare, LeaseStore, Mutation, Read};

use super::windows::window_bitmap;
use super::{Search, Space};
use crate::engine::hints::{self, Hint, Seen, Span};
use crate::Result;

impl Space<'_> {
    /// What [`Self::reread`] reads first: the count of a window's records, or the hints of
    /// the level below.
    pub(super) fn reread_read(&self, level: u8, first: u128) -> Read {
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
}

impl<S: LeaseStore + ?Sized, R: FnMut() -> u128> Search<'_, S, R> {
    /// After a search found the pool full from the blocks of `top`, records it level by
    /// level above, so that [`Self::above`] knows it next time. `seen` holds the hints of
    /// those levels as read before the search.
    pub(super) async fn mark_above(&mut self, top: u8, seen: &[Vec<(u128, Seen)>]) -> Result<()> {
        for level in (top + 1)..hints::levels(self.space.pool.v6) {
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

    /// Records that the block of `level` at `first` has no record only in `spans`, if its
    /// hint is still as `seen` (read before the block's content). A block without a hint
    /// gets a pending one first and is read again, so that the "full" can be conditional.
    pub(super) async fn mark(
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
        if spans
            .iter()
            .any(|&(a, b)| self.space.pool.any_dynamic(a, b))
        {
            return Ok(());
        }
        let key = self.space.keys.hint(self.space.pool.v6, level, first);
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
                        &[self.space.reread_read(level, first)],
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
    pub(super) async fn reread(&mut self, level: u8, first: u128) -> Result<Option<Vec<Span>>> {
        let read = self.space.reread_read(level, first);
        let answer = self.store.reads(&[read]).await?.into_iter().next();
        let answer =
            answer.ok_or_else(|| crate::Error::Internal("a read came back short".into()))?;
        self.reread_from(level, first, answer).await
    }

    /// [`Self::reread`] from the answer to [`Self::reread_read`].
    pub(super) async fn reread_from(
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
            let (from, to) = (bf.max(self.space.pool.start), bl.min(self.space.pool.end));
            if window_bitmap(self.space.pool, from, to, taken.iter().copied())
                .next_clear(0)
                .is_some()
            {
                return Ok(None);
            }
            return Ok(hints::gaps(bf, bl, taken.into_iter()));
        }
        let s = hints::shift(level - 1);
        let children = self
            .space
            .seen_of(level - 1, bf >> s, bl >> s, answer.into_entries()?);
        let mut parts = Vec::with_capacity(children.len());
        for (j, c) in children.iter().enumerate() {
            let cf = bf + ((j as u128) << s);
            match &c.hint {
                Hint::Full(spans)
                    if c.full_for(self.space.pool) || !self.space.in_pool(level - 1, cf) =>
                {
                    parts.extend(spans.iter().copied())
                }
                Hint::Unknown if !self.space.in_pool(level - 1, cf) => {
                    parts.push(hints::block(level - 1, cf))
                }
                _ => return Ok(None),
            }
        }
        Ok(hints::merge(parts.into_iter()))
    }
}
