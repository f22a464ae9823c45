//! Faults under the embedded store: plugin processes killed mid-call, a read-only or full
//! data directory, a log file that cannot be opened.
//!
//! A runtime kills plugins that take too long and nodes run out of disk; none of that may
//! cost a pod its address, hand one address out twice, or answer with anything but the spec's
//! error JSON. Each test ends with `check-store` and `ls` so damage the calls themselves did
//! not report still shows.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::netns::{is_root, must, sh};
use support::{Out, Scratch};

/// One network on the embedded store, with its config also on disk for the operator CLI.
struct Net {
    s: Scratch,
    conf: String,
    file: PathBuf,
}

impl Net {
    fn new(s: Scratch, ipam: Value) -> Net {
        let conf = s.conf("1.0.0", ipam);
        let file = s.path().join("net.conf");
        std::fs::write(&file, &conf).expect("write conf");
        Net { s, conf, file }
    }

    fn call(&self, verb: &str, id: &str) -> Out {
        support::call(verb, id, "eth0", &[], &self.conf)
    }

    fn spawn(&self, verb: &str, id: &str) -> Child {
        support::spawn(verb, id, &[], &self.conf)
    }

    /// Asserts the store is consistent; returns how many attachments it holds.
    fn check_store(&self) -> usize {
        support::check_store(&self.file)
    }

    /// Container → address of every held address; fails on an address or container listed twice.
    fn held(&self) -> BTreeMap<String, String> {
        support::held(&self.file)
    }
}

/// Asserts `out` is a failure answered the spec's way; returns the code and details.
fn cni_error(out: &Out) -> (u64, String) {
    assert_no_panic(out);
    out.cni_error()
}

fn assert_no_panic(out: &Out) {
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains("panic"), "panicked: {out:?}");
    }
}

/// A mount that is undone when the test ends, however it ends: a leaked mount outlives the
/// test run and would hide the scratch directory from its cleanup.
struct Mounted(PathBuf);

impl Mounted {
    fn read_only_bind(dir: &Path) -> Mounted {
        let d = dir.to_str().unwrap();
        must(&["mount", "--bind", d, d]);
        let guard = Mounted(dir.to_owned());
        must(&["mount", "-o", "remount,bind,ro", d]);
        // Root ignores permissions, so only the kernel refusing the write proves the premise.
        let probe = std::fs::write(dir.join("probe"), b"x").unwrap_err();
        assert_eq!(probe.raw_os_error(), Some(libc::EROFS), "{probe}");
        guard
    }

    fn tmpfs(dir: &Path, size: &str) -> Mounted {
        std::fs::create_dir_all(dir).expect("mount point");
        let opts = format!("size={size},mode=0700");
        must(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &opts,
            "tmpfs",
            dir.to_str().unwrap(),
        ]);
        Mounted(dir.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let d = self.0.to_str().unwrap();
        if !sh(&["umount", d]).status.success() {
            let _ = sh(&["umount", "-l", d]);
        }
    }
}

/// What the test knows about a container after the calls on it so far.
#[derive(Clone, Debug, PartialEq)]
enum Known {
    Holds(String),
    Free,
    /// Its last call was killed or failed: the store may say either.
    Unsure,
}

/// A call that was not killed and so must have answered properly.
fn judge(verb: &str, out: &Out, codes: &mut BTreeMap<u64, usize>) -> Known {
    assert_no_panic(out);
    match (out.code, verb) {
        (0, "ADD") => Known::Holds(out.ip()),
        (0, _) => {
            out.quiet();
            Known::Free
        }
        _ => {
            let (code, details) = cni_error(out);
            eprintln!("{verb} failed on its own: {code} {details}");
            *codes.entry(code).or_default() += 1;
            Known::Unsure
        }
    }
}

