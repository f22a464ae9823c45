//! Real etcd processes for tests (feature `testing`).
//!
//! A fake server would agree with whatever this crate believes about etcd; only the real
//! binary shows how transactions, TLS verification and member failures actually behave.
//! Every server lives on free loopback ports with its data, certificates and log in a
//! temporary directory, and dies with its handle.
//!
//! The functions here block the calling thread while they wait for processes. Inside an
//! async test that only pauses the test's runtime, which is harmless while the test has
//! nothing else to do. The binaries default to `/usr/bin/etcd` and `/usr/bin/etcdctl`;
//! `KUBE_IPAM_ETCD` and `KUBE_IPAM_ETCDCTL` point elsewhere.
//!
//! Processes are killed when their handle drops, also when a test panics; a test binary
//! that is itself killed leaves them running.

mod certs;
mod process;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

pub use certs::TlsPaths;

/// A CA with server and client certificates signed by it, for other test servers.
pub fn generate_certs(dir: &std::path::Path) -> std::io::Result<TlsPaths> {
    certs::generate(dir)
}
use process::{free_ports, wait_healthy, Member, Spec};

use crate::EtcdOptions;

/// How long a fresh single server may take to elect itself and answer.
const SERVER_READY: Duration = Duration::from_secs(30);
/// How long a fresh cluster may take to elect a leader and answer on every member.
const CLUSTER_READY: Duration = Duration::from_secs(60);
/// Another process may grab a port between probing and etcd binding it; start again then.
const START_ATTEMPTS: usize = 3;

/// A process that died at once most likely lost a port race; one that never became healthy
/// would not do better on other ports.
fn worth_retrying(e: &io::Error) -> bool {
    e.kind() != io::ErrorKind::TimedOut
}

/// One single-member etcd.
pub struct EtcdServer {
    member: Member,
    tls: Option<TlsPaths>,
    dir: TempDir,
}

impl EtcdServer {
    /// A plain-text server on `http://127.0.0.1:<free port>`, ready to serve.
    pub fn start() -> io::Result<EtcdServer> {
        Self::launch(false, &[])
    }

    /// Like [`start`](Self::start), with more of etcd's flags, such as
    /// `--quota-backend-bytes=1048576`.
    pub fn start_with(flags: &[&str]) -> io::Result<EtcdServer> {
        Self::launch(false, flags)
    }

    /// A server that requires mutual TLS: its certificate (SAN `IP:127.0.0.1`,
    /// `DNS:localhost`) and a client certificate are signed by a CA made for this server
    /// alone; see [`TlsPaths`].
    pub fn start_tls() -> io::Result<EtcdServer> {
        Self::launch(true, &[])
    }

