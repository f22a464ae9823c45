//! The binary against the failures a node or an etcd restart brings: plugin processes
//! SIGKILLed mid-transaction, etcd SIGKILLed and restarted under a storm, and the leader of
//! a three-member cluster killed mid-burst. Whatever happens, a call that ends by itself
//! either succeeds or says why in a CNI error, no address is handed out twice, address and
//! owner records agree, and nothing etcd acknowledged is lost.
//!
//! Random kill delays come from a seed printed by each test; `KUBE_IPAM_FAULT_SEED` replays one.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use kube_ipam_etcd::testing::{EtcdCluster, EtcdServer};
use kube_ipam_etcd::{EtcdOptions, EtcdStore};
use kube_ipam_store::{Keys, LeaseStore};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::{Out, Scratch};

const POLL: Duration = Duration::from_millis(2);
/// Kill delays are drawn from `0..=KILL_WITHIN_MS`. A lone ADD takes 13-19 ms, but 24
/// side by side on two cores take longer, so most kills land before the commit; a few land
/// after it (the change is made but never reported), which is the case that matters most.
const KILL_WITHIN_MS: u64 = 40;
/// Generous: a debug build on a busy two-core machine.
const SETTLE: Duration = Duration::from_secs(90);

/// Polls `cond` until it holds; a condition that never comes is a failure, not a hang.
fn await_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < until, "no {what} within {within:?}");
        thread::sleep(POLL);
    }
}

/// One network, as config text for the plugin and as a file for the operator CLI.
struct Net {
    name: String,
    conf: String,
    file: PathBuf,
}

impl Net {
    /// `etcd`: comma-separated endpoints, with the plugin's default timeouts.
    fn new(s: &Scratch, name: &str, etcd: &str, ipam: Value) -> Net {
        let mut block = json!({
            "type": "kube-ipam", "etcdConfig": {"etcdURL": etcd},
            "logFile": s.log_file(), "dataDir": s.data_dir(),
        });
        support::merge(&mut block, ipam);
        let conf = json!({
            "cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "eth0",
            "ipam": block,
        })
        .to_string();
        static FILES: AtomicUsize = AtomicUsize::new(0);
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let file = s.path().join(format!("{name}-{n}.conf"));
        std::fs::write(&file, &conf).expect("write conf");
        let name = name.to_owned();
        Net { name, conf, file }
    }

    /// Asserts that the operator's check finds address and owner records in agreement;
    /// returns how many attachments it counted.
    fn check_store(&self) -> usize {
        support::check_store(&self.file)
    }

    /// Container → address as `ls` shows it; no address may be listed twice.
    fn held(&self) -> BTreeMap<String, String> {
        support::held(&self.file)
    }
}

/// Every key left of the network, read directly from etcd: under its own prefix (but the
/// marker that says it exists), and the address records of the shared space that name it.
fn keys_left(opts: EtcdOptions, network: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = EtcdStore::connect(opts).await.expect("connect");
        let keys = Keys::new("/kube-ipam", network);
        let (from, to) = keys.all();
        let mut left: Vec<String> = store
            .range(&from, &to, 0)
            .await
            .expect("range")
            .into_iter()
            .map(|e| e.key)
            .filter(|k| *k != keys.network_marker())
            .collect();
        let (from, to) = keys.ips();
        for e in store.range(&from, &to, 0).await.expect("range") {
            let rec: kube_ipam_store::IpRecord =
                kube_ipam_store::records::decode(&e.key, &e.value).expect("record");
            if rec.network == network {
                left.push(e.key);
            }
        }
        left
    })
}

#[derive(Debug)]
enum Outcome {
    /// An ADD's address, without prefix.
    Added(String),
    Deleted,
    /// A well-formed CNI error: code and details.
    Failed(u64, String),
    /// Our SIGKILL ended it before it finished.
    Killed,
}

/// One plugin process, reaped by polling so that many run at once.
struct Proc {
    verb: &'static str,
    id: String,
    node: String,
    child: Option<Child>,
    kill_at: Option<Instant>,
    kill_sent: bool,
    done: Option<(Instant, Output)>,
}

impl Proc {
    fn start(net: &Net, verb: &'static str, id: &str, node: &str, kill: Option<Duration>) -> Proc {
        let child = support::spawn(verb, id, &[("KUBE_IPAM_NODE", node)], &net.conf);
        Proc {
            verb,
            id: id.into(),
            node: node.into(),
            child: Some(child),
            kill_at: kill.map(|d| Instant::now() + d),
            kill_sent: false,
            done: None,
        }
    }

