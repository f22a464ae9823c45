//! Moving in from host-local on one node: Debian's real host-local makes the allocations,
//! `kube-ipam import --from host-local` takes them over, and kube-ipam never reuses them.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;
use support::{call, cli, Scratch};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const NET: &str = "hl-net";

/// One ADD of the real host-local, as a main plugin would delegate it; the address it gave.
fn host_local_add(data_dir: &Path, container: &str, ifname: &str) -> String {
    let conf = json!({
        "cniVersion": "1.0.0", "name": NET, "type": "bridge",
        "ipam": {"type": "host-local", "subnet": "10.78.0.0/28", "dataDir": data_dir}
    });
    let out = support::run(
        {
            let mut c = Command::new(HOST_LOCAL);
            c.env_clear()
                .env("CNI_COMMAND", "ADD")
                .env("CNI_CONTAINERID", container)
                .env("CNI_IFNAME", ifname)
                .env("CNI_NETNS", "/var/run/netns/unused")
                .env("CNI_PATH", "/usr/lib/cni")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c
        },
        conf.to_string().as_bytes(),
    );
    out.ip()
}

#[test]
fn host_local_allocations_are_imported_and_never_reused() {
    let s = Scratch::new();
    let hl_dir = s.path().join("host-local");
    // Nine pods on host-local: eight by the real plugin (one on a second interface), one
    // left by a version that wrote the container id alone.
    let mut held = BTreeSet::new();
    for i in 0..8 {
        let ifname = if i == 5 { "net1" } else { "eth0" };
        assert!(held.insert(host_local_add(&hl_dir, &format!("hl{i}"), ifname)));
    }
    let old_file = hl_dir.join(NET).join("10.78.0.14");
    assert!(!old_file.exists(), "host-local gave .14 already: {held:?}");
    std::fs::write(&old_file, "hl-old").expect("write old-format file");
    held.insert("10.78.0.14".into());

    // kube-ipam takes over the same network on the embedded store.
    let conf = json!({
        "cniVersion": "1.0.0", "name": NET, "type": "bridge",
        "ipam": {"type": "kube-ipam", "subnet": "10.78.0.0/28", "dataDir": s.data_dir(),
                 "logFile": s.log_file()}
    })
    .to_string();
    let conf_path = s.path().join("net.conf");
    std::fs::write(&conf_path, &conf).expect("write conf");
    let import = || {
        cli(&[
            "import",
            "--conf",
            conf_path.to_str().unwrap(),
            "--from",
            "host-local",
            "--dir",
            hl_dir.to_str().unwrap(),
        ])
    };
    let (code, out, err) = import();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("imported 9, already there 0, conflicts 0"),
        "{out}"
    );
    let (code, out, err) = import();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("imported 0, already there 9"), "{out}");
    assert_eq!(support::check_store(&conf_path), 9);

    // 13 dynamic addresses (.2-.14), nine held: four ADDs, none reusing one, then full.
    let mut given = BTreeSet::new();
    for i in 0..4 {
        let ip = call("ADD", &format!("k{i}"), "eth0", &[], &conf).ip();
        assert!(
            !held.contains(&ip),
            "ADD reused {ip}, held by a host-local pod"
        );
        assert!(given.insert(ip));
    }
    call("ADD", "k-too-many", "eth0", &[], &conf).err(101);

    // The imported pods' DEL frees their addresses: by interface for the real plugin's
    // files, by any interface for the old one.
    // hl5's address is on net1: a DEL of its eth0 frees nothing.
    call("DEL", "hl5", "eth0", &[], &conf).quiet();
    call("ADD", "k-still-full", "eth0", &[], &conf).err(101);
    call("DEL", "hl5", "net1", &[], &conf).quiet();
    call("DEL", "hl-old", "eth0", &[], &conf).quiet();
    let mut again = BTreeSet::new();
    for i in 0..2 {
        again.insert(call("ADD", &format!("k-again{i}"), "eth0", &[], &conf).ip());
    }
    call("ADD", "k-too-many", "eth0", &[], &conf).err(101);
    assert!(again.contains("10.78.0.14"), "{again:?}");
    assert!(again.iter().all(|a| held.contains(a)), "{again:?}");
    assert_eq!(support::check_store(&conf_path), 9 - 2 + 4 + 2);
}

#[test]
fn import_and_the_upgrade_option_refuse_what_cannot_work_and_write_nothing() {
    let s = Scratch::new();
    let conf = |extra: serde_json::Value| {
        let mut ipam = json!({"type": "kube-ipam", "subnet": "10.78.0.0/28",
                              "dataDir": s.data_dir(), "logFile": s.log_file()});
        support::merge(&mut ipam, extra);
        json!({"cniVersion": "1.0.0", "name": NET, "type": "bridge", "ipam": ipam}).to_string()
    };
    // The original's records are in etcd: the option needs etcdConfig.
    let bad = conf(json!({"writeOriginalKeys": true}));
    let details = call("ADD", "c1", "eth0", &[], &bad).err(7);
    assert!(details.contains("ipam.writeOriginalKeys"), "{details}");
    let path = s.path().join("net.conf");
    std::fs::write(&path, &bad).expect("write conf");
    let (code, out, _) = cli(&["config", "check", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("ipam.writeOriginalKeys = true"), "{out}");

    std::fs::write(&path, conf(json!({}))).expect("write conf");
    let p = path.to_str().unwrap();
    let (code, _, err) = cli(&["import", "--conf", p, "--from", "original"]);
    assert_eq!(code, 2);
    assert!(err.contains("ipam.etcdConfig"), "{err}");
    let missing = s.path().join("no-such-dir");
    let (code, _, err) = cli(&[
        "import",
        "--conf",
        p,
        "--from",
        "host-local",
        "--dir",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("{}/{NET}", missing.display())),
        "{err}"
    );
    let (code, _, err) = cli(&["import", "--conf", p, "--from", "dhcp"]);
    assert_eq!(code, 2, "{err}");
    assert!(!s.data_dir().exists(), "a refused call opened the store");
    // None of it reached a store: there is none, and ls says so rather than make one.
    let (code, _, err) = cli(&["ls", "--conf", p, "--output", "json"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no store of network"), "{err}");
    assert!(!s.data_dir().exists());
}
