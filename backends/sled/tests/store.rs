//! The sled backend against the shared conformance suite, plus what only a local store has:
//! the directory lock, file modes, restarts and I/O errors.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_ipam_sled::SledStore;
use kube_ipam_store::{conformance, Compare, LeaseStore, Mutation, StoreError};

const WAIT: Duration = Duration::from_secs(10);

fn put(k: &str, v: &str) -> Mutation {
    Mutation::Put(k.to_owned(), v.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_conformance() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SledStore::open(&tmp.path().join("store"), WAIT).unwrap();
    if let Err(e) = conformance::run(Arc::new(store), "/conformance").await {
        panic!("{e}");
    }
}

#[test]
fn second_open_waits_then_reports_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let first = SledStore::open(&dir, WAIT).unwrap();

    let started = Instant::now();
    let wait = Duration::from_millis(300);
    let err = SledStore::open(&dir, wait).unwrap_err();
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
    assert!(msg.contains("300ms"), "{msg}");

    drop(first);
    let started = Instant::now();
    SledStore::open(&dir, WAIT).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn waiting_open_gets_the_store_when_it_is_released() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let first = SledStore::open(&dir, WAIT).unwrap();
    let waiter = {
        let dir = dir.clone();
        std::thread::spawn(move || SledStore::open(&dir, WAIT).map(drop))
    };
    // Not a synchronisation: the waiter succeeds either way. The pause only makes it likely
    // to find the lock taken, so that the blocking path is the one exercised.
    std::thread::sleep(Duration::from_millis(100));
    drop(first);
    waiter.join().unwrap().unwrap();
}

#[test]
fn creates_private_directory_and_lock_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/kube-ipam/net1");
    let _store = SledStore::open(&dir, WAIT).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("lock")), 0o600);
    assert!(dir.join("db").is_dir());
}

#[tokio::test]
async fn data_and_revisions_survive_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let before = {
        let store = SledStore::open(&dir, WAIT).unwrap();
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

    let store = SledStore::open(&dir, WAIT).unwrap();
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
    let err = SledStore::open(&dir, WAIT).unwrap_err();
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
    let err = SledStore::open(&dir, WAIT).unwrap_err();
    let StoreError::Io(msg) = &err else {
        panic!("want Io, got {err:?}");
    };
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(msg.contains("Permission denied"), "{msg}");
}