    /// Reaps the process if it has exited, else SIGKILLs it once its time has come.
    /// Returns whether it has finished.
    fn poll(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        if child.try_wait().expect("try_wait").is_some() {
            let out = self.child.take().expect("running").wait_with_output();
            self.done = Some((Instant::now(), out.expect("output")));
            return true;
        }
        if !self.kill_sent && self.kill_at.is_some_and(|at| Instant::now() >= at) {
            // Fails only if the process is already gone; the next poll reaps it either way.
            let _ = child.kill();
            self.kill_sent = true;
        }
        false
    }

    fn finished_before(&self, t: Instant) -> bool {
        self.done.as_ref().is_some_and(|d| d.0 < t)
    }

    /// What the process did, asserting the contract of a call that ended by itself: success
    /// with a result, or a non-zero exit with a CNI error on stdout, and never a panic.
    fn outcome(&self) -> Outcome {
        let (_, raw) = self.done.as_ref().expect("finished");
        let status = raw.status;
        let out = Out::from(raw.clone());
        let who = format!("{} {} on {}", self.verb, self.id, self.node);
        assert!(
            !out.stderr.contains("panicked at"),
            "{who} panicked: {out:?}"
        );
        if self.kill_sent && status.signal() == Some(libc::SIGKILL) {
            return Outcome::Killed;
        }
        let code = status
            .code()
            .unwrap_or_else(|| panic!("{who} died of {status:?}: {out:?}"));
        match (code, self.verb) {
            (0, "DEL") => {
                out.quiet();
                Outcome::Deleted
            }
            (0, _) => Outcome::Added(out.ip()),
            _ => {
                let (c, details) = out.cni_error();
                Outcome::Failed(c, details)
            }
        }
    }
}

fn finished(procs: &mut [Proc]) -> usize {
    procs.iter_mut().map(Proc::poll).filter(|&f| f).count()
}

fn settle(procs: &mut [Proc]) {
    let n = procs.len();
    await_until("end of every process", SETTLE, || finished(procs) == n);
}

/// `n` containers, as (id, node), spread over `nodes` simulated nodes.
fn ids(prefix: &str, n: usize, nodes: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{prefix}-{i}"), format!("node-{}", i % nodes)))
        .collect()
}

/// Runs `verb` for every id at once, without faults, and waits for all.
fn run_all(net: &Net, verb: &'static str, ids: &[(String, String)]) -> Vec<Proc> {
    let mut procs: Vec<Proc> = ids
        .iter()
        .map(|(id, node)| Proc::start(net, verb, id, node, None))
        .collect();
    settle(&mut procs);
    procs
}

/// ADDs `ids` at once without faults; each must succeed. Returns id → address.
fn add_all(net: &Net, ids: &[(String, String)]) -> BTreeMap<String, String> {
    let procs = run_all(net, "ADD", ids);
    procs
        .iter()
        .map(|p| match p.outcome() {
            Outcome::Added(a) => (p.id.clone(), a),
            other => panic!("ADD {} failed: {other:?}", p.id),
        })
        .collect()
}

/// ADDs `ids` again, which must all succeed now, into `held`. A container that already
/// holds an address (a failed call whose write was applied all the same, or a repeated
/// ADD) must get that address back. Returns how many did.
fn retry(net: &Net, held: &mut BTreeMap<String, String>, failed: &[(String, String)]) -> usize {
    let before = net.held();
    let after = add_all(net, failed);
    let mut found = 0;
    for (id, a) in &after {
        if let Some(had) = before.get(id) {
            assert_eq!(had, a, "the retry of {id} moved it");
            found += 1;
        }
    }
    held.extend(after);
    found
}

/// kubelet's part after a fault: retries every failed ADD, then checks that all `total`
/// containers hold distinct addresses, exactly the ones the calls reported, and that the
/// store is consistent.
fn retry_failures(
    net: &Net,
    held: &mut BTreeMap<String, String>,
    failed: &[(String, String)],
    total: usize,
) {
    let found = retry(net, held, failed);
    println!("{found} of them had been applied all the same");
    assert_eq!(held.len(), total);
    assert_eq!(net.check_store(), total);
    // `held` also proves the addresses distinct.
    assert_eq!(
        &net.held(),
        held,
        "records differ from what the ADDs returned"
    );
}

