//! The translation between the store's requests and etcd transactions: comparisons, changes
//! and reads as the operations of a `Txn`, and a transaction's responses as entries, counts
//! and answers. Nothing here sends anything; `store.rs` sends what this builds.

use std::collections::HashSet;

use etcd_client::{
    Compare as EtcdCompare, CompareOp, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use kube_ipam_store::{Answer, Compare, Entry, Mutation, Read, Revision, StoreError};

pub(crate) fn entry(kv: KeyValue) -> Result<Entry, StoreError> {
    let revision = kv.mod_revision();
    let (key, value) = kv.into_key_value();
    let key = String::from_utf8(key).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        reason: "key is not UTF-8".into(),
    })?;
    let revision = u64::try_from(revision)
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| StoreError::Corrupt {
            key: key.clone(),
            reason: format!("mod revision {revision} is not positive"),
        })?;
    Ok(Entry {
        key,
        value,
        revision,
    })
}

/// etcd refuses a transaction that touches one key twice; applying mutations in order means
/// only the last one per key matters, so the rest are dropped.
fn last_per_key(mutations: &[Mutation]) -> Vec<&Mutation> {
    let mut seen = HashSet::new();
    let mut kept: Vec<&Mutation> = mutations
        .iter()
        .rev()
        .filter(|m| seen.insert(m.key()))
        .collect();
    kept.reverse();
    kept
}

/// The comparisons of a transaction; `None` when one can never hold.
fn conditions(compares: &[Compare]) -> Option<Vec<EtcdCompare>> {
    compares
        .iter()
        .map(|c| match c {
            // create_revision is 0 exactly when the key does not exist.
            Compare::Absent(k) => Some(EtcdCompare::create_revision(
                k.as_str(),
                CompareOp::Equal,
                0,
            )),
            // No existing key has such a revision, and etcd's mod_revision of a missing key
            // is 0, which must not count as a match either.
            Compare::Revision(k, r) => i64::try_from(*r)
                .ok()
                .filter(|r| *r > 0)
                .map(|r| EtcdCompare::mod_revision(k.as_str(), CompareOp::Equal, r)),
        })
        .collect()
}

fn changes(mutations: &[Mutation]) -> Vec<TxnOp> {
    last_per_key(mutations)
        .into_iter()
        .map(|m| match m {
            Mutation::Put(k, v) => TxnOp::put(k.as_str(), v.clone(), None),
            Mutation::Delete(k) => TxnOp::delete(k.as_str(), None),
        })
        .collect()
}

/// etcd's default limit on the operations of one transaction (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

/// Whether the counts of a [`Read::Counts`] can be left out on a condition.
fn guarded(ranges: &[(String, String)], skip_if_present: &[String]) -> bool {
    !skip_if_present.is_empty()
        && skip_if_present.len() <= MAX_TXN_OPS
        && ranges.iter().any(|(f, t)| f < t)
}

fn count_op(from: &str, to: &str) -> TxnOp {
    TxnOp::get(
        from,
        Some(GetOptions::new().with_range(to).with_count_only()),
    )
}

/// The operations of a read-only transaction that answer `read`. Empty ranges are left out:
/// etcd reads an end before the start as "to the end".
fn txn_ops(read: &Read) -> Vec<TxnOp> {
    match read {
        Read::Range {
            from,
            to,
            limit,
            keys_only,
        } => {
            if from >= to {
                return Vec::new();
            }
            let mut opts = in_key_order(to, *limit);
            if *keys_only {
                opts = opts.with_keys_only();
            }
            vec![TxnOp::get(from.as_str(), Some(opts))]
        }
        Read::Counts { ranges, .. } => ranges
            .iter()
            .filter(|(f, t)| f < t)
            .map(|(f, t)| count_op(f, t))
            .collect(),
    }
}

