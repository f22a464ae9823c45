//! The same inputs through Debian's host-local (the reference IPAM) and through kube-ipam:
//! the fields both answer must be equal. Every intended difference is in docs/compat.md, and
//! the cases that show one say so.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::{run, Out, BIN};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

/// One network, run through both plugins, each with a store of its own.
struct Pair {
    dir: tempfile::TempDir,
}

impl Pair {
    fn new() -> Pair {
        assert!(
            Path::new(HOST_LOCAL).exists(),
            "{HOST_LOCAL} is missing: run scripts/install-deps.sh"
        );
        Pair {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The network config for `plugin`: `ipam` is the shared block, `top` extra top-level keys.
    fn conf(&self, plugin: &str, version: Option<&str>, ipam: &Value, top: &Value) -> Vec<u8> {
        let mut block = ipam.clone();
        let b = block.as_object_mut().expect("ipam object");
        b.insert("type".into(), json!(plugin));
        b.insert("dataDir".into(), json!(self.data_dir(plugin)));
        if plugin == "kube-ipam" {
            b.insert(
                "logFile".into(),
                json!(self.dir.path().join("kube-ipam.log")),
            );
        }
        let mut doc = json!({"name": "sbs", "type": "bridge", "ipam": block});
        if let Some(v) = version {
            doc["cniVersion"] = json!(v);
        }
        support::merge(&mut doc, top.clone());
        doc.to_string().into_bytes()
    }

    fn data_dir(&self, plugin: &str) -> PathBuf {
        self.dir.path().join(plugin)
    }

    /// The same call through both plugins: (host-local, kube-ipam).
    fn call(&self, verb: &str, id: &str, args: &str, conf: impl Fn(&str) -> Vec<u8>) -> (Out, Out) {
        let one = |plugin: &str, bin: &str| {
            let mut cmd = Command::new(bin);
            cmd.env_clear()
                .env("CNI_COMMAND", verb)
                .env("CNI_CONTAINERID", id)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_NETNS", "/var/run/netns/sbs")
                .env("CNI_PATH", "/usr/lib/cni")
                .env("CNI_ARGS", args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            run(cmd, &conf(plugin))
        };
        (one("host-local", HOST_LOCAL), one("kube-ipam", BIN))
    }
}

/// The network config a case gives each plugin, by plugin type.
type ConfFor<'a> = dyn Fn(&str) -> Vec<u8> + 'a;

/// Drops the keys one side leaves out when empty: `dns: {}` (host-local always writes it,
/// kube-ipam only when there is something in it, which the spec allows).
fn normalised(mut v: Value) -> Value {
    if v.get("ips").is_some() && v.get("dns") == Some(&json!({})) {
        v.as_object_mut().expect("object").remove("dns");
    }
    v
}

/// The code of a refusal as host-local prints it (whose version errors carry no
/// `cniVersion`, so `Out::cni_error`'s stricter check is for kube-ipam only).
fn refusal_code(out: &Out) -> u64 {
    assert_ne!(out.code, 0, "accepted: {}", out.stdout);
    out.json()["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no code: {}", out.stdout))
}

fn resolv_conf(dir: &Path) -> PathBuf {
    let p = dir.join("resolv.conf");
    std::fs::write(
        &p,
        "nameserver 10.96.0.10\nnameserver fd00::10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n",
    )
    .expect("resolv.conf");
    p
}

#[test]
fn add_results_agree_in_every_version_both_speak() {
    let pair = Pair::new();
    let resolv = resolv_conf(pair.dir.path());
    let ipam = json!({
        "ranges": [
            [{"subnet": "10.215.0.0/24", "rangeStart": "10.215.0.10", "rangeEnd": "10.215.0.99"}],
            [{"subnet": "fd00:215::/64", "rangeStart": "fd00:215::10", "rangeEnd": "fd00:215::99"}],
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.215.0.1"}, {"dst": "::/0"}],
        "resolvConf": resolv,
    });
    // No version at all, and "" as libcni writes it for single-plugin configs: both 0.1.0.
    let versions = [
        None,
        Some(""),
        Some("0.1.0"),
        Some("0.2.0"),
        Some("0.3.0"),
        Some("0.3.1"),
        Some("0.4.0"),
        Some("1.0.0"),
    ];
    for (i, version) in versions.into_iter().enumerate() {
        let id = format!("c{i}");
        let v4 = format!("10.215.0.{}", 20 + i);
        let v6 = format!("fd00:215::{}", 20 + i);
        // The same addresses asked for by name give both plugins the same answer to compare.
        let top = json!({"runtimeConfig": {"ips": [v4, format!("{v6}/64")]}});
        let (hl, ki) = pair.call("ADD", &id, "IgnoreUnknown=1", |p| {
            pair.conf(p, version, &ipam, &top)
        });
        let (hl, ki) = (normalised(hl.ok()), normalised(ki.ok()));
        assert_eq!(ki, hl, "cniVersion {version:?}");
        let (hl, ki) = pair.call("DEL", &id, "", |p| pair.conf(p, version, &ipam, &json!({})));
        hl.quiet();
        ki.quiet();
    }
}

#[test]
fn capabilities_cni_args_and_checks_agree() {
    let pair = Pair::new();
    let ipam = json!({"subnet": "10.216.0.0/24", "gateway": "10.216.0.254"});
    let pair = &pair;
    let ipam = &ipam;
    let conf = |top: Value| move |p: &str| pair.conf(p, Some("1.0.0"), ipam, &top);

    // CNI_ARGS IP= with a prefix length that differs from the subnet's: ignored by both.
    let (hl, ki) = pair.call(
        "ADD",
        "a1",
        "IgnoreUnknown=1;K8S_POD_NAME=Some_Pod;IP=10.216.0.7/16",
        conf(json!({})),
    );
    assert_eq!(normalised(ki.ok()), normalised(hl.ok()));

    // args.cni.ips.
    let top = json!({"args": {"cni": {"ips": ["10.216.0.8"]}}});
    let (hl, ki) = pair.call("ADD", "a2", "", conf(top));
    assert_eq!(normalised(ki.ok()), normalised(hl.ok()));

    // The ipRanges capability comes before the configured ranges.
    let top = json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.217.0.0/24"}]], "ips": ["10.217.0.9"]}});
    let (hl, ki) = pair.call("ADD", "a3", "", conf(top));
    let (hl, ki) = (normalised(hl.ok()), normalised(ki.ok()));
    // The second set's address is dynamic: host-local takes the next free one, kube-ipam a
    // random one (docs/compat.md). Everything else agrees.
    assert_eq!(ki["ips"][0], hl["ips"][0]);
    assert_eq!(ki["ips"][1]["gateway"], hl["ips"][1]["gateway"]);
    assert_eq!(ki["ips"].as_array().map(Vec::len), Some(2));
    assert_eq!(ki["ips"][0]["address"], "10.217.0.9/24");
    assert_eq!(
        ki["ips"][1]["address"]
            .as_str()
            .map(|a| a.starts_with("10.216.0.")),
        Some(true)
    );

    // A top-level subnet together with ranges: the subnet is the first range set.
    let both = json!({"subnet": "10.218.0.0/24", "ranges": [[{"subnet": "fd00:218::/64"}]]});
    let (hl, ki) = pair.call("ADD", "a4", "IP=10.218.0.4", |p| {
        pair.conf(p, Some("1.0.0"), &both, &json!({}))
    });
    let (hl, ki) = (normalised(hl.ok()), normalised(ki.ok()));
    assert_eq!(ki["ips"][0], hl["ips"][0]);
    assert_eq!(ki["ips"].as_array().map(Vec::len), Some(2));
    assert_eq!(hl["ips"].as_array().map(Vec::len), Some(2));

    // CHECK with the result ADD gave: both content.
    for id in ["a1", "a2"] {
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": if id == "a1" {"10.216.0.7/24"} else {"10.216.0.8/24"}}]});
        let (hl, ki) = pair.call("CHECK", id, "", conf(json!({"prevResult": prev})));
        hl.quiet();
        ki.quiet();
    }

    // DEL twice: both succeed both times.
    for _ in 0..2 {
        for id in ["a1", "a2", "a3"] {
            let (hl, ki) = pair.call("DEL", id, "", conf(json!({})));
            hl.quiet();
            ki.quiet();
        }
    }
}

#[test]
fn versions_and_error_classes_agree() {
    let pair = Pair::new();
    let ipam = json!({"subnet": "10.219.0.0/29"});

    // VERSION: kube-ipam speaks every version host-local speaks.
    let (hl, ki) = pair.call("VERSION", "v", "", |p| {
        pair.conf(p, Some("1.0.0"), &ipam, &json!({}))
    });
    let (hl, ki) = (hl.ok(), ki.ok());
    for v in hl["supportedVersions"].as_array().expect("list") {
        assert!(
            ki["supportedVersions"]
                .as_array()
                .expect("list")
                .contains(v),
            "kube-ipam does not speak {v}"
        );
    }

    // Same code from both.
    let same_code: Vec<(&str, Box<ConfFor>)> = vec![
        (
            "unsupported version",
            Box::new(|p: &str| pair.conf(p, Some("9.9.9"), &ipam, &json!({}))),
        ),
        (
            "malformed JSON",
            Box::new(|_: &str| b"{\"cniVersion\": ".to_vec()),
        ),
        (
            "network name starting with '-'",
            Box::new(|p: &str| pair.conf(p, Some("1.0.0"), &ipam, &json!({"name": "-net"}))),
        ),
        (
            "network name with '/'",
            Box::new(|p: &str| pair.conf(p, Some("1.0.0"), &ipam, &json!({"name": "a/b"}))),
        ),
    ];
    for (what, conf) in same_code {
        let (hl, ki) = pair.call("ADD", "e1", "", &conf);
        let hc = refusal_code(&hl);
        let (kc, _) = ki.cni_error();
        assert_eq!(
            kc, hc,
            "{what}: host-local {} / kube-ipam {}",
            hl.stdout, ki.stdout
        );
    }

    // Both refuse, kube-ipam with a spec code where host-local answers 999 (docs/compat.md).
    let refused: Vec<(&str, &str, Value, u64)> = vec![
        ("address outside every subnet", "IP=10.1.2.3", json!({}), 7),
        (
            "subnet with host bits",
            "",
            json!({"ipam": {"type": "x", "subnet": "10.219.0.1/29"}}),
            7,
        ),
        (
            "a /31",
            "",
            json!({"ipam": {"type": "x", "subnet": "10.219.0.0/31"}}),
            7,
        ),
    ];
    for (what, args, top, code) in refused {
        let (hl, ki) = pair.call("ADD", "e2", args, |p| {
            let mut doc: Value =
                serde_json::from_slice(&pair.conf(p, Some("1.0.0"), &ipam, &json!({})))
                    .expect("json");
            if let Some(sub) = top.get("ipam").and_then(|i| i.get("subnet")) {
                doc["ipam"]["subnet"] = sub.clone();
            }
            doc.to_string().into_bytes()
        });
        refusal_code(&hl);
        assert!(!ki.err(code).is_empty(), "{what}");
    }

    // A full range: both refuse the next ADD (host-local 999, kube-ipam 101).
    for i in 0..5 {
        let (hl, ki) = pair.call("ADD", &format!("f{i}"), "", |p| {
            pair.conf(p, Some("1.0.0"), &ipam, &json!({}))
        });
        hl.ok();
        ki.ok();
    }
    let (hl, ki) = pair.call("ADD", "f-last", "", |p| {
        pair.conf(p, Some("1.0.0"), &ipam, &json!({}))
    });
    refusal_code(&hl);
    ki.err(101);

    // An address another container holds: both refuse (kube-ipam 11, naming the holder).
    let (hl, ki) = pair.call("ADD", "f-dup", "IP=10.219.0.2", |p| {
        pair.conf(p, Some("1.0.0"), &ipam, &json!({}))
    });
    refusal_code(&hl);
    let details = ki.err(11);
    assert!(details.contains("container f"), "{details}");
}