/// Starts an ADD for every id and runs `fault` once `after` of them have finished, while
/// the rest are still starting or running. Returns once all are started, with the time of
/// the fault and how many had been started by then.
fn storm(
    net: &Net,
    ids: &[(String, String)],
    after: usize,
    fault: impl FnOnce(),
) -> (Vec<Proc>, Instant, usize) {
    let mut procs = Vec::new();
    let mut fault = Some(fault);
    let mut at = None;
    for (id, node) in ids {
        procs.push(Proc::start(net, "ADD", id, node, None));
        if at.is_none() && finished(&mut procs) >= after {
            fault.take().expect("one fault")();
            at = Some((Instant::now(), procs.len()));
        }
    }
    let (at, started) = at.unwrap_or_else(|| {
        await_until("first results", SETTLE, || finished(&mut procs) >= after);
        fault.take().expect("one fault")();
        (Instant::now(), procs.len())
    });
    (procs, at, started)
}

/// Successful ADDs as id → address, failures to retry, and failure details by code.
type Sorted = (
    BTreeMap<String, String>,
    Vec<(String, String)>,
    BTreeMap<u64, BTreeSet<String>>,
);

fn sort_out(procs: &[Proc]) -> Sorted {
    let (mut held, mut retry, mut why) = (BTreeMap::new(), Vec::new(), BTreeMap::new());
    for p in procs {
        match p.outcome() {
            Outcome::Added(a) => {
                held.insert(p.id.clone(), a);
            }
            Outcome::Failed(code, d) => {
                retry.push((p.id.clone(), p.node.clone()));
                why.entry(code).or_insert_with(BTreeSet::new).insert(d);
            }
            other => panic!("ADD {}: {other:?}", p.id),
        }
    }
    (held, retry, why)
}

