//! One malformed call and what it must be answered with, and the store that must not change.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};

use super::support::{self, Out, Scratch};
use serde_json::{json, Value};

/// The network every case points at: 10.50.0.0/28 with gateway .1, five dynamic addresses
/// (.2 to .6) and a fixed zone (.10 to .12).
pub fn good_ipam() -> Value {
    json!({
        "subnet": "10.50.0.0/28",
        "gateway": "10.50.0.1",
        "rangeStart": "10.50.0.2",
        "rangeEnd": "10.50.0.6",
        "fixedStart": "10.50.0.10",
        "fixedEnd": "10.50.0.12",
    })
}

/// The two attachments that hold an address before the bad calls.
pub const HELD: [&str; 2] = ["good-a", "good-b"];

/// One malformed call and what it must be answered with.
pub struct Case {
    pub name: String,
    /// The whole environment of the call (the binary runs with a cleared environment).
    pub vars: Vec<(OsString, OsString)>,
    pub stdin: Vec<u8>,
    pub code: u64,
    /// Each must appear in `details`.
    pub details: Vec<String>,
}

impl Case {
    /// `ADD` of the already held attachment `good-a`: a call wrongly accepted returns what it
    /// holds instead of taking a new address, so the final count still tells refusals apart.
    pub fn new(name: impl Into<String>, code: u64, stdin: impl Into<Vec<u8>>) -> Case {
        let vars = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", HELD[0]),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/test"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        Case {
            name: name.into(),
            vars,
            stdin: stdin.into(),
            code,
            details: Vec::new(),
        }
    }

    pub fn set(mut self, key: &str, value: impl AsRef<OsStr>) -> Case {
        self = self.unset(key);
        self.vars.push((key.into(), value.as_ref().to_owned()));
        self
    }

    pub fn unset(mut self, key: &str) -> Case {
        self.vars.retain(|(k, _)| k != key);
        self
    }

    pub fn cmd(self, command: &str) -> Case {
        self.set("CNI_COMMAND", command)
    }

    pub fn id(self, id: &str) -> Case {
        self.set("CNI_CONTAINERID", id)
    }

    pub fn ifname(self, ifname: &str) -> Case {
        self.set("CNI_IFNAME", ifname)
    }

    pub fn args(self, args: &str) -> Case {
        self.set("CNI_ARGS", args)
    }

    /// Raw bytes for a variable, e.g. invalid UTF-8.
    pub fn set_bytes(self, key: &str, value: &[u8]) -> Case {
        self.set(key, OsStr::from_bytes(value))
    }

    pub fn details(mut self, parts: &[&str]) -> Case {
        self.details.extend(parts.iter().map(|p| p.to_string()));
        self
    }

    pub fn run(&self) -> Out {
        let mut cmd = Command::new(support::BIN);
        cmd.env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        support::run(cmd, &self.stdin)
    }

    /// Everything wrong with the answer, empty when it is right.
    pub fn problems(&self, out: &Out) -> Vec<String> {
        let mut p = Vec::new();
        if out.stderr.contains("panicked") {
            p.push(format!("panicked: {}", out.stderr));
        }
        if out.code == 0 {
            p.push("exit code 0".to_owned());
        }
        // Nothing but the one JSON object, on one line.
        let body = out.stdout.strip_suffix('\n').unwrap_or(&out.stdout);
        if body.contains('\n') || body.is_empty() {
            p.push("stdout is not exactly one line".to_owned());
        }
        let v: Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => {
                p.push(format!("stdout is not JSON ({e})"));
                return p;
            }
        };
        if v["code"] != json!(self.code) {
            p.push(format!("code {} instead of {}", v["code"], self.code));
        }
        if !v["msg"].is_string() || !v["cniVersion"].is_string() {
            p.push("msg or cniVersion missing".to_owned());
        }
        let details = v["details"].as_str().unwrap_or_default();
        for part in &self.details {
            if !details.contains(part.as_str()) {
                p.push(format!("details lack {part:?}"));
            }
        }
        p
    }
}

/// The good config with `over` merged into its `ipam` block.
pub fn ipam_over(s: &Scratch, version: &str, over: Value) -> String {
    let mut ipam = good_ipam();
    support::merge(&mut ipam, over);
    s.conf(version, ipam)
}

/// The good config, changed at the top level by `f`.
pub fn top(s: &Scratch, version: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&s.conf(version, good_ipam())).unwrap();
    f(&mut v);
    v.to_string()
}

/// A config on the same store with `ranges` instead of the single-range keys.
pub fn ranges(s: &Scratch, ranges: Value) -> String {
    s.conf("1.0.0", json!({ "ranges": ranges }))
}

pub const MB: usize = 1 << 20;

/// Sets up the store, runs every case of `build`, then checks the store is as it was.
pub fn exercise(build: fn(&Scratch, &[Value]) -> Vec<Case>, min_cases: usize) {
    let s = Scratch::new();
    let good = s.conf("1.0.0", good_ipam());

    // The store before: two attachments, three of the five dynamic addresses free.
    let prev: Vec<Value> = HELD
        .iter()
        .map(|id| support::call("ADD", id, "eth0", &[], &good).ok())
        .collect();
    let held_ips: Vec<String> = HELD
        .iter()
        .map(|id| support::call("ADD", id, "eth0", &[], &good).ip())
        .collect();
    assert_ne!(held_ips[0], held_ips[1]);

    let cases = build(&s, &prev);
    assert!(cases.len() >= min_cases, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let out = case.run();
        let problems = case.problems(&out);
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    stdout: {:.400}\n    stderr: {:.400}",
                case.name,
                problems.join("; "),
                out.stdout,
                out.stderr
            ));
        }
    }

    // The store after: both attachments held as before, ADD still idempotent, and exactly
    // the three free addresses left.
    let mut store = Vec::new();
    for (i, id) in HELD.iter().enumerate() {
        let mut check: Value = serde_json::from_str(&good).unwrap();
        check["prevResult"] = prev[i].clone();
        let out = support::call("CHECK", id, "eth0", &[], &check.to_string());
        if out.code != 0 || !out.stdout.is_empty() {
            store.push(format!("CHECK {id}: {} {}", out.stdout, out.stderr));
        }
        let again = support::call("ADD", id, "eth0", &[], &good);
        if again.code != 0 || again.ip() != held_ips[i] {
            store.push(format!("ADD {id} again: {}", again.stdout));
        }
    }
    let mut fresh = Vec::new();
    for i in 0..3 {
        let out = support::call("ADD", &format!("fill-{i}"), "eth0", &[], &good);
        if out.code == 0 {
            fresh.push(out.ip());
        } else {
            store.push(format!("ADD fill-{i} failed: {}", out.stdout));
        }
    }
    for ip in &fresh {
        if held_ips.contains(ip) {
            store.push(format!("{ip} handed out twice"));
        }
    }
    let last = support::call("ADD", "fill-3", "eth0", &[], &good);
    if last.code == 0 || last.json()["code"] != json!(101) {
        store.push(format!("a sixth address: {}", last.stdout));
    }

    assert!(
        failures.is_empty() && store.is_empty(),
        "{} of {} cases failed:\n{}\nstore changed: {:#?}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        store
    );
    eprintln!("{} malformed calls refused, store unchanged", cases.len());
}