/// The answer to `read` from the responses of [`txn_ops`], taken from `got` in order.
fn answer(
    read: &Read,
    got: &mut impl Iterator<Item = TxnOpResponse>,
) -> Result<Answer, StoreError> {
    let first = match read {
        Read::Range { from, .. } => from.as_str(),
        Read::Counts { ranges, .. } => ranges.first().map_or("", |(from, _)| from.as_str()),
    };
    let missing = || StoreError::Corrupt {
        key: first.to_owned(),
        reason: "etcd answered a read transaction without all its reads".into(),
    };
    match read {
        Read::Range { from, to, .. } => {
            if from >= to {
                return Ok(Answer::Entries(Vec::new()));
            }
            let Some(TxnOpResponse::Get(mut g)) = got.next() else {
                return Err(missing());
            };
            let entries = g.take_kvs().into_iter().map(entry);
            Ok(Answer::Entries(entries.collect::<Result<_, _>>()?))
        }
        Read::Counts { ranges, .. } => {
            let counts = ranges
                .iter()
                .map(|(f, t)| {
                    if f >= t {
                        return Ok(0);
                    }
                    match got.next() {
                        Some(TxnOpResponse::Get(g)) => {
                            u64::try_from(g.count()).map_err(|_| missing())
                        }
                        _ => Err(missing()),
                    }
                })
                .collect::<Result<_, _>>()?;
            Ok(Answer::Counts(Some(counts)))
        }
    }
}

/// A range read up to `to` in key order, at most `limit` entries (0: all).
pub(crate) fn in_key_order(to: &str, limit: usize) -> GetOptions {
    GetOptions::new()
        .with_range(to)
        .with_limit(i64::try_from(limit).unwrap_or(i64::MAX))
        .with_sort(SortTarget::Key, SortOrder::Ascend)
}

/// The transaction of a [`kube_ipam_store::LeaseStore::commit`]; `None` when one of its
/// comparisons can never hold.
pub(crate) fn commit(compares: &[Compare], mutations: &[Mutation]) -> Option<Txn> {
    Some(
        Txn::new()
            .when(conditions(compares)?)
            .and_then(changes(mutations)),
    )
}

/// The transactions that answer a batch of reads, in as few as etcd's limit on operations
/// allows, and the answers from their responses.
pub(crate) struct Reads<'a> {
    reads: &'a [Read],
    pub(crate) txns: Vec<Txn>,
    /// The read whose counts the (single) transaction leaves out when its condition holds.
    left_out: Option<usize>,
}

impl<'a> Reads<'a> {
    pub(crate) fn new(reads: &'a [Read]) -> Reads<'a> {
        let ops = |left_out: Option<usize>| -> Vec<TxnOp> {
            (0..reads.len())
                .filter(|i| Some(*i) != left_out)
                .flat_map(|i| txn_ops(&reads[i]))
                .collect()
        };
        let all = ops(None);
        // The counts of the first read that allows it are left out when its keys are all
        // there, by a condition on the transaction itself: etcd serves a transaction of plain
        // reads without a round of consensus, and a nested transaction would not be one.
        let guard = reads.iter().enumerate().find_map(|(i, r)| match r {
            Read::Counts {
                ranges,
                skip_if_present,
            } if guarded(ranges, skip_if_present) && all.len() <= MAX_TXN_OPS => {
                Some((i, skip_if_present))
            }
            _ => None,
        });
        match guard {
            Some((i, keys)) => {
                let present: Vec<EtcdCompare> = keys
                    .iter()
                    .map(|k| EtcdCompare::version(k.as_str(), CompareOp::Greater, 0))
                    .collect();
                let txn = Txn::new().when(present).and_then(ops(Some(i))).or_else(all);
                Reads {
                    reads,
                    txns: vec![txn],
                    left_out: Some(i),
                }
            }
            None => Reads {
                reads,
                txns: all
                    .chunks(MAX_TXN_OPS)
                    .map(|chunk| Txn::new().and_then(chunk.to_vec()))
                    .collect(),
                left_out: None,
            },
        }
    }

    /// The answers from the responses to [`Reads::txns`], in order.
    pub(crate) fn answers(&self, responses: Vec<TxnResponse>) -> Result<Vec<Answer>, StoreError> {
        let mut skipped = None;
        let mut got = Vec::new();
        for resp in responses {
            if resp.succeeded() {
                skipped = self.left_out;
            }
            got.extend(resp.op_responses());
        }
        let mut got = got.into_iter();
        (0..self.reads.len())
            .map(|i| match skipped {
                Some(s) if s == i => Ok(Answer::Counts(None)),
                _ => answer(&self.reads[i], &mut got),
            })
            .collect()
    }
}

/// The transaction of a [`kube_ipam_store::LeaseStore::commit_and_read`]: its reads go in
/// the same transaction, on either branch, unless that would pass etcd's limit on
/// operations.
pub(crate) struct CommitAndRead<'a> {
    mutations: &'a [Mutation],
    reads: &'a [Read],
    pub(crate) txn: Txn,
    /// The changes the transaction applies, ahead of the reads' responses.
    changes: usize,
    /// Whether the reads are in [`CommitAndRead::txn`]. Past one transaction's limit they
    /// follow in their own round trips, which the contract allows: they still come after
    /// the commit.
    pub(crate) together: bool,
}