/// A killed process must leave nothing half-written: an ADD either holds an address with a
/// matching owner record or nothing, and the space of 40 addresses for 30 containers would
/// run out if killed ADDs leaked. ADDs and DELs of a round run side by side on different
/// containers, so an address freed by one may be taken by another at once.
#[test]
fn sigkill_during_add_and_del_on_etcd_leaves_a_consistent_store() {
    let etcd = EtcdServer::start().expect("etcd");
    let s = Scratch::new();
    let range =
        json!({"subnet": "10.97.0.0/24", "rangeStart": "10.97.0.10", "rangeEnd": "10.97.0.49"});
    let net = Net::new(&s, "kills", &etcd.endpoint(), range);
    let mut rng = StdRng::seed_from_u64(support::fault_seed());
    let ids = ids("kill", 30, 3);
    let (mut calls, mut landed, mut late, mut failed, mut applied) = (0, 0, 0, 0, 0);
    let mut prior = BTreeMap::new();
    for round in 0..5 {
        let mut order: Vec<&(String, String)> = ids.iter().collect();
        order.shuffle(&mut rng);
        let mut procs = Vec::new();
        for (n, (id, node)) in order.into_iter().take(24).enumerate() {
            let verb = if n < 12 { "ADD" } else { "DEL" };
            let delay = Duration::from_millis(rng.random_range(0..=KILL_WITHIN_MS));
            procs.push(Proc::start(&net, verb, id, node, Some(delay)));
            finished(&mut procs);
        }
        settle(&mut procs);
        let held = net.held();
        assert_eq!(net.check_store(), held.len(), "round {round}");
        for p in &procs {
            calls += 1;
            match p.outcome() {
                // A kill after the commit shows as a change the call never reported.
                Outcome::Killed => {
                    landed += 1;
                    let was = prior.contains_key(&p.id);
                    applied += usize::from(was != held.contains_key(&p.id));
                }
                Outcome::Added(a) => {
                    late += usize::from(p.kill_sent);
                    assert_eq!(held.get(&p.id), Some(&a), "round {round}: {}", p.id);
                }
                Outcome::Deleted => {
                    late += usize::from(p.kill_sent);
                    assert!(!held.contains_key(&p.id), "round {round}: {} kept", p.id);
                }
                // With etcd up and addresses to spare, only contention may refuse a call.
                Outcome::Failed(code, d) => {
                    assert_eq!(code, 11, "round {round}: {} {}: {d}", p.verb, p.id);
                    failed += 1;
                }
            }
        }
        prior = held;
    }
    println!(
        "{calls} calls: {landed} killed mid-flight (at least {applied} after their commit), {late} \
         finished before their kill, {failed} refused with code 11"
    );
    assert!(landed > 0, "no kill landed while a call was running");

    let mut after = BTreeMap::new();
    let kept = retry(&net, &mut after, &ids);
    // `held` also proves the addresses distinct.
    assert_eq!(net.held(), after);
    assert_eq!(net.check_store(), ids.len());
    println!(
        "repeated ADDs: {kept} kept their address, {} got one",
        ids.len() - kept
    );
    for p in run_all(&net, "DEL", &ids) {
        assert!(matches!(p.outcome(), Outcome::Deleted), "DEL {}", p.id);
    }
    assert_eq!(net.check_store(), 0);
    assert!(net.held().is_empty());
    // No pod bindings without Kubernetes, so an empty network has no keys at all.
    let left = keys_left(etcd.options(), &net.name);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// etcd fsyncs before it acknowledges, so a crash must not lose an address a pod was given,
/// and calls caught by the outage must fail in a way kubelet retries (code 11); a write
/// applied but never acknowledged is found again by the retry.
#[test]
fn etcd_killed_and_restarted_mid_storm() {
    let mut etcd = EtcdServer::start().expect("etcd");
    let s = Scratch::new();
    // Default timeouts: calls fail fast on a refused connection anyway, and 1 s timeouts
    // made the retries after the restart fail under load.
    let net = Net::new(
        &s,
        "storm",
        &etcd.endpoint(),
        json!({"subnet": "10.96.0.0/23"}),
    );
    let ids = ids("storm", 150, 4);
    let (mut procs, killed, started) = storm(&net, &ids, 20, || etcd.kill().expect("kill"));
    // Down until every call has ended or for 2 s; calls still running may then succeed.
    await_until("end of the outage", SETTLE, || {
        finished(&mut procs) == ids.len() || killed.elapsed() >= Duration::from_secs(2)
    });
    let down_for = killed.elapsed();
    etcd.restart().expect("restart etcd");
    settle(&mut procs);
    let (mut held, failed, why) = sort_out(&procs);
    let before_kill = procs
        .iter()
        .filter(|p| p.finished_before(killed) && held.contains_key(&p.id))
        .count();
    println!(
        "etcd killed with {started} of 150 started and {before_kill} succeeded, down for \
         {down_for:?}; {} succeeded, {} failed and were retried: {why:#?}",
        held.len(),
        failed.len()
    );
    assert!(why.keys().all(|&c| c == 11), "not all code 11: {why:#?}");
    assert!(!failed.is_empty(), "no call was caught by the outage");
    assert!(before_kill > 0, "nothing was acknowledged before the crash");
    retry_failures(&net, &mut held, &failed, 150);
}

/// Killing the leader forces an election while transactions are in flight. Calls may fail
/// meanwhile, but the two survivors must serve the retries, and the old leader, back with
/// its own data, must have caught up with exactly the same records.
#[test]
fn leader_loss_in_a_three_member_cluster() {
    let mut cluster = EtcdCluster::start(3).expect("cluster");
    let mut leader = None;
    await_until("elected leader", SETTLE, || {
        leader = cluster.leader().ok();
        leader.is_some()
    });
    let old = leader.expect("leader");
    let s = Scratch::new();
    let ipam = json!({"subnet": "10.95.0.0/24"});
    let net = Net::new(&s, "lead", &cluster.endpoints().join(","), ipam.clone());
    let ids = ids("lead", 120, 4);
    let (mut procs, _, _) = storm(&net, &ids, 15, || {
        cluster.kill_member(old).expect("kill leader");
    });
    settle(&mut procs);
    let (mut held, failed, why) = sort_out(&procs);
    let mut new = None;
    await_until("new leader", SETTLE, || {
        new = cluster.leader().ok().filter(|&l| l != old);
        new.is_some()
    });
    println!(
        "leader m{old} killed; m{} elected; {} succeeded, {} failed and were retried: {why:#?}",
        new.expect("new leader"),
        held.len(),
        failed.len()
    );
    retry_failures(&net, &mut held, &failed, 120);

    // Returns once every running member answers a linearizable read.
    cluster.restart_member(old).expect("restart old leader");
    let alone = Net::new(&s, "lead", &cluster.endpoints()[old], ipam);
    assert_eq!(alone.held(), held, "the old leader disagrees");
    assert_eq!(alone.check_store(), 120);
}
