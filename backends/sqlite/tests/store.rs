//! The SQLite backend against the shared conformance suite, plus what only a local store has:
//! waiting for another writer, file modes, restarts and I/O errors.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_ipam_sqlite::SqliteStore;
use kube_ipam_store::{conformance, Compare, LeaseStore, Mutation, StoreError};

const WAIT: Duration = Duration::from_secs(10);

fn put(k: &str, v: &str) -> Mutation {
    Mutation::Put(k.to_owned(), v.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_conformance() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&tmp.path().join("store"), WAIT).unwrap();
    if let Err(e) = conformance::run(Arc::new(store), "/conformance").await {
        panic!("{e}");
    }
}

/// Holds the store's write lock from outside, as another process in the middle of a commit.
fn hold_write_lock(dir: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join(kube_ipam_sqlite::DB_FILE)).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

#[tokio::test]
async fn commit_waits_for_a_writer_then_reports_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    drop(SqliteStore::open(&dir, WAIT).unwrap());
    let holder = hold_write_lock(&dir);

    let wait = Duration::from_millis(300);
    let started = Instant::now();
    // Readers are not held up by a writer.
    let store = SqliteStore::open(&dir, wait).unwrap();
    assert_eq!(store.get("k").await.unwrap(), None);
    let err = store.commit(&[], &[put("k", "v")]).await.unwrap_err();
    assert!(
        started.elapsed() >= wait,
        "gave up after {:?}",
        started.elapsed()
    );
    let StoreError::Busy(msg) = &err else {
        panic!("want Busy, got {err:?}");
    };
    assert!(err.is_transient());
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    // Who holds it and where: this test process holds the write lock, a byte of the index.
    let shm = format!("{}-shm", dir.join(kube_ipam_sqlite::DB_FILE).display());
    assert!(
        msg.contains(&format!(
            "the write lock (byte 120 of {shm}) is held by pid {}",
            std::process::id()
        )),
        "{msg}"
    );

    holder.execute_batch("ROLLBACK").unwrap();
    let store = SqliteStore::open(&dir, WAIT).unwrap();
    assert!(store.commit(&[], &[put("k", "v")]).await.unwrap());
}

#[tokio::test]
async fn waiting_commit_goes_through_when_the_writer_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    drop(SqliteStore::open(&dir, WAIT).unwrap());
    let holder = hold_write_lock(&dir);
    let waiter = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let store = SqliteStore::open(&dir, WAIT)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(store.commit(&[Compare::Absent("k".into())], &[put("k", "w")]))
        })
    };
    // Not a synchronisation: the waiter succeeds either way. The pause only makes it likely
    // to find the lock taken, so that the waiting path is the one exercised.
    std::thread::sleep(Duration::from_millis(100));
    holder.execute_batch("ROLLBACK").unwrap();
    assert!(waiter.join().unwrap().unwrap());
}

#[test]
fn creates_private_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/kube-ipam/net1");
    let _store = SqliteStore::open(&dir, WAIT).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o700);
    assert!(dir.join(kube_ipam_sqlite::DB_FILE).is_file());
}

#[tokio::test]
async fn data_and_revisions_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let before = {
        let store = SqliteStore::open(&dir, WAIT).unwrap();
        assert!(store
            .commit(
                &[Compare::Absent("k".into())],
                &[put("k", "v"), put("j", "w")]
            )
            .await
            .unwrap());
        assert!(store
            .commit(&[], &[Mutation::Delete("j".into())])
            .await
            .unwrap());
        store.get("k").await.unwrap().unwrap()
    };

    let store = SqliteStore::open(&dir, WAIT).unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(before.clone()));
    assert_eq!(store.get("j").await.unwrap(), None);
    assert!(store.commit(&[], &[put("n", "x")]).await.unwrap());
    let after = store.get("n").await.unwrap().unwrap().revision;
    assert!(
        after > before.revision + 1,
        "{after} after {}",
        before.revision
    );
}

#[test]
fn parent_that_is_a_file_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain");
    fs::write(&file, b"").unwrap();
    let dir = file.join("store");
    let err = SqliteStore::open(&dir, WAIT).unwrap_err();
    let StoreError::Io(msg) = &err else {
        panic!("want Io, got {err:?}");
    };
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("Not a directory"), "{msg}");
}

#[test]
fn read_only_parent_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("ro");
    fs::DirBuilder::new().mode(0o500).create(&parent).unwrap();
    if fs::create_dir(parent.join("probe")).is_ok() {
        eprintln!("skipped: this user is not bound by file permissions");
        return;
    }
    let dir = parent.join("store");
    let err = SqliteStore::open(&dir, WAIT).unwrap_err();
    let StoreError::Io(msg) = &err else {
        panic!("want Io, got {err:?}");
    };
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("Permission denied"), "{msg}");
}
