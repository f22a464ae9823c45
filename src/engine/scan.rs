//! Reading a whole class of records in pages, so that no read grows with the store, all of
//! them in one state of the store, so that no commit is seen half.

use kube_ipam_store::{Entry, Snapshot, StoreError};

use crate::{Error, Result};

/// Records per read: about 10 MB, whatever the size of the store. Not smaller: etcd 3.4
/// walks its index over the whole rest of the range for every limited read (to count it), so
/// a scan costs pages x records; at 2,000 a page, checking a million records took minutes.
pub const PAGE: usize = 25_000;

/// The keys `[from, to)` of a snapshot, page by page.
pub struct Scan<'a> {
    snap: &'a dyn Snapshot,
    next: Option<String>,
    to: String,
}

impl<'a> Scan<'a> {
    pub fn new(snap: &'a dyn Snapshot, (from, to): (String, String)) -> Self {
        Scan {
            snap,
            next: Some(from),
            to,
        }
    }

    /// The next page; `None` once the range is done.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Entry>>> {
        let Some(from) = self.next.take() else {
            return Ok(None);
        };
        let page = self.snap.range(&from, &self.to, PAGE).await?;
        if page.len() == PAGE {
            if let Some(last) = page.last() {
                self.next = Some(after(&last.key));
            }
        }
        Ok((!page.is_empty()).then_some(page))
    }
}

/// The smallest key after `key`.
pub fn after(key: &str) -> String {
    format!("{key}\0")
}

/// Times a read of the whole store starts over on a new snapshot when the store drops the
/// one it reads (etcd compacts its revision away): a check of a million records takes about
/// 20 s, and kube-apiserver compacts the cluster's etcd every five minutes, so one start
/// over is rare and several in a row mean compactions come faster than any read can finish.
pub const RESTARTS: u32 = 3;

/// Whether a read that failed starts over on a new snapshot, and the note of each time it
/// did, for the operator (they go to stderr).
#[derive(Debug, Default)]
pub struct Restarts {
    pub notes: Vec<String>,
}

impl Restarts {
    /// `Ok` when `failed` is a lost snapshot and restarts are left: the note is kept and
    /// the caller starts over. Otherwise the error to give up with.
    pub fn again(&mut self, what: &str, failed: Error) -> Result<()> {
        let Error::Store(StoreError::Compacted(why)) = failed else {
            return Err(failed);
        };
        let done = self.notes.len() as u32;
        if done == RESTARTS {
            return Err(Error::Store(StoreError::Compacted(format!(
                "{why}; {what} started over {RESTARTS} times and each time the store dropped \
                 its snapshot before it was done: compactions come faster than it can read \
                 the store"
            ))));
        }
        self.notes.push(format!(
            "{what}: the store dropped the snapshot being read ({why}); starting over on a \
             new one ({} of {RESTARTS})",
            done + 1
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lost_snapshots_start_over_and_only_a_few_times() {
        let lost = || Error::Store(StoreError::Compacted("revision 7 compacted".into()));
        let mut r = Restarts::default();
        for n in 1..=RESTARTS {
            assert!(r.again("the check", lost()).is_ok());
            assert_eq!(r.notes.len(), n as usize);
        }
        assert!(r.notes[0].contains("the check") && r.notes[0].contains("revision 7"));
        let e = r.again("the check", lost()).unwrap_err();
        assert!(e.to_string().contains("started over 3 times"), "{e}");
        let down = Error::Store(StoreError::Unavailable("etcd down".into()));
        let e = Restarts::default().again("the check", down).unwrap_err();
        assert!(matches!(e, Error::Store(StoreError::Unavailable(_))));
    }
}
