//! Taking a per-network database of an earlier release into the data directory's shared one:
//! every row once, the old file fenced against the processes that still have it open.

use std::time::Duration;

use kube_ipam_sqlite::{SqliteStore, ADOPTED_SUFFIX, DB_FILE};
use kube_ipam_store::{LeaseStore, Mutation};

const WAIT: Duration = Duration::from_secs(10);
const MARKER: &str = "/p/n/network";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A database of the earlier layout with `n` records of network `n`.
fn old_store(dir: &std::path::Path, n: usize) {
    let old = SqliteStore::open(dir, WAIT).unwrap();
    let puts: Vec<Mutation> = (0..n)
        .map(|i| {
            Mutation::Put(
                format!("/p/n/ip/4/0a0000{i:02x}"),
                format!("rec {i}").into_bytes(),
            )
        })
        .collect();
    assert!(rt().block_on(old.commit(&[], &puts)).unwrap());
}

#[test]
fn every_row_comes_in_once_and_the_old_file_refuses_its_writers() {
    let tmp = tempfile::tempdir().unwrap();
    let (old_dir, shared_dir) = (tmp.path().join("n"), tmp.path().join("_space"));
    old_store(&old_dir, 20);
    // A plugin of the earlier release, its connection open before the new binary came.
    let earlier = rusqlite::Connection::open(old_dir.join(DB_FILE)).unwrap();
    let rows: i64 = earlier
        .query_row("SELECT count(*) FROM leases", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 20);

    let shared = SqliteStore::open(&shared_dir, WAIT).unwrap();
    assert_eq!(shared.adopt(&old_dir, MARKER).unwrap(), 20);
    let rt = rt();
    let got = rt
        .block_on(shared.range("/p/n/ip/", "/p/n/ip0", 0))
        .unwrap();
    assert_eq!(got.len(), 20);
    assert_eq!(got[7].value, b"rec 7");
    assert!(rt.block_on(shared.get(MARKER)).unwrap().is_some());

    // The earlier release's process can no longer write where nobody reads.
    let e = earlier
        .execute(
            "INSERT INTO leases (key, revision, value) VALUES ('/p/n/ip/4/0a0000ff', 99, x'00')",
            [],
        )
        .unwrap_err();
    assert!(e.to_string().contains("no such table"), "{e}");
    // The old directory is out of the way; opened as a store, it says it is not one.
    assert!(!old_dir.exists());
    let moved = tmp.path().join(format!("n{ADOPTED_SUFFIX}"));
    assert!(moved.join(DB_FILE).exists());
    let refused = SqliteStore::open(&moved, WAIT)
        .map(|_| ())
        .expect_err("refused");
    assert!(refused.to_string().contains("newer"), "{refused}");
    // Taking it in again does nothing: it is not there any more.
    assert_eq!(shared.adopt(&old_dir, MARKER).unwrap(), 0);
}

#[test]
fn processes_taking_the_same_network_in_at_once_copy_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (old_dir, shared_dir) = (tmp.path().join("n"), tmp.path().join("_space"));
    old_store(&old_dir, 50);
    let copied: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let shared = SqliteStore::open(&shared_dir, WAIT).unwrap();
                    shared.adopt(&old_dir, MARKER).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(copied.iter().sum::<u64>(), 50, "{copied:?}");
    let shared = SqliteStore::open(&shared_dir, WAIT).unwrap();
    let all = rt().block_on(shared.range("/p/n/", "/p/n0", 0)).unwrap();
    assert_eq!(all.len(), 51, "50 records and the marker");
}

#[test]
fn an_interrupted_take_over_finishes_on_the_next_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (old_dir, shared_dir) = (tmp.path().join("n"), tmp.path().join("_space"));
    old_store(&old_dir, 5);
    // Fenced, then interrupted before the copy: the old file has only the renamed table.
    let conn = rusqlite::Connection::open(old_dir.join(DB_FILE)).unwrap();
    conn.execute_batch("ALTER TABLE leases RENAME TO leases_moved; PRAGMA user_version = 100;")
        .unwrap();
    drop(conn);
    let shared = SqliteStore::open(&shared_dir, WAIT).unwrap();
    assert_eq!(shared.adopt(&old_dir, MARKER).unwrap(), 5);
    let all = rt()
        .block_on(shared.range("/p/n/ip/", "/p/n/ip0", 0))
        .unwrap();
    assert_eq!(all.len(), 5);
}
