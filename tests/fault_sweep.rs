//! Every crash point and every failed write of the embedded store, one at a time.
//!
//! Each write-type system call of a call (an ADD on a new network, an ADD on a store in use,
//! a DEL), its first to twelfth occurrence, is replaced under `strace -e inject=...` by a
//! SIGKILL of the plugin or by ENOSPC, and each sync call also by EIO. After each, the next
//! calls must find a store they can open and use: every attachment committed before is there,
//! the interrupted call's is all there or not at all (and there if it was reported done),
//! `check-store` finds nothing wrong, and a retry of the interrupted call succeeds. A failed
//! call answers a CNI error, never a panic, never "corrupt store".
//!
//! Also a real 2 MiB tmpfs that fills up in the middle of a run and is emptied again.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde_json::json;
use support::netns::{is_root, must, sh};
use support::{Out, Scratch, BIN};

/// The system calls through which a process changes files.
const SYSCALLS: &[&str] = &[
    "write",
    "pwrite64",
    "writev",
    "pwritev",
    "fsync",
    "fdatasync",
    "ftruncate",
    "fallocate",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
];
/// Occurrences swept per system call: twelve reach every sync of an ADD on a new network.
const OCCURRENCES: usize = 12;

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Enospc,
    /// Only for the sync calls: the way a failing disk answers an fsync.
    Eio,
}

impl Fault {
    fn inject(self, syscall: &str, n: usize) -> String {
        match self {
            Fault::Kill => format!("inject={syscall}:signal=SIGKILL:when={n}"),
            Fault::Enospc => format!("inject={syscall}:error=ENOSPC:when={n}"),
            Fault::Eio => format!("inject={syscall}:error=EIO:when={n}"),
        }
    }
}

/// The call under test and what the store holds before it.
struct Scenario {
    name: &'static str,
    before: &'static [&'static str],
    /// More attachments are added before until the call under test is the one that copies
    /// the log into the database and starts it over.
    to_log_restart: bool,
    verb: &'static str,
    /// Occurrences swept per system call.
    occurrences: usize,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "ADD on a new network",
        before: &[],
        to_log_restart: false,
        verb: "ADD",
        occurrences: OCCURRENCES,
    },
    Scenario {
        name: "ADD on a store in use",
        before: &["a", "b"],
        to_log_restart: false,
        verb: "ADD",
        occurrences: OCCURRENCES,
    },
    Scenario {
        name: "DEL",
        before: &["a", "b", "victim"],
        to_log_restart: false,
        verb: "DEL",
        occurrences: OCCURRENCES,
    },
    // The commit, the checkpoint's copy into the database and its sync, and the write that
    // starts the log over: far more writes than a plain ADD.
    Scenario {
        name: "ADD that checkpoints and starts the log over",
        before: &["a"],
        to_log_restart: true,
        verb: "ADD",
        occurrences: 3 * OCCURRENCES,
    },
];

fn conf(s: &Scratch) -> String {
    s.conf("1.0.0", json!({"subnet": "10.95.0.0/24"}))
}

fn conf_file(s: &Scratch) -> std::path::PathBuf {
    let file = s.path().join("net.conf");
    std::fs::write(&file, conf(s)).expect("write conf");
    file
}

fn strace(s: &Scratch, verb: &str, container: &str, args: &[String]) -> Out {
    let plain = support::command(verb, container, "eth0", &[]);
    let mut cmd = Command::new("strace");
    cmd.env_clear()
        .args(["-f", "-qq"])
        .args(args)
        .arg(BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    support::run(cmd, conf(s).as_bytes())
}

/// How often the call makes each write-type system call, from one clean traced run.
fn count_syscalls(template: &Path, sc: &Scenario) -> BTreeMap<String, usize> {
    let s = Scratch::new();
    copy_dir(template, &s.data_dir());
    let trace = s.path().join("trace");
    let out = strace(
        &s,
        sc.verb,
        "victim",
        &[
            "-o".into(),
            trace.display().to_string(),
            "-e".into(),
            format!("trace={}", SYSCALLS.join(",")),
        ],
    );
    assert_eq!(out.code, 0, "{}: clean run failed: {out:?}", sc.name);
    let text = std::fs::read_to_string(&trace).expect("trace");
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        if line.contains("resumed>") {
            continue;
        }
        // "<pid> <name>(...".
        let call = line.split_once(' ').map_or(line, |(_, rest)| rest);
        if let Some((name, _)) = call.split_once('(') {
            *counts.entry(name.trim().to_owned()).or_default() += 1;
        }
    }
    counts
}

