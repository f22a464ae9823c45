use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{Timing, TlsPaths};

const POLL: Duration = Duration::from_millis(100);
/// How long a SIGTERM gets before SIGKILL follows.
const GRACE: Duration = Duration::from_secs(10);

fn binary(var: &str, default: &str) -> OsString {
    std::env::var_os(var).unwrap_or_else(|| default.into())
}

/// Two distinct loopback ports that were free a moment ago. Both listeners are held until
/// both are chosen so that the kernel cannot hand out the same port twice.
pub(super) fn free_ports() -> io::Result<[u16; 2]> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok([a.local_addr()?.port(), b.local_addr()?.port()])
}

/// etcd refuses to start on architectures it does not support unless told to; the value
/// must be Go's name for the running architecture.
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => other,
    }
}

/// Where and how one member runs.
pub(super) struct Spec {
    pub name: String,
    /// Holds the member's data directory and log.
    pub dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    /// `name=peer-url,...` of every member, this one included.
    pub initial_cluster: String,
    /// Members agree on a cluster only if they share the token.
    pub cluster_token: String,
    /// Serve clients over mutual TLS with these files.
    pub tls: Option<TlsPaths>,
    pub timing: Timing,
    /// More of etcd's flags, after the ones above.
    pub extra: Vec<OsString>,
}

/// One etcd process and everything needed to start it again identically.
pub(super) struct Member {
    dir: PathBuf,
    client_port: u16,
    args: Vec<OsString>,
    tls: Option<TlsPaths>,
    child: Option<Child>,
}

impl Member {
    pub(super) fn new(spec: Spec) -> io::Result<Member> {
        let Spec {
            name,
            dir,
            client_port,
            peer_port,
            initial_cluster,
            cluster_token,
            tls,
            timing,
            extra,
        } = spec;
        fs::create_dir_all(&dir)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut args: Vec<OsString> = vec![
            "--name".into(),
            name.into(),
            "--data-dir".into(),
            dir.join("data").into(),
            "--listen-client-urls".into(),
            client_url.clone().into(),
            "--advertise-client-urls".into(),
            client_url.into(),
            "--listen-peer-urls".into(),
            peer_url.clone().into(),
            "--initial-advertise-peer-urls".into(),
            peer_url.into(),
            "--initial-cluster".into(),
            initial_cluster.into(),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            cluster_token.into(),
            "--heartbeat-interval".into(),
            timing.heartbeat_ms.to_string().into(),
            "--election-timeout".into(),
            timing.election_ms.to_string().into(),
            "--logger".into(),
            "zap".into(),
            "--log-outputs".into(),
            "stderr".into(),
            "--log-level".into(),
            "error".into(),
        ];
        if let Some(t) = &tls {
            args.extend([
                "--cert-file".into(),
                t.server_cert.clone().into(),
                "--key-file".into(),
                t.server_key.clone().into(),
                "--trusted-ca-file".into(),
                t.ca.clone().into(),
                "--client-cert-auth".into(),
            ]);
        }
        args.extend(extra);
        Ok(Member {
            dir,
            client_port,
            args,
            tls,
            child: None,
        })
    }

    pub(super) fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub(super) fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    pub(super) fn spawn(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // Appending keeps the log of earlier runs of this member for post-mortems.
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(binary("KUBE_IPAM_ETCD", "/usr/bin/etcd"))
            .args(&self.args)
            .env("ETCD_UNSUPPORTED_ARCH", goarch())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run etcd: {e}")))?;
        self.child = Some(child);
        Ok(())
    }

    pub(super) fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub(super) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Fails only when the process is already gone, which is the goal.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (a name such as `TERM`) with kill(1), which spares this crate unsafe
    /// FFI for a test-only need.
    pub(super) fn signal(&mut self, signal: &str) -> io::Result<()> {
        let Some(c) = &mut self.child else {
            return Err(io::Error::other("etcd is not running"));
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(c.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill -{signal} failed ({status})"
            )))
        }
    }

    pub(super) fn stop(&mut self) {
        if self.is_running() {
            // A stopped (frozen) process cannot act on SIGTERM until it runs again.
            let _ = self.signal("CONT");
            if self.signal("TERM").is_ok() {
                let Some(c) = &mut self.child else { return };
                let until = Instant::now() + GRACE;
                while Instant::now() < until && matches!(c.try_wait(), Ok(None)) {
                    thread::sleep(POLL / 4);
                }
            }
        }
        self.kill();
    }

    fn describe_exit(&mut self) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => Some(format!("etcd exited ({status})")),
            Ok(None) => None,
            Err(e) => Some(format!("etcd state unknown: {e}")),
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn accepts(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.client_port));
        TcpStream::connect_timeout(&addr, POLL).is_ok()
    }
}

/// etcdctl (v3 API) aimed at `endpoints`, with the client certificate when there is TLS;
/// the caller adds timeouts and the command.
pub(super) fn etcdctl(endpoints: &[String], tls: Option<&TlsPaths>) -> Command {
    let mut cmd = Command::new(binary("KUBE_IPAM_ETCDCTL", "/usr/bin/etcdctl"));
    cmd.env("ETCDCTL_API", "3")
        .env("ETCD_UNSUPPORTED_ARCH", goarch())
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .stdin(Stdio::null());
    if let Some(t) = tls {
        cmd.arg(arg("--cacert=", &t.ca))
            .arg(arg("--cert=", &t.client_cert))
            .arg(arg("--key=", &t.client_key));
    }
    cmd
}

fn etcdctl_healthy(endpoints: &[String], tls: Option<&TlsPaths>) -> bool {
    etcdctl(endpoints, tls)
        .args([
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "endpoint",
            "health",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn arg(flag: &str, path: &Path) -> OsString {
    let mut a = OsString::from(flag);
    a.push(path);
    a
}

/// Polls until every member accepts connections and then answers etcdctl's health check
/// (a linearizable read, so it also proves a leader). Fails early if a process dies, with
/// the end of its log.
pub(super) fn wait_healthy(
    members: &mut [&mut Member],
    tls: Option<&TlsPaths>,
    within: Duration,
) -> io::Result<()> {
    let until = Instant::now() + within;
    let endpoints: Vec<String> = members.iter().map(|m| m.client_url()).collect();
    loop {
        for m in members.iter_mut() {
            if let Some(exit) = m.describe_exit() {
                return Err(io::Error::other(format!(
                    "{exit} at {}; log:\n{}",
                    m.client_url(),
                    m.log_tail()
                )));
            }
        }
        if members.iter().all(|m| m.accepts()) && etcdctl_healthy(&endpoints, tls) {
            return Ok(());
        }
        if Instant::now() >= until {
            let logs: Vec<String> = members
                .iter()
                .map(|m| format!("{}:\n{}", m.client_url(), m.log_tail()))
                .collect();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "etcd {} not healthy within {within:?}; logs:\n{}",
                    endpoints.join(","),
                    logs.join("\n")
                ),
            ));
        }
        thread::sleep(POLL);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}
