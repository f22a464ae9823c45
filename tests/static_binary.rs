//! The executable is copied onto whatever OS the nodes run, so it must need nothing of theirs:
//! no program interpreter, no shared library. These tests read its ELF headers and run it in
//! a root that holds only the binary, `/dev`, `/proc` and `/etc/hosts`.
//!
//! The chroot test needs root; it runs the binary in a mount namespace of its own, so its
//! mounts end with the process whatever happens to the test.

mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use kube_ipam_etcd::testing::EtcdServer;
use serde_json::json;
use support::netns::is_root;
use support::{run, Out, BIN};

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const ET_EXEC: u16 = 2;

/// What the loader would need: the ELF type, the interpreter segment, the DT_NEEDED entries.
struct Linkage {
    elf_type: u16,
    interpreter: Option<String>,
    needed: usize,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the program headers of a little-endian ELF64 file (x86_64, aarch64).
fn linkage(elf: &[u8]) -> Linkage {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    assert_eq!(elf[5], 1, "not little-endian");
    let elf_type = u16_at(elf, 16);
    let phoff = u64_at(elf, 32) as usize;
    let phentsize = u16_at(elf, 54) as usize;
    let phnum = u16_at(elf, 56) as usize;
    let mut interpreter = None;
    let mut needed = 0;
    for i in 0..phnum {
        let ph = &elf[phoff + i * phentsize..phoff + (i + 1) * phentsize];
        let (kind, offset, size) = (
            u32_at(ph, 0),
            u64_at(ph, 8) as usize,
            u64_at(ph, 32) as usize,
        );
        let seg = &elf[offset..offset + size];
        match kind {
            PT_INTERP => {
                interpreter = Some(
                    String::from_utf8_lossy(seg)
                        .trim_end_matches('\0')
                        .to_owned(),
                )
            }
            PT_DYNAMIC => {
                for entry in seg.chunks_exact(16) {
                    match u64_at(entry, 0) {
                        DT_NULL => break,
                        DT_NEEDED => needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Linkage {
        elf_type,
        interpreter,
        needed,
    }
}

#[test]
fn executable_needs_no_interpreter_and_no_shared_library() {
    let elf = std::fs::read(BIN).expect("read the binary");
    let l = linkage(&elf);
    assert_eq!(l.interpreter, None, "{BIN} names a program interpreter");
    assert_eq!(l.needed, 0, "{BIN} needs shared libraries");
    // Fixed-address (ET_EXEC), not a static PIE (ET_DYN) that relocates itself before main
    // on every call.
    assert_eq!(l.elf_type, ET_EXEC, "{BIN} is position-independent");

    // The parser itself, on a binary that certainly has both.
    let dynamic = linkage(&std::fs::read("/usr/bin/env").expect("read /usr/bin/env"));
    assert!(dynamic.interpreter.is_some_and(|i| i.contains("ld-linux")));
    assert!(dynamic.needed > 0);
}

/// A root holding the binary, `/dev`, `/proc` and `/etc/hosts`, nothing else.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new(hosts: &str) -> Root {
        let dir = tempfile::Builder::new()
            .prefix("kube-ipam-root-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        for sub in ["dev", "proc", "etc"] {
            std::fs::create_dir(d.join(sub)).expect("mkdir");
        }
        std::fs::write(d.join("etc/hosts"), hosts).expect("hosts");
        std::fs::copy(BIN, d.join("kube-ipam")).expect("copy the binary");
        std::fs::set_permissions(d.join("kube-ipam"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Root { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `/kube-ipam` run inside the root with the CNI environment of one call.
    fn call(&self, verb: &str, container: &str, stdin: &str) -> Out {
        let mut cmd = Command::new("/kube-ipam");
        cmd.env_clear()
            .env("CNI_COMMAND", verb)
            .env("CNI_CONTAINERID", container)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_NETNS", "/proc/self/ns/net")
            .env("CNI_PATH", "/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        enter(&mut cmd, self.path());
        run(cmd, stdin.as_bytes())
    }
}

/// Makes `cmd` start in a mount namespace of its own with `root` as its root: the host's
/// `/dev` bound in, a fresh `/proc`.
fn enter(cmd: &mut Command, root: &Path) {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("path without NUL");
    let root_c = c(root);
    let dev = c(&root.join("dev"));
    let proc_ = c(&root.join("proc"));
    let host_dev = c(Path::new("/dev"));
    let slash = c(Path::new("/"));
    let proc_fs = c(Path::new("proc"));
    // SAFETY: between fork and exec the closure makes only async-signal-safe system calls on
    // strings built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted here may reach the host's namespace.
            check(libc::mount(
                std::ptr::null(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                host_dev.as_ptr(),
                dev.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                proc_fs.as_ptr(),
                proc_.as_ptr(),
                proc_fs.as_ptr(),
                0,
                std::ptr::null(),
            ))?;
            check(libc::chroot(root_c.as_ptr()))?;
            check(libc::chdir(slash.as_ptr()))
        });
    }
}

#[test]
fn runs_in_a_root_holding_only_itself() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let etcd = EtcdServer::start().expect("etcd");
    // The endpoint by a name only the root's /etc/hosts knows.
    let name = format!("etcd-{}.kube-ipam.test", std::process::id());
    let port = etcd
        .endpoint()
        .rsplit(':')
        .next()
        .expect("endpoint has a port")
        .to_owned();
    let root = Root::new(&format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\t{name}\n"
    ));
    assert_eq!(
        std::fs::read_dir(root.path()).expect("ls").count(),
        4,
        "the root holds more than the binary, dev, proc and etc"
    );

    let version = root.call("VERSION", "", "{}").ok();
    assert!(
        version["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("1.0.0"))),
        "{version}"
    );

    let embedded = json!({
        "cniVersion": "1.0.0", "name": "chroot-embedded", "type": "bridge",
        "ipam": {"type": "kube-ipam", "subnet": "10.236.0.0/24",
                 "dataDir": "/data", "logFile": "/kube-ipam.log"},
    })
    .to_string();
    let ip = root.call("ADD", "c-embedded", &embedded).ip();
    assert!(ip.starts_with("10.236.0."), "{ip}");
    // The store it wrote is the one the host's CLI reads.
    let outside = root.path().join("embedded.conf");
    let mut host_view: serde_json::Value = serde_json::from_str(&embedded).expect("json");
    host_view["ipam"]["dataDir"] = json!(root.path().join("data"));
    host_view["ipam"]["logFile"] = json!(root.path().join("cli.log"));
    std::fs::write(&outside, host_view.to_string()).expect("conf");
    assert_eq!(
        support::held(&outside).into_values().collect::<Vec<_>>(),
        vec![ip]
    );
    root.call("DEL", "c-embedded", &embedded).quiet();
    assert!(
        support::held(&outside).is_empty(),
        "DEL left the address held"
    );

    let on_etcd = json!({
        "cniVersion": "1.0.0", "name": "chroot-etcd", "type": "bridge",
        "ipam": {"type": "kube-ipam", "subnet": "10.236.1.0/24", "logFile": "/kube-ipam.log",
                 "etcdConfig": {"etcdURL": format!("http://{name}:{port}")}},
    })
    .to_string();
    let ip = root.call("ADD", "c-etcd", &on_etcd).ip();
    assert!(ip.starts_with("10.236.1."), "{ip}");
    root.call("DEL", "c-etcd", &on_etcd).quiet();

    // A name neither /etc/hosts nor DNS knows fails as an unreachable store, not a crash.
    let unknown = on_etcd.replace(&name, "no-such-host.kube-ipam.test");
    let (code, details) = root.call("ADD", "c-unknown", &unknown).cni_error();
    assert_eq!(code, 11, "{details}");
}
