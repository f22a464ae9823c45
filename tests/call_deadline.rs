//! One deadline for a whole call (`ipam.callTimeout`), on either store: however many requests,
//! retries and waits a call makes, it answers "try again later" (11) at most about a second
//! after its deadline, and the store is usable again once the obstacle goes.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_ipam_etcd::testing::EtcdServer;
use serde_json::json;
use support::{Out, Scratch};

const DEADLINE: Duration = Duration::from_secs(2);
/// How far past its deadline a call may end: the promise made in the README.
const GRACE: Duration = Duration::from_secs(1);

/// Runs one call and asserts it gave up with 11 within its deadline and grace.
fn gives_up_in_time(what: &str, call: impl FnOnce() -> Out) -> String {
    let started = Instant::now();
    let out = call();
    let took = started.elapsed();
    let details = out.err(11);
    assert!(
        took <= DEADLINE + GRACE,
        "{what} took {took:?} against a deadline of {DEADLINE:?}: {details}"
    );
    details
}

/// A frozen etcd answers nothing: each request would wait out its own timeout (10 s here,
/// dial and request) and be retried, but the call ends at its deadline.
#[test]
fn call_on_a_frozen_etcd_ends_at_its_deadline() {
    let mut etcd = EtcdServer::start().expect("start etcd");
    let s = Scratch::new();
    let conf = json!({"cniVersion": "1.0.0", "name": "deadline", "type": "bridge", "ipam": {
        "type": "kube-ipam", "subnet": "10.97.0.0/24", "logFile": s.log_file(),
        "callTimeout": DEADLINE.as_secs_f64(),
        "etcdConfig": {"etcdURL": etcd.endpoint(), "dialTimeout": 10, "requestTimeout": 10}}})
    .to_string();
    let call = |verb: &str, id: &str| support::call(verb, id, "eth0", &[], &conf);
    let ip = call("ADD", "before").ip();

    etcd.freeze().expect("freeze etcd");
    let details = gives_up_in_time("ADD", || call("ADD", "frozen"));
    assert!(details.contains("callTimeout"), "{details}");
    gives_up_in_time("DEL", || call("DEL", "before"));
    etcd.thaw().expect("thaw etcd");

    assert_eq!(call("ADD", "before").ip(), ip);
    let other = call("ADD", "frozen").ip();
    assert_ne!(other, ip);
}

/// A process that holds the embedded store's write lock and is then stopped: every call that
/// must write waits for it until its deadline, then answers 11; reads go on.
#[test]
fn call_behind_a_frozen_lock_holder_ends_at_its_deadline() {
    let s = Scratch::new();
    let conf = s.conf(
        "1.0.0",
        json!({"subnet": "10.98.0.0/24", "callTimeout": DEADLINE.as_secs_f64()}),
    );
    let file = s.path().join("net.conf");
    std::fs::write(&file, &conf).unwrap();
    let call = |verb: &str, id: &str| support::call(verb, id, "eth0", &[], &conf);
    let ip = call("ADD", "before").ip();

    let db = s.data_dir().join("_space").join(kube_ipam_sqlite::DB_FILE);
    let mut holder = LockHolder::start(&db);
    holder.freeze();

    let details = gives_up_in_time("ADD", || call("ADD", "blocked"));
    assert!(details.contains(&db.display().to_string()), "{details}");
    // Which process holds the store, and where its lock is.
    let holder_named = format!(
        "the write lock (byte 120 of {}-shm) is held by pid {} (sqlite3 {})",
        db.display(),
        holder.child.id(),
        db.display()
    );
    assert!(details.contains(&holder_named), "{details}");
    gives_up_in_time("DEL", || call("DEL", "before"));
    // Readers do not wait for the writer.
    assert_eq!(support::held(&file).get("before"), Some(&ip));

    holder.release();
    assert_ne!(call("ADD", "blocked").ip(), ip);
    call("DEL", "before").quiet();
    assert_eq!(support::check_store(&file), 1);
}

#[test]
fn call_timeout_must_be_positive_seconds() {
    let s = Scratch::new();
    for bad in [json!(0), json!(-1), json!(1e9), json!("20")] {
        let conf = s.conf(
            "1.0.0",
            json!({"subnet": "10.99.0.0/24", "callTimeout": bad}),
        );
        let out = support::call("ADD", "c", "eth0", &[], &conf);
        let code = out.cni_error().0;
        assert!(code == 7 || code == 6, "{bad}: {out:?}");
        assert!(out.stdout.contains("callTimeout"), "{bad}: {}", out.stdout);
    }
    assert!(!s.data_dir().exists(), "a refused config created the store");
}

/// `sqlite3` inside an open write transaction, stopped with SIGSTOP.
struct LockHolder {
    child: Child,
}

impl LockHolder {
    fn start(db: &std::path::Path) -> LockHolder {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sqlite3 (scripts/install-deps.sh installs it)");
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(b"BEGIN IMMEDIATE;\nSELECT 'locked';\n")
            .unwrap();
        stdin.flush().unwrap();
        // The answer comes only once the write lock is held.
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        LockHolder { child }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn freeze(&mut self) {
        self.signal("-STOP");
    }

    /// Resumes the holder and lets it end, which rolls its transaction back.
    fn release(&mut self) {
        self.signal("-CONT");
        drop(self.child.stdin.take());
        self.child.wait().unwrap();
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
