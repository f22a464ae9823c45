//! The queries of rows that the store and its snapshots share.

use kube_ipam_store::{Entry, Revision};
use rusqlite::{params, Connection, OptionalExtension};

pub(crate) fn revision_of(conn: &Connection, key: &str) -> rusqlite::Result<Option<Revision>> {
    conn.prepare_cached("SELECT revision FROM leases WHERE key = ?1")?
        .query_row([key], |r| r.get::<_, i64>(0))
        .optional()
        .map(|r| r.map(|r| r as Revision))
}

/// Entries with `from <= key < to` in key order, at most `limit` (0: all).
pub(crate) fn range_on(
    conn: &Connection,
    from: &str,
    to: &str,
    limit: usize,
) -> rusqlite::Result<Vec<Entry>> {
    if from >= to {
        return Ok(Vec::new());
    }
    // A negative LIMIT is SQLite's "no limit".
    let limit = if limit == 0 {
        -1
    } else {
        i64::try_from(limit).unwrap_or(i64::MAX)
    };
    conn.prepare_cached(
        "SELECT key, revision, value FROM leases
         WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3",
    )?
    .query_map(params![from, to, limit], row_entry)?
    .collect()
}

pub(crate) fn row_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        key: r.get(0)?,
        revision: r.get::<_, i64>(1)? as Revision,
        value: r.get(2)?,
    })
}