/// Whether an ADD of the victim on a copy of `template` starts the log over: the checkpoint
/// sequence number in the log's header (bytes 12..16) moves then and only then.
fn victim_restarts_log(template: &Path) -> bool {
    let s = Scratch::new();
    copy_dir(template, &s.data_dir());
    let log = s
        .data_dir()
        .join("_space")
        .join(format!("{}-wal", kube_ipam_sqlite::DB_FILE));
    let sequence = || {
        std::fs::read(&log)
            .ok()
            .and_then(|b| b.get(12..16).map(<[u8]>::to_vec))
    };
    let was = sequence();
    let out = support::call("ADD", "victim", "eth0", &[], &conf(&s));
    assert_eq!(out.code, 0, "victim's ADD: {out:?}");
    sequence() != was
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read template") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// What the faulted call told its caller about the victim.
#[derive(Debug, PartialEq)]
enum Told {
    Holds(String),
    Freed,
    Nothing,
}

/// How the faulted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ended {
    Killed,
    Failed,
    Succeeded,
}

/// Runs one fault point; returns how the faulted call ended, or what went wrong.
fn point(
    template: &Path,
    sc: &Scenario,
    before: &BTreeMap<String, String>,
    fault: Fault,
    syscall: &str,
    n: usize,
) -> Result<Ended, String> {
    let s = Scratch::new();
    copy_dir(template, &s.data_dir());
    let file = conf_file(&s);
    let call = |verb: &str, id: &str| support::call(verb, id, "eth0", &[], &conf(&s));
    let out = strace(
        &s,
        sc.verb,
        "victim",
        &[
            "-o".into(),
            "/dev/null".into(),
            "-e".into(),
            fault.inject(syscall, n),
        ],
    );
    let here = format!(
        "{} / {syscall} #{n} / {fault:?}: {} {}",
        sc.name, out.stdout, out.stderr
    );
    if out.stdout.contains("panic") || out.stderr.contains("panic") {
        return Err(format!("panicked: {here}"));
    }
    let ended = match out.code {
        -1 => Ended::Killed,
        0 => Ended::Succeeded,
        _ => Ended::Failed,
    };
    let told = if out.code == 0 && out.stdout.trim().is_empty() && sc.verb == "ADD" {
        return Err(format!("ADD exited 0 without a result: {here}"));
    } else if out.code == 0 {
        match sc.verb {
            "ADD" => Told::Holds(out.ip()),
            _ => Told::Freed,
        }
    } else {
        // With the reply's own write failed, only the exit code and stderr are left.
        if !out.stdout.trim().is_empty() {
            let (code, _) = out.cni_error();
            if code != 5 && code != 11 {
                return Err(format!("answered {code}: {here}"));
            }
        }
        Told::Nothing
    };

    // The next call opens the store and uses it.
    let probe = call("ADD", "probe");
    if probe.code != 0 {
        return Err(format!("next ADD failed: {probe:?} after {here}"));
    }
    let held = support::held(&file);
    let mut want = before.clone();
    want.insert("probe".into(), probe.ip());
    let victim = held.get("victim").cloned();
    match (&told, victim) {
        (Told::Holds(ip), Some(v)) if *ip == v => {}
        (Told::Holds(ip), v) => return Err(format!("reported {ip}, store has {v:?}: {here}")),
        (Told::Freed, None) => {}
        (Told::Freed, Some(v)) => return Err(format!("reported freed, still {v}: {here}")),
        (Told::Nothing, v) => {
            if let (Some(v), Some(old)) = (&v, before.get("victim")) {
                if v != old {
                    return Err(format!("victim moved {old} -> {v}: {here}"));
                }
            }
        }
    }
    want.remove("victim");
    let mut others = held.clone();
    others.remove("victim");
    if others != want {
        return Err(format!(
            "store holds {held:?}, want {want:?} + victim: {here}"
        ));
    }
    // The runtime retries a failed call: it must go through now.
    let retry = call(sc.verb, "victim");
    if retry.code != 0 {
        return Err(format!(
            "retried {} failed: {retry:?} after {here}",
            sc.verb
        ));
    }
    let (code, out, err) = support::cli(&["check-store", "--conf", file.to_str().unwrap()]);
    if code != 0 {
        return Err(format!("check-store: {out}{err} after {here}"));
    }
    // Left in rollback-journal mode, the store would work but make readers and writers
    // wait for each other.
    let db = s.data_dir().join("_space").join(kube_ipam_sqlite::DB_FILE);
    let mode = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA journal_mode")
        .output()
        .map_err(|e| format!("sqlite3: {e}"))?;
    let mode = String::from_utf8_lossy(&mode.stdout).trim().to_owned();
    if mode != "wal" {
        return Err(format!("store left in journal mode {mode:?} after {here}"));
    }
    Ok(ended)
}

