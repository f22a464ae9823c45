//! Podman, a real libcni caller, driving kube-ipam through Debian's `bridge` plugin: what a
//! user sees who types `podman run --network`. Podman's config goes in through
//! `CONTAINERS_CONF` and `CONTAINERS_STORAGE_CONF`, so the host's `/etc/containers` is never
//! touched; the image is a busybox-static rootfs imported locally.
//!
//! Needs root, podman, runc and busybox-static (scripts/install-deps.sh installs them).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube_ipam_etcd::testing::EtcdServer;
use serde_json::{json, Value};
use support::netns::is_root;
use support::{check_store, held, BIN};

const IMAGE: &str = "localhost/kube-ipam-bb";

/// One podman installation of its own: storage, runtime state, networks, plugins.
struct Podman {
    dir: tempfile::TempDir,
    net: String,
    bridge: String,
}

impl Podman {
    /// Podman with one bridge network `net` whose IPAM is kube-ipam with `ipam` merged in.
    fn new(net: &str, subnet: &str, ipam: Value) -> Podman {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let tag = std::process::id() % 100_000;
        let bridge = format!("kpm{tag}{}", &net[net.len() - 1..]);
        for sub in ["bin", "net.d", "run", "root", "tmp", "rootfs/bin"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        std::os::unix::fs::symlink(BIN, d.join("bin/kube-ipam")).expect("plugin link");
        // Podman's default ulimits lie above what runc may set here (no CAP_SYS_RESOURCE):
        // the containers get small fixed ones.
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n\
                 [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\ntmp_dir = \"{tmp}\"\n\
                 [network]\nnetwork_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{bin}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{netd}\"\n",
                tmp = d.join("tmp").display(),
                bin = d.join("bin").display(),
                netd = d.join("net.d").display(),
            ),
        )
        .expect("containers.conf");
        std::fs::write(
            d.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{}\"\ngraphroot = \"{}\"\n",
                d.join("run").display(),
                d.join("root").display()
            ),
        )
        .expect("storage.conf");
        let mut base = json!({
            "type": "kube-ipam",
            "subnet": subnet,
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": d.join("store"),
            "logFile": d.join("kube-ipam.log"),
            "logLevel": "debug",
        });
        support::merge(&mut base, ipam);
        let list = json!({
            "cniVersion": "1.0.0",
            "name": net,
            "plugins": [{
                "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                "ipam": base,
            }],
        });
        std::fs::write(d.join(format!("net.d/{net}.conflist")), list.to_string())
            .expect("conflist");
        let p = Podman {
            dir,
            net: net.to_owned(),
            bridge,
        };
        p.import_image();
        p
    }

    fn conflist(&self) -> PathBuf {
        self.dir.path().join(format!("net.d/{}.conflist", self.net))
    }

    fn podman(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("podman")
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .args(args)
            .output()
            .expect("run podman")
    }

    fn import_image(&self) {
        let d = self.dir.path();
        std::fs::copy("/usr/bin/busybox", d.join("rootfs/bin/busybox")).expect("busybox");
        for applet in ["sh", "sleep", "ping", "ip"] {
            std::os::unix::fs::symlink("busybox", d.join("rootfs/bin").join(applet))
                .expect("applet link");
        }
        let tar = d.join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(d.join("rootfs"))
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar")
            .success();
        assert!(ok, "tar of the rootfs failed");
        let out = self.podman(&["import", tar.to_str().expect("path"), IMAGE]);
        assert!(out.status.success(), "podman import: {}", text(&out));
    }

    /// `podman run -d --network <net> [extra] <image> sleep 600`: the container id, or what
    /// podman printed when it failed.
    fn run(&self, extra: &[&str]) -> Result<String, String> {
        let mut args = vec!["run", "-d", "--network", &self.net];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sleep", "600"]);
        let out = self.podman(&args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(text(&out))
        }
    }

    fn ip(&self, id: &str) -> String {
        let fmt = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.net
        );
        let out = self.podman(&["inspect", "-f", &fmt, id]);
        assert!(out.status.success(), "podman inspect: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn pings(&self, id: &str, ip: &str) -> bool {
        self.podman(&["exec", id, "ping", "-c", "1", "-W", "3", ip])
            .status
            .success()
    }

    fn rm(&self, id: &str) {
        let out = self.podman(&["rm", "-f", "-t", "0", id]);
        assert!(out.status.success(), "podman rm: {}", text(&out));
    }

    /// Addresses kube-ipam's store holds for the network, by container.
    fn held(&self) -> BTreeSet<String> {
        held(&self.conflist()).into_values().collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-a", "-f", "-t", "0"]);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ready() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    for tool in ["podman", "runc", "/usr/bin/busybox", "/usr/lib/cni/bridge"] {
        let found = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            Command::new("which")
                .arg(tool)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        assert!(found, "{tool} is missing: run scripts/install-deps.sh");
    }
    true
}