/// Kills arrive while the store is being opened, read, written and flushed, and while calls
/// queue on its lock; SQLite's recovery and the allocator's commits must leave nothing a later
/// call or `check-store` trips over.
#[test]
fn sigkill_during_add_and_del_leaves_a_consistent_store() {
    const RANGE: usize = 40;
    const ROUNDS: usize = 6;
    const PER_ROUND: usize = 12;
    const NEW_PER_ROUND: usize = 5;
    let mut rng = StdRng::seed_from_u64(support::fault_seed());
    let net = Net::new(
        Scratch::new(),
        json!({"subnet": "10.90.0.0/24", "rangeStart": "10.90.0.10", "rangeEnd": "10.90.0.49"}),
    );

    // Calls of a batch run side by side and queue only to commit, so a batch takes between
    // one call's time and one per process. Half the kills fall within the first two calls'
    // time, where every call is still running; the rest spread over the whole span, landing
    // in every phase of the calls that queued and leaving some to finish, whatever the speed
    // of the machine or the build.
    net.call("ADD", "calibrate").ip();
    let started = Instant::now();
    net.call("ADD", "calibrate").ip();
    net.call("DEL", "calibrate").quiet();
    let one_call = started.elapsed() / 2;
    let window = (one_call * PER_ROUND as u32).as_millis() as u64;
    let early = (one_call * 2).as_millis().max(1) as u64;
    eprintln!("one call takes {one_call:?}: kills fall 0 to {window} ms after a spawn");

    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    let mut codes: BTreeMap<u64, usize> = BTreeMap::new();
    let (mut calls, mut mid_flight) = (0, 0);
    for round in 0..ROUNDS {
        // Round 0 fills the store; later rounds mix new pods with retries and deletions of
        // earlier ones, so kills also land on calls that find existing records.
        let fresh = if round == 0 { PER_ROUND } else { NEW_PER_ROUND };
        let mut old: Vec<String> = known.keys().cloned().collect();
        let mut batch: Vec<(&str, String)> = Vec::new();
        while batch.len() < PER_ROUND - fresh && !old.is_empty() {
            let id = old.swap_remove(rng.random_range(0..old.len()));
            batch.push((if rng.random_bool(0.5) { "ADD" } else { "DEL" }, id));
        }
        batch.extend((0..fresh).map(|i| ("ADD", format!("kill-{round}-{i}"))));

        let mut running: Vec<(Instant, &str, String, Child)> = batch
            .into_iter()
            .map(|(verb, id)| {
                let child = net.spawn(verb, &id);
                let span = if rng.random_bool(0.5) { early } else { window };
                let at = Instant::now() + Duration::from_millis(rng.random_range(0..=span));
                (at, verb, id, child)
            })
            .collect();
        running.sort_by_key(|r| r.0);
        for (at, verb, id, mut child) in running {
            // The delay is the fault being injected, not a wait for anything.
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if child.try_wait().expect("try_wait").is_none() {
                let _ = child.kill();
            }
            let out = child.wait_with_output().expect("wait");
            calls += 1;
            // Between `try_wait` and `kill` the call may still have finished on its own:
            // only the exit status tells whether the kill landed.
            let state = if out.status.signal() == Some(libc::SIGKILL) {
                mid_flight += 1;
                Known::Unsure
            } else {
                judge(verb, &out.into(), &mut codes)
            };
            if let (Some(Known::Holds(before)), Known::Holds(now)) = (known.get(&id), &state) {
                assert_eq!(before, now, "a retried ADD of {id} moved its address");
            }
            known.insert(id, state);
        }

        let held = net.held();
        assert_eq!(net.check_store(), held.len(), "round {round}: {held:?}");
        for (id, k) in &known {
            match k {
                Known::Holds(ip) => assert_eq!(held.get(id), Some(ip), "round {round}: {id} lost"),
                Known::Free => assert!(!held.contains_key(id), "round {round}: {id} still held"),
                Known::Unsure => {}
            }
        }
        assert!(held.keys().all(|c| known.contains_key(c)), "{held:?}");
    }
    eprintln!(
        "killed {mid_flight} of {calls} calls mid-flight; codes of failed calls {codes:?}; {} pods",
        known.len()
    );
    assert!(
        mid_flight > 0,
        "no kill landed mid-call: the test tested nothing"
    );
    assert!(
        mid_flight < calls,
        "every call was killed: no answer was checked"
    );

    // kubelet retries: every pod gets an address, the ones that had one keep it. One call
    // at a time, so a failure here points at the store the kills left, not at contention.
    let mut addrs = BTreeSet::new();
    for (id, k) in &known {
        let ip = net.call("ADD", id).ip();
        if let Known::Holds(before) = k {
            assert_eq!(before, &ip, "{id} moved");
        }
        assert!(addrs.insert(ip.clone()), "{ip} handed out twice");
    }
    assert_eq!(net.check_store(), known.len());

    known.keys().for_each(|id| net.call("DEL", id).quiet());
    assert_eq!(net.check_store(), 0);
    assert!(net.held().is_empty());

    // Nothing leaked: the whole range is there to be handed out again.
    let addrs: BTreeSet<String> = (0..RANGE)
        .map(|i| net.call("ADD", &format!("after-{i}")).ip())
        .collect();
    assert_eq!(addrs.len(), RANGE);
    assert_eq!(net.check_store(), RANGE);
}

