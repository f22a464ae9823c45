//! A node upgraded from the release that kept the embedded store in sled.
//!
//! `fixtures/sled-store-0.1.0.tgz` is the data directory that release (commit 156bf90) wrote
//! for network `legacy` (10.77.0.0/24) after three ADDs. Starting an empty store beside it
//! would hand those three addresses out again; the plugin must refuse every call until the
//! operator converts it with `kube-ipam-convert-store`, and the conversion must keep every
//! holder.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::json;
use support::{Out, Scratch};

const HELD: [(&str, &str); 3] = [
    ("old-1", "10.77.0.108"),
    ("old-2", "10.77.0.253"),
    ("old-3", "10.77.0.245"),
];

/// `kube-ipam-convert-store DIR`: exit code, stdout, stderr.
fn convert(dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-ipam-convert-store"))
        .arg(dir)
        .output()
        .expect("run kube-ipam-convert-store");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unpack(data: &Path) {
    std::fs::create_dir_all(data).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sled-store-0.1.0.tgz");
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(data)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar failed");
}

#[test]
fn sled_store_of_the_earlier_release_is_refused_until_converted_then_kept() {
    let s = Scratch::new();
    unpack(&s.data_dir());
    let conf = json!({"cniVersion": "1.0.0", "name": "legacy", "type": "bridge", "ipam": {
        "type": "kube-ipam", "subnet": "10.77.0.0/24",
        "dataDir": s.data_dir(), "logFile": s.log_file()}})
    .to_string();
    let file = s.path().join("net.conf");
    std::fs::write(&file, &conf).unwrap();
    let dir = s.data_dir().join("legacy");
    let call = |verb: &str, id: &str| -> Out { support::call(verb, id, "eth0", &[], &conf) };

    // Every verb that touches the store is refused with 5, naming the directory and the
    // command; nothing is created beside the old store.
    for (verb, id) in [("ADD", "new-1"), ("DEL", "old-1")] {
        let details = call(verb, id).err(5);
        assert!(details.contains(&dir.display().to_string()), "{details}");
        assert!(
            details.contains(&format!("kube-ipam-convert-store {}", dir.display())),
            "{details}"
        );
    }
    assert!(!dir.join(kube_ipam_sqlite::DB_FILE).exists());
    let f = file.to_str().unwrap();
    let (code, _, err) = support::cli(&["ls", "--conf", f]);
    assert_ne!(code, 0);
    assert!(err.contains("convert-store"), "{err}");

    let (code, out, err) = convert(&dir);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("converted"), "{out}");

    let held = support::held(&file);
    let want = HELD
        .iter()
        .map(|(c, a)| (c.to_string(), a.to_string()))
        .collect();
    assert_eq!(held, want);
    assert_eq!(support::check_store(&file), 3);

    // The converted store hands out only free addresses and releases old holders.
    let ip = call("ADD", "new-1").ip();
    assert!(!HELD.iter().any(|(_, a)| *a == ip), "{ip} was already held");
    call("DEL", "old-1").quiet();
    assert_eq!(support::check_store(&file), 3);
    assert!(!support::held(&file).contains_key("old-1"));

    // Converting twice finds nothing to convert and changes nothing.
    let (code, _, err) = convert(&dir);
    assert_ne!(code, 0);
    assert!(err.contains("no sled store"), "{err}");
    assert_eq!(support::check_store(&file), 3);
}
