//! Moving in from the layout of earlier releases, which kept a network's address records and
//! hints under the network (`<prefix>/<network>/ip/...`), so that two networks of one store
//! could hand out one address each. Now the records are one address space for the store.
//!
//! The move is the same compare-and-swap as every write: a record goes from its old key to
//! its key in the space only while the old key is as read and the new one absent, in one
//! commit, so concurrent calls converting the same network (every call checks first) never
//! lose or double a record. A record whose address the space already holds (another network
//! had handed it out too) stays held, under `held-twice/`, and `check-store` reports it until
//! one of its two attachments goes. Claims keep the old key of their own network among their
//! conditions, so a record left in the old place, or written there by a node still running
//! an earlier release, holds its address as before.

use kube_ipam_store::records::{decode, encode};
use kube_ipam_store::{Answer, Compare, Entry, IpRecord, LeaseStore, Mutation, Read};

use super::allocator::Allocator;
use crate::Result;

/// Records moved per commit: two conditions and two writes each, within etcd's 128
/// operations of a transaction.
const BATCH: usize = 30;

/// What settling the layout did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Converted {
    /// Records moved into the shared space.
    pub moved: u64,
    /// Records whose address another network held: left held twice.
    pub held_twice: u64,
    /// Hints of the old layout removed.
    pub hints: u64,
}

impl<S: LeaseStore> Allocator<S> {
    /// Before a call uses the store: moves whatever is left of the network's records in the
    /// old layout into the shared space, and with `first_use` marks the network as existing
    /// in the store. Costs one request when there is nothing to do.
    pub async fn settle_layout(&self, first_use: bool) -> Result<Converted> {
        let (from, to) = self.keys.network_ips();
        let marker = self.keys.network_marker();
        let reads = [
            Read::Counts {
                ranges: vec![(from, to)],
                skip_if_present: Vec::new(),
            },
            Read::Range {
                to: format!("{marker}\0"),
                from: marker.clone(),
                limit: 1,
                keys_only: true,
            },
        ];
        let mut answers = self.store.reads(&reads).await?.into_iter();
        let left = answers
            .next()
            .map(Answer::into_counts)
            .transpose()?
            .flatten()
            .and_then(|n| n.first().copied())
            .unwrap_or(0);
        let marked = !answers
            .next()
            .map(Answer::into_entries)
            .transpose()?
            .unwrap_or_default()
            .is_empty();
        let mut done = Converted::default();
        if left > 0 {
            done = self.convert_layout().await?;
            tracing::info!(
                network = self.keys.network(),
                moved = done.moved,
                held_twice = done.held_twice,
                hints = done.hints,
                "moved the network's address records into the store's shared address space"
            );
        }
        if !marked && (first_use || left > 0) {
            // Losing this race only means another call marked it first.
            self.store
                .commit(
                    &[Compare::Absent(marker.clone())],
                    &[Mutation::Put(marker, b"{}".to_vec())],
                )
                .await?;
        }
        Ok(done)
    }

    /// Whether the network is in this store: it has its marker, or anything at all under its
    /// own keys (attachments, bindings, counters, records of the old layout to move in).
    pub async fn known(&self) -> Result<bool> {
        let (from, to) = self.keys.all();
        Ok(self.store.count(&from, &to).await? > 0)
    }

    async fn convert_layout(&self) -> Result<Converted> {
        let (from, to) = self.keys.network_ips();
        let mut done = Converted::default();
        let mut cursor = from;
        loop {
            let page = self.store.range(&cursor, &to, BATCH).await?;
            let Some(last) = page.last() else {
                break;
            };
            cursor = format!("{}\0", last.key);
            let moves: Vec<Move> = page.into_iter().map(|e| self.plan_move(e)).collect();
            let compares: Vec<Compare> = moves.iter().flat_map(Move::compares).collect();
            let mutations: Vec<Mutation> = moves.iter().flat_map(Move::mutations).collect();
            if self.store.commit(&compares, &mutations).await? {
                done.moved += moves.len() as u64;
                continue;
            }
            // One of them is held in the space already, or changed meanwhile: one by one.
            for m in moves {
                if self.store.commit(&m.compares(), &m.mutations()).await? {
                    done.moved += 1;
                } else if self.leave_held_twice(&m).await? {
                    done.held_twice += 1;
                }
            }
        }
        done.hints = self.drop_old_hints().await?;
        Ok(done)
    }

    /// Where one old record goes: its key in the space, naming the network. A key that is
    /// not an address, or a record that cannot be read, goes to `held-twice/` as it is, for
    /// `check-store` to report: it must not keep the conversion from ever finishing.
    fn plan_move(&self, e: Entry) -> Move {
        let ip = self.keys.parse_network_ip(&e.key);
        let record = ip.and_then(|_| decode::<IpRecord>(&e.key, &e.value).ok());
        match (ip, record) {
            (Some(ip), Some(mut rec)) => {
                rec.network = self.keys.network().to_owned();
                Move {
                    to: self.keys.ip(ip),
                    value: encode(&rec),
                    twice: self.keys.held_twice(ip),
                    from: e,
                }
            }
            _ => {
                let twice = format!("{}~{}", self.keys.held_twice_all().0, e.key);
                Move {
                    to: twice.clone(),
                    value: e.value.clone(),
                    twice,
                    from: e,
                }
            }
        }
    }

    /// A record that could not move: if the space holds its address (another network's
    /// attachment), it goes to `held-twice/`; if it changed or went meanwhile, the next
    /// conversion sees it again.
    async fn leave_held_twice(&self, m: &Move) -> Result<bool> {
        let Some(now) = self.store.get(&m.from.key).await? else {
            return Ok(false);
        };
        if now.revision != m.from.revision {
            return Ok(false);
        }
        let moved = self
            .store
            .commit(
                &[Compare::Revision(m.from.key.clone(), m.from.revision)],
                &[
                    Mutation::Put(m.twice.clone(), m.value.clone()),
                    Mutation::Delete(m.from.key.clone()),
                ],
            )
            .await?;
        if moved {
            tracing::warn!(
                network = self.keys.network(),
                key = %m.from.key,
                "address already held in the store's shared space by another network: \
                 held twice until one of its attachments goes (kube-ipam check-store lists it)"
            );
        }
        Ok(moved)
    }

    /// The old layout's hints summarise records that are no longer under them; the space
    /// keeps its own.
    async fn drop_old_hints(&self) -> Result<u64> {
        let (from, to) = self.keys.network_hints();
        let mut dropped = 0;
        loop {
            let page = self.store.range_keys(&from, &to, BATCH * 4).await?;
            if page.is_empty() {
                return Ok(dropped);
            }
            let deletes: Vec<Mutation> = page
                .iter()
                .map(|e| Mutation::Delete(e.key.clone()))
                .collect();
            self.store.commit(&[], &deletes).await?;
            dropped += deletes.len() as u64;
        }
    }
}

/// One record on its way from the old layout.
struct Move {
    from: Entry,
    to: String,
    value: Vec<u8>,
    twice: String,
}

impl Move {
    fn compares(&self) -> Vec<Compare> {
        vec![
            Compare::Revision(self.from.key.clone(), self.from.revision),
            Compare::Absent(self.to.clone()),
        ]
    }

    fn mutations(&self) -> Vec<Mutation> {
        vec![
            Mutation::Put(self.to.clone(), self.value.clone()),
            Mutation::Delete(self.from.key.clone()),
        ]
    }
}
