//! Reading a whole class of records in pages, so that no read grows with the store.

use kube_ipam_store::{Entry, LeaseStore, Revision};

use crate::Result;

/// Records per read: about 10 MB, whatever the size of the store. Not smaller: etcd 3.4
/// walks its index over the whole rest of the range for every limited read (to count it), so
/// a scan costs pages x records; at 2,000 a page, checking a million records took minutes.
pub const PAGE: usize = 25_000;

/// The keys `[from, to)` page by page, every page read at the revision of the first when
/// `pinned`: a consistent snapshot of the whole scan, even with writers at work.
pub struct Scan<'a, S: ?Sized> {
    store: &'a S,
    next: Option<String>,
    to: String,
    at: Option<Revision>,
    pinned: bool,
}

impl<'a, S: LeaseStore + ?Sized> Scan<'a, S> {
    pub fn new(store: &'a S, (from, to): (String, String)) -> Self {
        Scan {
            store,
            next: Some(from),
            to,
            at: None,
            pinned: false,
        }
    }

    /// Reads at `at` (or at the revision of the first page when `None`) on every page.
    pub fn pinned(store: &'a S, range: (String, String), at: Option<Revision>) -> Self {
        Scan {
            at,
            pinned: true,
            ..Scan::new(store, range)
        }
    }

    /// The revision every page is read at, once known; `None` for a store that has no
    /// history to pin (it is held exclusively while read, see [`LeaseStore::range_at`]).
    pub fn revision(&self) -> Option<Revision> {
        self.at
    }

    /// The next page; `None` once the range is done.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Entry>>> {
        let Some(from) = self.next.take() else {
            return Ok(None);
        };
        let page = if self.pinned {
            let (page, at) = self.store.range_at(&from, &self.to, PAGE, self.at).await?;
            self.at = (at > 0).then_some(at);
            page
        } else {
            self.store.range(&from, &self.to, PAGE).await?
        };
        if page.len() == PAGE {
            if let Some(last) = page.last() {
                // The smallest key after `last`.
                self.next = Some(format!("{}\0", last.key));
            }
        }
        Ok((!page.is_empty()).then_some(page))
    }
}