#[test]
fn no_kill_or_enospc_at_any_write_leaves_an_unusable_store() {
    assert!(
        Command::new("strace").arg("-V").output().is_ok(),
        "strace is missing: scripts/install-deps.sh installs it"
    );
    let failures = Mutex::new(Vec::new());
    let ends = Mutex::new(BTreeMap::<(String, Ended), usize>::new());
    let mut points = 0;
    for sc in SCENARIOS {
        let t = Scratch::new();
        for id in sc.before {
            support::call("ADD", id, "eth0", &[], &conf(&t)).ip();
        }
        if sc.to_log_restart {
            let mut added = 0;
            while !victim_restarts_log(&t.data_dir()) {
                assert!(
                    added < 200,
                    "no ADD started the log over after {added} more"
                );
                support::call("ADD", &format!("fill-{added}"), "eth0", &[], &conf(&t)).ip();
                added += 1;
            }
            eprintln!("{}: after {added} more attachments", sc.name);
        }
        let before = if sc.before.is_empty() {
            BTreeMap::new()
        } else {
            support::held(&conf_file(&t))
        };
        // Nothing of the template's own process may linger in the copies.
        let template = t.data_dir();
        std::fs::create_dir_all(&template).expect("data dir");
        let counts = count_syscalls(&template, sc);
        eprintln!("{}: {counts:?}", sc.name);
        let mut work = Vec::new();
        for (syscall, &count) in &counts {
            for n in 1..=count.min(sc.occurrences) {
                for fault in [Fault::Kill, Fault::Enospc, Fault::Eio] {
                    if matches!(fault, Fault::Eio) && !syscall.contains("sync") {
                        continue;
                    }
                    work.push((syscall.clone(), n, fault));
                }
            }
        }
        points += work.len();
        let next = Mutex::new(work.into_iter());
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| loop {
                    let Some((syscall, n, fault)) = next.lock().unwrap().next() else {
                        break;
                    };
                    match point(&template, sc, &before, fault, &syscall, n) {
                        Ok(end) => {
                            let key = (format!("{fault:?}"), end);
                            *ends.lock().unwrap().entry(key).or_default() += 1;
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                });
            }
        });
    }
    let failures = failures.into_inner().unwrap();
    let ends = ends.into_inner().unwrap();
    eprintln!(
        "{points} fault points, {} failed; ends: {ends:?}",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        points > 30,
        "only {points} fault points: the trace found too few writes"
    );
    // The injections did happen: a kill that never lands or an error that is never seen
    // would make every point above pass without testing anything.
    let kills: usize = ends
        .iter()
        .filter(|((fault, _), _)| fault == "Kill")
        .map(|(_, n)| n)
        .sum();
    let killed = ends
        .get(&("Kill".into(), Ended::Killed))
        .copied()
        .unwrap_or(0);
    assert_eq!(killed, kills, "not every kill landed: {ends:?}");
    let refused = ends
        .get(&("Enospc".into(), Ended::Failed))
        .copied()
        .unwrap_or(0);
    assert!(
        refused * 2 > kills,
        "few ENOSPC reached the caller: {ends:?}"
    );
    let eio = ends.get(&("Eio".into(), Ended::Failed)).copied();
    assert!(
        eio > Some(0),
        "no failed fsync reached the caller: {ends:?}"
    );
}

