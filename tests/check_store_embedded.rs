//! `check-store` and `ls` on the embedded store while ADDs and DELs run: each reads one
//! SQLite read transaction, so a commit made meanwhile is seen whole or not at all.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use serde_json::{json, Value};
use support::{call, Scratch};

/// Checks run beside the writers; before the reads shared one transaction, a few in a
/// hundred reported problems that were not there.
const CHECKS: usize = 300;
/// Listings run beside them.
const LISTINGS: usize = 100;
/// Attachments that stay through the whole run.
const KEPT: usize = 6;

#[test]
fn check_store_and_ls_see_one_state_while_two_writers_cycle_add_and_del() {
    let s = Scratch::new();
    // Sixteen addresses, so that the writers keep meeting the same ones. The second writer's
    // pods are sticky: their DEL rewrites the address record as parked for the pod and
    // deletes the owner record in one commit, which a check reading the two apart would
    // see half done.
    let conf = s.conf(
        "1.0.0",
        json!({
            "ranges": [[{"subnet": "10.202.0.0/24", "rangeStart": "10.202.0.10",
                         "rangeEnd": "10.202.0.25"}]],
            "stickyIPs": true,
        }),
    );
    let file = s.path().join("net.conf");
    std::fs::write(&file, &conf).expect("write conf");
    let kept: BTreeMap<String, String> = (0..KEPT)
        .map(|i| {
            let id = format!("kept-{i}");
            let ip = call("ADD", &id, "eth0", &[], &conf).ip();
            (id, ip)
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, done, conf) = (stop.clone(), done.clone(), conf.clone());
            thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("w{w}-{n}");
                    let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME=p{w}-{}", n % 3);
                    let env: Vec<(&str, &str)> = match w {
                        0 => vec![],
                        _ => vec![("CNI_ARGS", args.as_str())],
                    };
                    call("ADD", &id, "eth0", &env, &conf).ip();
                    call("DEL", &id, "eth0", &env, &conf).quiet();
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let path = file.to_str().expect("utf-8 path");
    let mut false_reports = Vec::new();
    let mut listed_live = 0;
    for i in 0..CHECKS {
        let before = done.load(Ordering::Relaxed);
        let (code, out, err) = support::cli(&["check-store", "--conf", path]);
        if code != 0 || !out.starts_with("consistent: ") {
            false_reports.push(format!("check {i} (exit {code}): {out}{err}"));
        }
        if i % (CHECKS / LISTINGS) == 0 {
            let (code, out, err) = support::cli(&["ls", "--conf", path, "--output", "json"]);
            assert_eq!(code, 0, "ls {i}: {err}");
            listed_live += one_state(&out, &kept);
        }
        // Each probe overlapped commits, or it proves nothing.
        while done.load(Ordering::Relaxed) == before {
            thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    assert!(
        false_reports.is_empty(),
        "{} of {CHECKS} checks reported problems:\n{}",
        false_reports.len(),
        false_reports.join("\n")
    );
    assert!(listed_live > 0, "no listing caught a writer's attachment");
    assert_eq!(support::check_store(&file), KEPT);
}

/// Asserts that one `ls --output json` shows a state the store was in: the kept attachments
/// at their addresses, at most one live attachment per writer (each DELs before its next
/// ADD), parked addresses only for the sticky writer's pods, every address once and with
/// its holder. Returns how many writers' attachments it listed.
fn one_state(out: &str, kept: &BTreeMap<String, String>) -> usize {
    let rows: Vec<Value> = serde_json::from_str(out).expect("ls prints JSON");
    let mut addresses = Vec::new();
    let mut live: BTreeMap<String, String> = BTreeMap::new();
    let mut writers = [0; 2];
    for r in &rows {
        let addr = r["address"].as_str().expect("address").to_owned();
        assert!(!addresses.contains(&addr), "{addr} listed twice: {out}");
        addresses.push(addr.clone());
        if r["parked"] == true {
            let pod = r["pod"].as_str().unwrap_or_default();
            assert!(pod.starts_with("default/p1-"), "parked for {pod}: {out}");
            continue;
        }
        let container = r["container"].as_str().expect("container").to_owned();
        assert_eq!(r["ifname"], "eth0", "{out}");
        match container.strip_prefix('w').and_then(|c| c.split_once('-')) {
            Some(("0", _)) => writers[0] += 1,
            Some(("1", _)) => writers[1] += 1,
            _ => assert!(
                kept.contains_key(&container),
                "unknown holder {container}: {out}"
            ),
        }
        live.insert(container, addr);
    }
    for (id, ip) in kept {
        assert_eq!(live.get(id), Some(ip), "{id} not listed at {ip}: {out}");
    }
    assert!(
        writers.iter().all(|&n| n <= 1),
        "a writer listed twice: {out}"
    );
    writers.iter().sum()
}