/// The whole tour on one store: unnamed containers, `--ip`, `rm`, 30 at once, reload.
fn tour(p: &Podman, prefix: &str) {
    // Plain `podman run`: podman sends its container name (`sad_booth`) as K8S_POD_NAME.
    let ids: Vec<String> = (0..3).map(|_| p.run(&[]).expect("podman run")).collect();
    let ips: Vec<String> = ids.iter().map(|id| p.ip(id)).collect();
    let distinct: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 3, "{ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with(prefix)), "{ips:?}");
    for (id, _) in ids.iter().zip(&ips) {
        for ip in &ips {
            assert!(p.pings(id, ip), "{id} cannot reach {ip}");
        }
    }
    assert_eq!(p.held(), ips.iter().cloned().collect());

    // A named container with a capitalised name, and `--ip`: exactly that address (one the
    // three above were not given at random).
    let wanted = (200..250)
        .map(|n| format!("{prefix}{n}"))
        .find(|a| !ips.contains(a))
        .expect("a free address");
    let fixed = p
        .run(&["--name", "My_Web", "--ip", &wanted])
        .expect("podman run --ip");
    assert_eq!(p.ip(&fixed), wanted);
    let refused = p
        .run(&["--ip", &wanted])
        .expect_err("second --ip of a held address");
    assert!(refused.contains(&wanted), "{refused}");
    assert!(p.held().contains(&wanted));
    p.rm(&fixed);
    assert!(!p.held().contains(&wanted), "rm did not free {wanted}");
    let second = p
        .run(&["--ip", &wanted])
        .expect("the address is free again");
    assert_eq!(p.ip(&second), wanted);

    // `podman network reload` tears every container's network down and sets it up again,
    // asking for the addresses they had.
    let before: Vec<(String, String)> = ids
        .iter()
        .chain([&second])
        .map(|id| (id.clone(), p.ip(id)))
        .collect();
    let out = p.podman(&["network", "reload", "--all"]);
    assert!(out.status.success(), "reload: {}", text(&out));
    for (id, ip) in &before {
        assert_eq!(&p.ip(id), ip, "{id} changed address on reload");
    }
    assert_eq!(
        p.held(),
        before.iter().map(|(_, ip)| ip.clone()).collect(),
        "the store disagrees with podman after reload"
    );

    // 30 containers started at once.
    let burst: Vec<std::thread::JoinHandle<Result<String, String>>> = (0..30)
        .map(|_| {
            let d = p.dir.path().to_owned();
            let net = p.net.clone();
            std::thread::spawn(move || {
                let out = Command::new("podman")
                    .env("CONTAINERS_CONF", d.join("containers.conf"))
                    .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
                    .args(["run", "-d", "--network", &net, IMAGE, "sleep", "600"])
                    .output()
                    .expect("podman run");
                if out.status.success() {
                    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
                } else {
                    Err(text(&out))
                }
            })
        })
        .collect();
    let started: Vec<String> = burst
        .into_iter()
        .map(|h| h.join().expect("thread").expect("podman run in the burst"))
        .collect();
    let burst_ips: BTreeSet<String> = started.iter().map(|id| p.ip(id)).collect();
    assert_eq!(burst_ips.len(), 30, "duplicate addresses: {burst_ips:?}");
    assert_eq!(p.held().len(), 34);
    assert_eq!(check_store(&p.conflist()), 34);

    let out = p.podman(&["rm", "-a", "-f", "-t", "0"]);
    assert!(out.status.success(), "rm -a: {}", text(&out));
    assert!(p.held().is_empty(), "rm -a left addresses behind");
}

#[test]
fn podman_on_the_embedded_store() {
    if !ready() {
        return;
    }
    let p = Podman::new("kipam-pe", "10.213.0.0/24", json!({}));
    tour(&p, "10.213.0.");
}

#[test]
fn podman_on_etcd() {
    if !ready() {
        return;
    }
    let etcd = EtcdServer::start().expect("etcd");
    let p = Podman::new(
        "kipam-pt",
        "10.214.0.0/24",
        json!({"etcdConfig": {"etcdURL": etcd.endpoint()}}),
    );
    tour(&p, "10.214.0.");
}
