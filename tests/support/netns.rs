//! Real network plumbing for end-to-end tests: namespaces, links, and the reference plugins
//! driven exactly as a container runtime drives them. Needs root.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::Out;

pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

pub fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command")
}

/// Runs a command and fails the test, with its stderr, if it fails.
pub fn must(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A namespace that is removed when the test ends, whatever happens.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: String) -> Netns {
        let _ = sh(&["ip", "netns", "del", &name]);
        must(&["ip", "netns", "add", &name]);
        Netns(name)
    }
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        sh(&all)
    }
    /// One ping with a generous deadline; true if answered.
    pub fn ping(&self, ip: &str) -> bool {
        self.exec(&["ping", "-c", "1", "-W", "5", ip])
            .status
            .success()
    }
    /// The `inet`/`inet6` addresses of `dev`, as `ip -o addr` prints them.
    pub fn addresses(&self, dev: &str) -> String {
        String::from_utf8_lossy(&self.exec(&["ip", "-o", "addr", "show", "dev", dev]).stdout)
            .into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

/// A host link deleted when the test ends.
pub struct Link(pub String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.0]);
    }
}

/// A CNI_PATH holding the reference plugins and our binary as `kube-ipam`.
pub fn cni_path(dir: &Path) -> PathBuf {
    let p = dir.join("cni-bin");
    std::fs::create_dir_all(&p).expect("mkdir");
    for entry in std::fs::read_dir(REFERENCE_PLUGINS).expect("reference plugins installed") {
        let entry = entry.expect("entry");
        std::os::unix::fs::symlink(entry.path(), p.join(entry.file_name())).expect("symlink");
    }
    std::os::unix::fs::symlink(super::BIN, p.join("kube-ipam")).expect("symlink");
    p
}

/// One attachment made by a reference plugin, which delegates IPAM through CNI_PATH.
pub struct Attach<'a> {
    pub plugin: &'a str,
    pub id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub path: &'a Path,
    pub extra: &'a [(&'a str, &'a str)],
}

impl Attach<'_> {
    /// The command of one call, with the env a runtime sets.
    pub fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new(format!("{REFERENCE_PLUGINS}/{}", self.plugin));
        c.env_clear()
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", self.id)
            .env("CNI_NETNS", self.netns)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_PATH", self.path)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in self.extra {
            c.env(k, v);
        }
        c
    }

    pub fn call(&self, cmd: &str, conf: &str) -> Out {
        super::run(self.command(cmd), conf.as_bytes())
    }
}