/// A node whose data disk went read-only: calls must fail loudly (a DEL that could not
/// release must not report success, or the address leaks silently) and leave the store as
/// it was.
#[test]
fn read_only_data_dir_refuses_with_a_cni_error_and_changes_nothing() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let net = Net::new(Scratch::new(), json!({"subnet": "10.91.0.0/24"}));
    let a = net.call("ADD", "ro-a").ip();
    let b = net.call("ADD", "ro-b").ip();
    let data = net.s.data_dir();
    {
        let _ro = Mounted::read_only_bind(&data);
        for (verb, id) in [("ADD", "ro-new"), ("DEL", "ro-a")] {
            let out = net.call(verb, id);
            let (code, details) = cni_error(&out);
            assert_eq!(code, 5, "{verb} {id}: {out:?}");
            assert!(details.contains(data.to_str().unwrap()), "{details}");
            assert!(details.to_lowercase().contains("read-only"), "{details}");
        }
    }
    assert_eq!(net.check_store(), 2);
    let held = net.held();
    let want = BTreeMap::from([("ro-a".to_owned(), a), ("ro-b".to_owned(), b)]);
    assert_eq!(held, want);
}

/// A full disk under the store: each call fails with an error the runtime can show, and once
/// space is back the store is intact and usable.
#[test]
fn full_disk_refuses_with_a_cni_error_and_recovers() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let s = Scratch::new();
    let disk = s.path().join("disk");
    let net = Net::new(
        s,
        json!({"subnet": "10.92.0.0/24", "dataDir": disk.join("data")}),
    );
    // Mounted after the scratch directory exists, so it is unmounted before that is removed.
    let _fs = Mounted::tmpfs(&disk, "2m");
    let first = net.call("ADD", "full-a").ip();

    let filler = disk.join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    let full = loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    drop(f);

    for i in 0..4 {
        let out = net.call("ADD", &format!("full-new-{i}"));
        let (code, details) = cni_error(&out);
        assert_eq!(code, 5, "{out:?}");
        assert!(details.contains("No space left"), "{details}");
    }

    std::fs::remove_file(&filler).expect("remove filler");
    assert_eq!(net.check_store(), 1);
    assert_eq!(
        net.held(),
        BTreeMap::from([("full-a".to_owned(), first.clone())])
    );
    assert_eq!(net.call("ADD", "full-a").ip(), first);
    let later: BTreeSet<String> = (0..4)
        .map(|i| net.call("ADD", &format!("full-new-{i}")).ip())
        .collect();
    assert_eq!(later.len(), 4);
    assert!(!later.contains(&first));
    assert_eq!(net.check_store(), 5);
}

/// Logging is best effort: a log path that cannot be opened must not stop the pod from
/// getting its address, nor leak log lines onto stdout, which belongs to the protocol.
#[test]
fn unwritable_log_file_does_not_cost_an_address() {
    let s = Scratch::new();
    // A parent that is a regular file defeats root too, unlike permissions.
    let blocker = s.path().join("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let log = blocker.join("kube-ipam.log");
    let net = Net::new(s, json!({"subnet": "10.93.0.0/24", "logFile": log}));

    let out = net.call("ADD", "nolog");
    let result = out.ok();
    let values = serde_json::Deserializer::from_str(&out.stdout).into_iter::<Value>();
    assert_eq!(values.count(), 1, "stdout: {:?}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 1, "stdout: {:?}", out.stdout);
    assert!(result["ips"][0]["address"].is_string(), "{result}");
    assert!(
        out.stderr.contains("cannot open log file"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(log.to_str().unwrap()), "{}", out.stderr);
    assert_eq!(net.held().get("nolog"), Some(&out.ip()));

    let del = net.call("DEL", "nolog");
    del.quiet();
    assert!(
        del.stderr.contains("cannot open log file"),
        "{}",
        del.stderr
    );
    assert_eq!(net.check_store(), 0);
}

/// The store and the log name pods and their addresses: nobody but root may read them, and
/// that must not depend on the umask the runtime happens to run the plugin with.
#[test]
fn store_directory_and_log_are_private() {
    let net = Net::new(Scratch::new(), json!({"subnet": "10.94.0.0/24"}));
    net.call("ADD", "private").ip();

    let mut loose = Vec::new();
    let mut dirs = vec![net.s.data_dir()];
    while let Some(dir) = dirs.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        if mode != 0o700 {
            loose.push(format!("{:o} {}", mode, dir.display()));
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.permissions().mode() & 0o077 != 0 {
                loose.push(format!(
                    "{:o} {}",
                    meta.permissions().mode() & 0o777,
                    path.display()
                ));
            }
        }
    }
    let log = std::fs::metadata(net.s.log_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    if log != 0o600 {
        loose.push(format!("{log:o} {}", net.s.log_file().display()));
    }
    assert!(
        loose.is_empty(),
        "readable by others:\n{}",
        loose.join("\n")
    );
}