/// A mount undone when the test ends, however it ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let d = self.0.to_str().unwrap();
        if !sh(&["umount", d]).status.success() {
            let _ = sh(&["umount", "-l", d]);
        }
    }
}

/// A real full disk in the middle of a run: while full every call that must write answers 5
/// (or succeeds, if SQLite had the room), nothing committed is lost, and once space is back
/// every call works again without anyone touching the store.
#[test]
fn tmpfs_filled_mid_run_then_emptied() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let s = Scratch::new();
    let disk = s.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    must(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=2m,mode=0700",
        "tmpfs",
        disk.to_str().unwrap(),
    ]);
    let _fs = Mounted(disk.clone());
    let conf = s.conf(
        "1.0.0",
        json!({"subnet": "10.96.0.0/24", "dataDir": disk.join("data")}),
    );
    let file = s.path().join("net.conf");
    std::fs::write(&file, &conf).unwrap();
    let call = |verb: &str, id: &str| support::call(verb, id, "eth0", &[], &conf);

    let mut held = BTreeMap::new();
    for i in 0..20 {
        let id = format!("c{i}");
        held.insert(id.clone(), call("ADD", &id).ip());
    }
    for i in 0..5 {
        call("DEL", &format!("c{i}")).quiet();
        held.remove(&format!("c{i}"));
    }

    let filler = disk.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 16 << 10];
    let full = loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    drop(f);

    // Commits overwrite the log in place once it has been started over, so the first calls
    // on the full disk may well succeed; the ones after need the database to grow.
    let mut refused = 0;
    let mut tried = 20;
    while tried < 200 && refused < 3 {
        let id = format!("c{tried}");
        tried += 1;
        let out = call("ADD", &id);
        if out.code == 0 {
            held.insert(id, out.ip());
        } else {
            let (code, details) = out.cni_error();
            assert_eq!(code, 5, "{out:?}");
            assert!(
                details.contains("full") || details.contains("space"),
                "{details}"
            );
            refused += 1;
        }
    }
    for i in 5..8 {
        let id = format!("c{i}");
        let out = call("DEL", &id);
        if out.code == 0 {
            held.remove(&id);
        } else {
            assert_eq!(out.cni_error().0, 5, "{out:?}");
            refused += 1;
        }
    }
    eprintln!(
        "full disk: {} ADDs tried, {refused} calls refused",
        tried - 20
    );
    assert!(refused > 0, "the full disk never refused a call");
    // Reads need no space.
    let (code, out, err) = support::cli(&["ls", "--conf", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(support::held(&file), held);
    for i in 20..tried {
        let id = format!("c{i}");
        let ip = call("ADD", &id).ip();
        if let Some(old) = held.insert(id, ip.clone()) {
            assert_eq!(old, ip);
        }
    }
    for i in 5..8 {
        call("DEL", &format!("c{i}")).quiet();
        held.remove(&format!("c{i}"));
    }
    assert_eq!(support::held(&file), held);
    assert_eq!(support::check_store(&file), held.len());
}