impl<'a> CommitAndRead<'a> {
    /// `None` when one of the comparisons can never hold.
    pub(crate) fn new(
        compares: &[Compare],
        mutations: &'a [Mutation],
        reads: &'a [Read],
    ) -> Option<CommitAndRead<'a>> {
        let when = conditions(compares)?;
        let then = changes(mutations);
        let read_ops: Vec<TxnOp> = reads.iter().flat_map(txn_ops).collect();
        let together = then.len() + read_ops.len() <= MAX_TXN_OPS;
        let changes = then.len();
        let mut txn = Txn::new().when(when);
        if together {
            let mut all = then;
            all.extend(read_ops.iter().cloned());
            txn = txn.and_then(all).or_else(read_ops);
        } else {
            txn = txn.and_then(then);
        }
        Some(CommitAndRead {
            mutations,
            reads,
            txn,
            changes,
            together,
        })
    }

    /// The revision of the commit (`None`: not applied) and, when they went with it, the
    /// answers of the reads.
    pub(crate) fn outcome(
        &self,
        resp: TxnResponse,
    ) -> Result<(Option<Revision>, Option<Vec<Answer>>), StoreError> {
        let revision =
            if resp.succeeded() {
                let at = resp.header().map_or(0, |h| h.revision());
                Some(u64::try_from(at).ok().filter(|r| *r > 0).ok_or_else(|| {
                    StoreError::Corrupt {
                        key: self.mutations.first().map_or("", |m| m.key()).to_owned(),
                        reason: format!("etcd committed at revision {at}"),
                    }
                })?)
            } else {
                None
            };
        if !self.together {
            return Ok((revision, None));
        }
        let skip = if revision.is_some() { self.changes } else { 0 };
        let mut got = resp.op_responses().into_iter().skip(skip);
        // The counts of a commit's reads are never left out.
        let answers = self
            .reads
            .iter()
            .map(|r| answer(r, &mut got))
            .collect::<Result<_, _>>()?;
        Ok((revision, Some(answers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_mutations_of_a_key_win() {
        let put = |k: &str, v: &str| Mutation::Put(k.into(), v.as_bytes().to_vec());
        let del = |k: &str| Mutation::Delete(k.into());
        let ms = [
            put("a", "1"),
            put("b", "1"),
            del("a"),
            put("c", "1"),
            put("b", "2"),
        ];
        let kept: Vec<Mutation> = last_per_key(&ms).into_iter().cloned().collect();
        assert_eq!(kept, [del("a"), put("c", "1"), put("b", "2")]);
    }
}
