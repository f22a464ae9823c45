//! End to end: Debian's `bridge` plugin delegates IPAM to kube-ipam for real network
//! namespaces, exactly as a container runtime drives it.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::netns::{cni_path, is_root, Attach, Link, Netns, REFERENCE_PLUGINS};
use support::Scratch;

fn bridge(cmd: &str, id: &str, ns: &Netns, path: &Path, conf: &str) -> support::Out {
    let netns = ns.path();
    let a = Attach {
        plugin: "bridge",
        id,
        netns: &netns,
        ifname: "eth0",
        path,
        extra: &[],
    };
    a.call(cmd, conf)
}

#[test]
fn bridge_plugin_delegates_to_kube_ipam_in_real_namespaces() {
    assert!(
        is_root(),
        "this test creates network namespaces and must run as root"
    );
    assert!(
        Path::new(REFERENCE_PLUGINS).join("bridge").exists(),
        "containernetworking-plugins missing"
    );
    let s = Scratch::new();
    let path = cni_path(s.path());
    let tag = std::process::id() % 100_000;
    let br = format!("kib{tag}");
    let _br = Link(br.clone());
    // Two dynamic addresses only, so reuse after DEL is observable.
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "e2e",
        "type": "bridge",
        "bridge": br,
        "isGateway": true,
        "ipam": {
            "type": "kube-ipam",
            "subnet": "10.77.0.0/24",
            "rangeStart": "10.77.0.10",
            "rangeEnd": "10.77.0.11",
            "gateway": "10.77.0.1",
            "dataDir": s.data_dir(),
            "logFile": s.log_file()
        }
    })
    .to_string();
    let a = Netns::new(format!("kipam-a-{tag}"));
    let b = Netns::new(format!("kipam-b-{tag}"));
    let c = Netns::new(format!("kipam-c-{tag}"));

    let addr = |id: &str, ns: &Netns| -> String {
        let v: Value = bridge("ADD", id, ns, &path, &conf).ok();
        let cidr = v["ips"][0]["address"].as_str().expect("address").to_owned();
        let shown = ns.exec(&["ip", "-o", "addr", "show", "dev", "eth0"]);
        let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
        assert!(
            shown.contains(&format!("inet {cidr}")),
            "eth0 of {id} lacks {cidr}: {shown}"
        );
        cidr
    };
    let ip_a = addr("pod-a", &a);
    let ip_b = addr("pod-b", &b);
    assert_ne!(ip_a, ip_b);
    let ping = a.exec(&[
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        ip_b.split('/').next().unwrap_or_default(),
    ]);
    assert!(
        ping.status.success(),
        "pod-a cannot reach pod-b: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // The range is full: the main plugin reports our error.
    let full = bridge("ADD", "pod-c", &c, &path, &conf);
    assert_ne!(full.code, 0);
    assert!(full.stdout.contains("10.77.0.0/24"), "{}", full.stdout);
    // As a runtime does after a failed ADD: DEL cleans up the half-made interface.
    assert_eq!(bridge("DEL", "pod-c", &c, &path, &conf).code, 0);

    // DEL through the main plugin frees the address for the next pod.
    let del = bridge("DEL", "pod-a", &a, &path, &conf);
    assert_eq!(del.code, 0, "{} {}", del.stdout, del.stderr);
    let ip_c = addr("pod-c", &c);
    assert_eq!(ip_c, ip_a, "the freed address was not reused");

    for (id, ns) in [("pod-b", &b), ("pod-c", &c)] {
        assert_eq!(bridge("DEL", id, ns, &path, &conf).code, 0);
    }
    // DEL of a pod whose namespace is gone still succeeds.
    drop(b);
    let gone = Netns(format!("kipam-b-{tag}"));
    assert_eq!(bridge("DEL", "pod-b", &gone, &path, &conf).code, 0);
}
