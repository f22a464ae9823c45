//! A process killed in the middle of its commits must leave each of them whole or absent.
//!
//! The test re-runs its own binary as the writer (selected by an environment variable), lets
//! it report commits on stdout, SIGKILLs it at a different point each round and checks what
//! the next opener recovers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kube_ipam_sqlite::SqliteStore;
use kube_ipam_store::{Compare, LeaseStore, Mutation};

const DIR_VAR: &str = "KUBE_IPAM_SQLITE_CRASH_DIR";
const START_VAR: &str = "KUBE_IPAM_SQLITE_CRASH_START";
const WAIT: Duration = Duration::from_secs(30);

/// The writer: does nothing unless started by `sigkill_never_leaves_half_a_commit`.
#[tokio::test]
async fn crash_writer() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let start: u64 = std::env::var(START_VAR).unwrap().parse().unwrap();
    let store = SqliteStore::open(Path::new(&dir), WAIT).unwrap();
    let payload = vec![0x5a; 4096];
    let mut out = std::io::stdout();
    for i in start.. {
        let (a, b) = (format!("a/{i:012}"), format!("b/{i:012}"));
        let applied = store
            .commit(
                &[Compare::Absent(a.clone())],
                &[
                    Mutation::Put(a, payload.clone()),
                    Mutation::Put(b, payload.clone()),
                ],
            )
            .await
            .unwrap();
        assert!(applied);
        writeln!(out, "committed {i}").unwrap();
    }
}

#[tokio::test]
async fn sigkill_never_leaves_half_a_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    // Per round: first index, last index the writer reported as committed.
    let mut rounds = Vec::new();
    for round in 0..4u64 {
        let start = round * 1_000_000;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_writer", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, &dir)
            .env(START_VAR, start.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let reported = |line: std::io::Result<String>| -> Option<u64> {
            line.unwrap().strip_prefix("committed ")?.parse().ok()
        };
        let kill_after = 40 + round * 17;
        let mut last = None;
        for i in lines.by_ref().filter_map(reported) {
            last = Some(i);
            if i - start + 1 == kill_after {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines still in the pipe were written after their commit returned.
        if let Some(i) = lines.filter_map(reported).last() {
            last = Some(i);
        }
        let last = last.unwrap_or_else(|| panic!("round {round}: the writer reported nothing"));
        assert!(
            last - start + 1 >= kill_after,
            "round {round}: the writer stopped at {last}"
        );
        rounds.push((start, last));

        let store = SqliteStore::open(&dir, WAIT).unwrap();
        let a = revisions(&store, "a/").await;
        let b = revisions(&store, "b/").await;
        assert_eq!(a, b, "round {round}: a commit landed in part");
        for &(first, last) in &rounds {
            let landed = a.range(first..first + 1_000_000).count() as u64;
            let reported = last - first + 1;
            // One more commit may have been made durable just before the kill, unreported.
            assert!(
                landed == reported || landed == reported + 1,
                "round {round}: {landed} commits from {first} on disk, {reported} reported"
            );
            assert!((first..=last).all(|i| a.contains_key(&i)));
        }
    }
}

/// Index -> revision of the keys under `prefix`.
async fn revisions(store: &SqliteStore, prefix: &str) -> BTreeMap<u64, u64> {
    let entries = store.range(prefix, &format!("{prefix}~"), 0).await.unwrap();
    entries
        .into_iter()
        .map(|e| (e.key[prefix.len()..].parse().unwrap(), e.revision))
        .collect()
}
