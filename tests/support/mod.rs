//! Shared helpers of the black-box tests: run the real binary as a runtime would.
#![allow(dead_code)]

pub mod netns;
pub mod pods;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_kube-ipam");

/// What one call of the plugin printed and returned.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / stderr {:?}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts success and returns the result.
    pub fn ok(&self) -> Value {
        assert_eq!(self.code, 0, "call failed: {} {}", self.stdout, self.stderr);
        self.json()
    }

    /// Asserts success of a verb that prints nothing on success (DEL, CHECK, GC, STATUS).
    pub fn quiet(&self) {
        assert_eq!(self.code, 0, "call failed: {} {}", self.stdout, self.stderr);
        assert!(self.stdout.is_empty(), "printed {:?}", self.stdout);
    }

    /// Asserts a CNI error with `code` and returns its details.
    pub fn err(&self, code: u64) -> String {
        let (got, details) = self.cni_error();
        assert_eq!(got, code, "wrong code: {}", self.stdout);
        details
    }

    /// Asserts a failure answered the spec's way, whatever its code: a non-zero exit and
    /// error JSON with a code, a message and the version. Returns the code and details.
    pub fn cni_error(&self) -> (u64, String) {
        assert_ne!(self.code, 0, "call succeeded: {}", self.stdout);
        assert!(!self.stdout.trim().is_empty(), "failed silently: {self:?}");
        let v = self.json();
        let code = v["code"].as_u64().unwrap_or_else(|| panic!("no code: {v}"));
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()) && v["cniVersion"].is_string(),
            "malformed error: {v}"
        );
        (code, v["details"].as_str().unwrap_or_default().to_owned())
    }

    /// The first address of an ADD result, without its prefix.
    pub fn ip(&self) -> String {
        let v = self.ok();
        let a = v["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address in {v}"));
        a.split('/').next().unwrap().to_owned()
    }
}

/// The plugin with the CNI environment of one call, as a runtime execs it.
pub fn command(command: &str, container: &str, ifname: &str, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", ifname)
        .env("CNI_NETNS", "/var/run/netns/test")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Starts one call without waiting for it, for bursts of concurrent calls.
pub fn spawn(command_: &str, container: &str, extra: &[(&str, &str)], stdin: &str) -> Child {
    let mut child = command(command_, container, "eth0", extra)
        .spawn()
        .expect("spawn kube-ipam");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    child
}

/// One call: `command` with `container`/`ifname`, extra env, and `stdin`.
pub fn call(
    command_: &str,
    container: &str,
    ifname: &str,
    extra: &[(&str, &str)],
    stdin: &str,
) -> Out {
    run(
        command(command_, container, ifname, extra),
        stdin.as_bytes(),
    )
}

pub fn run(mut cmd: Command, stdin: &[u8]) -> Out {
    let mut child = cmd.spawn().expect("spawn kube-ipam");
    if let Some(mut i) = child.stdin.take() {
        // The plugin may refuse to read everything (e.g. oversized input): ignore EPIPE.
        let _ = i.write_all(stdin);
    }
    wait(child)
}

/// Waits for a spawned call and collects what it printed.
pub fn wait(child: Child) -> Out {
    child.wait_with_output().expect("wait for kube-ipam").into()
}

impl From<std::process::Output> for Out {
    /// A process killed by a signal has no exit code: -1.
    fn from(out: std::process::Output) -> Out {
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The seed of a test's random faults: `KUBE_IPAM_FAULT_SEED` to replay a run, else the
/// clock. Printed, so a failing run can be replayed.
pub fn fault_seed() -> u64 {
    let seed = std::env::var("KUBE_IPAM_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("seed {seed} (KUBE_IPAM_FAULT_SEED={seed} replays it)");
    seed
}

/// The operator CLI (no CNI_COMMAND): exit code, stdout, stderr.
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .env_remove("CNI_COMMAND")
        .args(args)
        .output()
        .expect("run cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kube-ipam check-store` on the network in `conf`: asserts the store is consistent and
/// returns how many attachments it counted.
pub fn check_store(conf: &Path) -> usize {
    let conf = conf.to_str().expect("utf-8 path");
    let (code, out, err) = cli(&["check-store", "--conf", conf]);
    assert_eq!(code, 0, "check-store found problems:\n{out}{err}");
    out.trim()
        .strip_prefix("consistent: ")
        .and_then(|r| r.strip_suffix(" attachments"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("check-store printed {out:?}"))
}

/// Container → address as `kube-ipam ls` shows the network in `conf`; fails on an address
/// or a container listed twice.
pub fn held(conf: &Path) -> std::collections::BTreeMap<String, String> {
    let conf = conf.to_str().expect("utf-8 path");
    let (code, out, err) = cli(&["ls", "--conf", conf, "--output", "json"]);
    assert_eq!(code, 0, "ls failed: {out}{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).expect("ls prints JSON");
    let mut addrs = std::collections::BTreeSet::new();
    let mut held = std::collections::BTreeMap::new();
    for r in &rows {
        let addr = r["address"].as_str().expect("address").to_owned();
        let container = r["container"].as_str().expect("container").to_owned();
        assert!(addrs.insert(addr.clone()), "{addr} listed twice: {out}");
        assert!(
            held.insert(container.clone(), addr).is_none(),
            "{container} holds two addresses on one interface: {out}"
        );
    }
    held
}

/// A scratch directory for one test's embedded store and log.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }
    pub fn log_file(&self) -> PathBuf {
        self.path().join("kube-ipam.log")
    }

    /// The network `name` on etcd (`etcd_config`, the `etcdConfig` block), `ipam` merged over
    /// the defaults, and the file it is written to for the operator commands.
    pub fn etcd_network(&self, name: &str, etcd_config: Value, ipam: Value) -> (String, PathBuf) {
        let mut block = json!({
            "type": "kube-ipam",
            "etcdConfig": etcd_config,
            "logFile": self.log_file(),
        });
        merge(&mut block, ipam);
        let conf = json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "ipam": block})
            .to_string();
        let file = self.path().join("net.conf");
        std::fs::write(&file, &conf).expect("write conf");
        (conf, file)
    }

    /// A network config on the embedded store with `ipam` merged over the defaults.
    pub fn conf(&self, version: &str, ipam: Value) -> String {
        let mut base = json!({
            "type": "kube-ipam",
            "dataDir": self.data_dir(),
            "logFile": self.log_file(),
            "logLevel": "debug",
        });
        merge(&mut base, ipam);
        json!({"cniVersion": version, "name": "testnet", "type": "bridge", "ipam": base})
            .to_string()
    }
}

pub fn merge(base: &mut Value, over: Value) {
    if let (Some(b), Value::Object(o)) = (base.as_object_mut(), over) {
        for (k, v) in o {
            b.insert(k, v);
        }
    }
}