    fn launch(tls: bool, flags: &[&str]) -> io::Result<EtcdServer> {
        let dir = tempfile::Builder::new()
            .prefix("kube-ipam-etcd-")
            .tempdir()?;
        let tls = if tls {
            Some(certs::generate(&dir.path().join("tls"))?)
        } else {
            None
        };
        let mut last = None;
        for attempt in 0..START_ATTEMPTS {
            let [client, peer] = free_ports()?;
            let member_dir = dir.path().join(format!("member-{attempt}"));
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut member = Member::new(Spec {
                name: "kube-ipam-test".into(),
                dir: member_dir,
                client_port: client,
                peer_port: peer,
                initial_cluster: format!("kube-ipam-test={peer_url}"),
                cluster_token: format!("kube-ipam-test-{client}"),
                tls: tls.clone(),
                timing: Timing::SINGLE,
                extra: flags.iter().map(Into::into).collect(),
            })?;
            match member
                .spawn()
                .and_then(|()| wait_healthy(&mut [&mut member], tls.as_ref(), SERVER_READY))
            {
                Ok(()) => return Ok(EtcdServer { member, tls, dir }),
                Err(e) => {
                    member.kill();
                    if !worth_retrying(&e) {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.member.client_url()
    }

    /// Certificates of a server from [`start_tls`](Self::start_tls).
    pub fn tls(&self) -> Option<&TlsPaths> {
        self.tls.as_ref()
    }

    /// Options a correctly configured client would use: this endpoint, and for a TLS server
    /// its CA and the client certificate.
    pub fn options(&self) -> EtcdOptions {
        let mut opts = EtcdOptions::new([self.endpoint()]);
        if let Some(tls) = &self.tls {
            opts.tls = tls.client_files();
        }
        opts
    }

    /// etcd's own log, for a failing test to show.
    pub fn log_path(&self) -> PathBuf {
        self.member.log_path()
    }

    /// Runs Debian's `etcdctl` (v3 API) against this server, with the client certificate
    /// of a TLS server, as an operator would: `etcdctl(&["alarm", "list"])`.
    pub fn etcdctl(&self, args: &[&str]) -> io::Result<std::process::Output> {
        process::etcdctl(&[self.endpoint()], self.tls.as_ref())
            .args(["--dial-timeout=2s", "--command-timeout=30s"])
            .args(args)
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run etcdctl: {e}")))
    }

    /// The server's current revision, from `etcdctl endpoint status`.
    pub fn revision(&self) -> io::Result<u64> {
        let out = self.etcdctl(&["endpoint", "status", "--write-out=fields"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| {
                let (field, value) = l.split_once(" : ")?;
                (field.trim().trim_matches('"') == "Revision").then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| {
                io::Error::other(format!(
                    "etcdctl endpoint status gave no revision: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            })
    }

    /// Compacts away every revision before the current one, as `etcdctl compact` does.
    pub fn compact(&self) -> io::Result<u64> {
        let rev = self.revision()?;
        let out = self.etcdctl(&["compact", &rev.to_string()])?;
        if out.status.success() {
            Ok(rev)
        } else {
            Err(io::Error::other(format!(
                "etcdctl compact {rev} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// The directory holding data, log and certificates; gone when the server is dropped.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Whether the etcd process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.member.is_running()
    }

    /// Shuts etcd down gracefully (SIGTERM), killing it if it lingers.
    pub fn stop(&mut self) -> io::Result<()> {
        self.member.stop();
        Ok(())
    }

    /// Kills etcd at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) -> io::Result<()> {
        self.member.kill();
        Ok(())
    }

    /// Suspends etcd (SIGSTOP): connections stay open but nothing answers, as with a hung
    /// server or a network partition. [`thaw`](Self::thaw) resumes it.
    pub fn freeze(&mut self) -> io::Result<()> {
        self.member.signal("STOP")
    }

    /// Resumes a frozen etcd.
    pub fn thaw(&mut self) -> io::Result<()> {
        self.member.signal("CONT")
    }

    /// Starts etcd again on the same ports and data, and waits until it serves.
    pub fn restart(&mut self) -> io::Result<()> {
        self.member.stop();
        self.member.spawn()?;
        wait_healthy(&mut [&mut self.member], self.tls.as_ref(), SERVER_READY)
    }
}

/// An etcd cluster of several members on loopback.
pub struct EtcdCluster {
    members: Vec<Member>,
    _dir: TempDir,
}

impl EtcdCluster {
    /// `n` members, each with its own client and peer port, ready when every member answers
    /// a linearizable read (so a leader has been elected).
    pub fn start(n: usize) -> io::Result<EtcdCluster> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a cluster needs members",
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("kube-ipam-etcd-cluster-")
            .tempdir()?;
        let mut last = None;
        for attempt in 0..START_ATTEMPTS {
            let ports = (0..n)
                .map(|_| free_ports())
                .collect::<io::Result<Vec<_>>>()?;
            let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
            let initial = names
                .iter()
                .zip(&ports)
                .map(|(name, [_, peer])| format!("{name}=http://127.0.0.1:{peer}"))
                .collect::<Vec<_>>()
                .join(",");
            let token = format!("kube-ipam-test-{}", ports[0][0]);
            let mut members = Vec::with_capacity(n);
            for (name, [client, peer]) in names.iter().zip(&ports) {
                members.push(Member::new(Spec {
                    name: name.clone(),
                    dir: dir.path().join(format!("try{attempt}-{name}")),
                    client_port: *client,
                    peer_port: *peer,
                    initial_cluster: initial.clone(),
                    cluster_token: token.clone(),
                    tls: None,
                    timing: Timing::CLUSTER,
                    extra: Vec::new(),
                })?);
            }
            let started = members
                .iter_mut()
                .try_for_each(Member::spawn)
                .and_then(|()| {
                    let mut all: Vec<&mut Member> = members.iter_mut().collect();
                    wait_healthy(&mut all, None, CLUSTER_READY)
                });
            match started {
                Ok(()) => return Ok(EtcdCluster { members, _dir: dir }),
                Err(e) => {
                    members.iter_mut().for_each(Member::kill);
                    if !worth_retrying(&e) {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("etcd cluster did not start")))
    }

    /// Client URLs of all members, dead ones included, as a client would be configured.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Options naming every member.
    pub fn options(&self) -> EtcdOptions {
        EtcdOptions::new(self.endpoints())
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kills member `i` at once (SIGKILL).
    pub fn kill_member(&mut self, i: usize) -> io::Result<()> {
        self.member(i)?.kill();
        Ok(())
    }

    /// Starts member `i` again with its data and waits until the whole cluster answers.
    pub fn restart_member(&mut self, i: usize) -> io::Result<()> {
        let m = self.member(i)?;
        m.stop();
        m.spawn()?;
        self.wait_healthy()
    }

    /// Waits until every running member answers a linearizable read.
    pub fn wait_healthy(&mut self) -> io::Result<()> {
        let mut running: Vec<&mut Member> = self
            .members
            .iter_mut()
            .filter_map(|m| m.is_running().then_some(m))
            .collect();
        wait_healthy(&mut running, None, CLUSTER_READY)
    }

    /// Index of the current leader, as the members that answer see it.
    ///
    /// Fault tests must kill the leader, not just any member, to force an election under
    /// load. Errors while there is no agreement to report: no member answers, answering
    /// members name different leaders or none (mid-election), or the named leader does not
    /// answer itself (it was just killed and the others have not noticed yet); callers poll.
    pub fn leader(&self) -> io::Result<usize> {
        let endpoints = self.endpoints();
        let out = process::etcdctl(&endpoints, None)
            .args([
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "endpoint",
                "status",
                "--write-out=fields",
            ])
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run etcdctl: {e}")))?;
        // etcdctl exits 1 when any endpoint is down but still reports the others, so the
        // exit status says nothing here. Each endpoint's block ends with its "Endpoint" line.
        let text = String::from_utf8_lossy(&out.stdout);
        let (mut member, mut leader) = (None, None);
        let mut seen: Vec<(usize, u64, u64)> = Vec::new();
        for line in text.lines() {
            let Some((field, value)) = line.split_once(" : ") else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match field.trim().trim_matches('"') {
                "MemberID" => member = value.parse::<u64>().ok(),
                "Leader" => leader = value.parse::<u64>().ok(),
                "Endpoint" => {
                    if let (Some(i), Some(m), Some(l)) = (
                        endpoints.iter().position(|e| e == value),
                        member.take(),
                        leader.take(),
                    ) {
                        seen.push((i, m, l));
                    }
                }
                _ => {}
            }
        }
        let no_leader = |why: String| io::Error::new(io::ErrorKind::NotFound, why);
        let Some(&(_, _, named)) = seen.first() else {
            return Err(no_leader(format!(
                "no member answered: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        };
        if named == 0 || seen.iter().any(|&(_, _, l)| l != named) {
            return Err(no_leader(format!(
                "members do not agree on a leader: {seen:?}"
            )));
        }
        seen.iter()
            .find(|&&(_, m, _)| m == named)
            .map(|&(i, _, _)| i)
            .ok_or_else(|| no_leader(format!("leader {named:x} does not answer: {seen:?}")))
    }

    /// etcd's log of member `i`.
    pub fn log_path(&self, i: usize) -> Option<PathBuf> {
        self.members.get(i).map(Member::log_path)
    }

    fn member(&mut self, i: usize) -> io::Result<&mut Member> {
        let n = self.members.len();
        self.members.get_mut(i).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no member {i} in a cluster of {n}"),
            )
        })
    }
}

/// Raft timers in milliseconds. A lone member elects itself after one election timeout, so
/// a short one makes tests start faster; a cluster on a busy two-core machine keeps the
/// defaults so that slow scheduling does not look like a dead leader.
#[derive(Debug, Clone, Copy)]
struct Timing {
    heartbeat_ms: u32,
    election_ms: u32,
}

impl Timing {
    const SINGLE: Timing = Timing {
        heartbeat_ms: 50,
        election_ms: 500,
    };
    const CLUSTER: Timing = Timing {
        heartbeat_ms: 100,
        election_ms: 1000,
    };
}
