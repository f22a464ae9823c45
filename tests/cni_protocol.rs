//! The CNI protocol through the real binary: every verb in every supported version, and the
//! error paths, with exact result shapes.

mod support;

use serde_json::{json, Value};
use support::{call, Scratch};

/// Versions whose results carry an `ips` list.
const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Every version VERSION lists, as host-local lists them and then 1.1.0.
const ALL_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn small_range() -> Value {
    json!({"subnet": "10.22.0.0/24", "gateway": "10.22.0.1", "routes": [{"dst": "0.0.0.0/0"}]})
}

#[test]
fn version_lists_every_supported_version() {
    for stdin in [r#"{"cniVersion":"1.1.0"}"#, r#"{"cniVersion":"0.3.0"}"#, ""] {
        let out = call("VERSION", "", "", &[], stdin);
        let v = out.ok();
        assert_eq!(v["supportedVersions"], json!(ALL_VERSIONS));
        assert_eq!(v["cniVersion"], "1.1.0");
    }
}

#[test]
fn add_check_del_in_every_version_with_its_result_shape() {
    for version in VERSIONS {
        let s = Scratch::new();
        let conf = s.conf(version, small_range());
        let add = call("ADD", "ctr-1", "eth0", &[], &conf);
        let r = add.ok();
        assert_eq!(r["cniVersion"], version);
        assert!(
            r.get("interfaces").is_none(),
            "IPAM results carry no interfaces: {r}"
        );
        let ip = &r["ips"][0];
        let addr = ip["address"].as_str().unwrap();
        assert!(
            addr.starts_with("10.22.0.") && addr.ends_with("/24"),
            "{addr}"
        );
        assert_ne!(addr, "10.22.0.1/24", "gateway handed out");
        assert_eq!(ip["gateway"], "10.22.0.1");
        if version.starts_with("0.") {
            assert_eq!(ip["version"], "4", "{version}: {r}");
        } else {
            assert!(ip.get("version").is_none(), "{version}: {r}");
        }
        assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0"}]));
        assert!(add.stderr.is_empty(), "stderr: {}", add.stderr);

        // Idempotent ADD.
        assert_eq!(
            call("ADD", "ctr-1", "eth0", &[], &conf).ok()["ips"],
            r["ips"]
        );

        let mut with_prev: Value = serde_json::from_str(&conf).unwrap();
        with_prev["prevResult"] = r.clone();
        let check = call("CHECK", "ctr-1", "eth0", &[], &with_prev.to_string());
        if version == "0.3.0" || version == "0.3.1" {
            assert!(check.err(1).contains("CHECK"));
        } else {
            assert_eq!(check.code, 0, "{}", check.stdout);
            assert!(check.stdout.is_empty(), "CHECK prints nothing on success");
        }

        let del = call("DEL", "ctr-1", "eth0", &[], &conf);
        assert_eq!(del.code, 0, "{}", del.stdout);
        assert!(del.stdout.is_empty());
        // DEL again, with no netns: still fine.
        let mut cmd = std::process::Command::new(support::BIN);
        cmd.env_clear()
            .env("CNI_COMMAND", "DEL")
            .env("CNI_CONTAINERID", "ctr-1")
            .env("CNI_IFNAME", "eth0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        assert_eq!(support::run(cmd, conf.as_bytes()).code, 0);

        if version >= "0.4.0" {
            let check = call("CHECK", "ctr-1", "eth0", &[], &with_prev.to_string());
            assert!(check.err(102).contains("holds no address"));
        }
    }
}

#[test]
fn dual_stack_result() {
    let s = Scratch::new();
    let conf = s.conf(
        "1.0.0",
        json!({"ranges": [
            [{"subnet": "10.30.0.0/24"}],
            [{"subnet": "fd30::/64", "rangeStart": "fd30::10", "rangeEnd": "fd30::20"}]
        ]}),
    );
    let r = call("ADD", "dual", "eth0", &[], &conf).ok();
    let ips = r["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2);
    assert!(ips[0]["address"].as_str().unwrap().starts_with("10.30.0."));
    let v6 = ips[1]["address"].as_str().unwrap();
    assert!(v6.starts_with("fd30::") && v6.ends_with("/64"), "{v6}");
    assert_eq!(ips[1]["gateway"], "fd30::1");
}

#[test]
fn gc_releases_exactly_what_is_not_listed() {
    let s = Scratch::new();
    let conf = s.conf("1.1.0", small_range());
    for id in ["keep-1", "keep-2", "leak-1", "leak-2"] {
        call("ADD", id, "eth0", &[], &conf).ok();
    }
    let mut gc: Value = serde_json::from_str(&conf).unwrap();
    // No list: nothing is released.
    assert_eq!(call("GC", "", "", &[], &gc.to_string()).code, 0);
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "keep-1", "ifname": "eth0"},
        {"containerID": "keep-2", "ifname": "eth0"}
    ]);
    let out = call("GC", "", "", &[], &gc.to_string());
    assert_eq!(out.code, 0, "{}", out.stdout);
    let mut prev: Value = serde_json::from_str(&conf).unwrap();
    for (id, alive) in [
        ("keep-1", true),
        ("keep-2", true),
        ("leak-1", false),
        ("leak-2", false),
    ] {
        // ADD of a kept attachment is idempotent, so it shows what it holds; a freed one
        // would get a new address, so look through CHECK instead.
        prev["prevResult"] = json!({"cniVersion": "1.1.0", "ips": []});
        let check = call("CHECK", id, "eth0", &[], &prev.to_string());
        let details = check.err(102);
        assert_eq!(
            details.contains("holds no address"),
            !alive,
            "{id}: {details}"
        );
    }
    // The older key works too.
    let mut gc2: Value = serde_json::from_str(&conf).unwrap();
    gc2["cni.dev/attachments"] = json!([{"containerID": "keep-1", "ifname": "eth0"}]);
    assert_eq!(call("GC", "", "", &[], &gc2.to_string()).code, 0);
    prev["prevResult"] = json!({"cniVersion": "1.1.0", "ips": []});
    assert!(call("CHECK", "keep-2", "eth0", &[], &prev.to_string())
        .err(102)
        .contains("holds no address"));
}

#[test]
fn status_reports_exhaustion_as_50() {
    let s = Scratch::new();
    let conf = s.conf("1.1.0", json!({"subnet": "10.40.0.0/29"}));
    assert_eq!(call("STATUS", "", "", &[], &conf).code, 0);
    // .1 is the gateway, .7 broadcast: .2 to .6 are five addresses.
    for i in 0..5 {
        call("ADD", &format!("c{i}"), "eth0", &[], &conf).ok();
    }
    let details = call("ADD", "c9", "eth0", &[], &conf).err(101);
    assert!(
        details.contains("10.40.0.0/29") && details.contains("5 addresses"),
        "{details}"
    );
    assert!(call("STATUS", "", "", &[], &conf)
        .err(50)
        .contains("no free address"));
    let old = s.conf("1.0.0", json!({"subnet": "10.40.0.0/29"}));
    call("STATUS", "", "", &[], &old).err(1);
    call("GC", "", "", &[], &old).err(1);
}

#[test]
fn cni_args_in_any_order_and_ip_requests() {
    let s = Scratch::new();
    let conf = s.conf(
        "1.0.0",
        json!({"subnet": "10.50.0.0/16", "rangeStart": "10.50.1.0", "rangeEnd": "10.50.1.255"}),
    );
    let args = "IgnoreUnknown=1;K8S_POD_NAME=web-0;IP=10.50.0.7;K8S_POD_NAMESPACE=prod;K8S_POD_INFRA_CONTAINER_ID=x;K8S_POD_UID=u1";
    let out = call("ADD", "a1", "eth0", &[("CNI_ARGS", args)], &conf);
    assert_eq!(out.ip(), "10.50.0.7");
    let log = std::fs::read_to_string(s.log_file()).unwrap();
    assert!(
        log.contains("prod/web-0") && log.contains("10.50.0.7/16"),
        "{log}"
    );
    // Same address for another container while the first holds it: try again later.
    let busy = call("ADD", "a2", "eth0", &[("CNI_ARGS", "IP=10.50.0.7")], &conf);
    assert!(busy.err(11).contains("10.50.0.7 is held by pod prod/web-0"));
    // runtimeConfig.ips and CNI_ARGS IP= are read together, as host-local reads them: the
    // same address from both counts once, two different ones for one range set are refused.
    let mut rc: Value = serde_json::from_str(&conf).unwrap();
    rc["runtimeConfig"] = json!({"ips": ["10.50.0.8/16"]});
    let out = call(
        "ADD",
        "a3",
        "eth0",
        &[("CNI_ARGS", "IP=10.50.0.8")],
        &rc.to_string(),
    );
    assert_eq!(out.ip(), "10.50.0.8");
    let d = call(
        "ADD",
        "a4",
        "eth0",
        &[("CNI_ARGS", "IP=10.50.0.9")],
        &rc.to_string(),
    )
    .err(7);
    assert!(d.contains("10.50.0.8") && d.contains("10.50.0.9"), "{d}");
    // Inside the dynamic range is fine too.
    let out = call("ADD", "a5", "eth0", &[("CNI_ARGS", "IP=10.50.1.77")], &conf);
    assert_eq!(out.ip(), "10.50.1.77");
}

#[test]
fn old_versions_answer_in_the_ip4_ip6_shape() {
    let s = Scratch::new();
    let ipam = json!({
        "ranges": [[{"subnet": "10.23.0.0/24"}], [{"subnet": "fd00:23::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd00::/8", "gw": "fd00:23::1"}],
    });
    // "" is what libcni writes for a single-plugin config without a version (Multus
    // delegates); absent and "" both mean 0.1.0.
    for (i, version) in ["", "0.1.0", "0.2.0", "absent"].into_iter().enumerate() {
        let mut conf: Value = serde_json::from_str(&s.conf(version, ipam.clone())).unwrap();
        if version == "absent" {
            conf.as_object_mut().unwrap().remove("cniVersion");
        }
        let id = format!("old-{i}");
        let r = call("ADD", &id, "eth0", &[], &conf.to_string()).ok();
        let expect_version = if version == "0.2.0" { "0.2.0" } else { "0.1.0" };
        assert_eq!(r["cniVersion"], expect_version, "{r}");
        assert!(r.get("ips").is_none(), "{r}");
        assert!(
            r["ip4"]["ip"].as_str().unwrap().starts_with("10.23.0."),
            "{r}"
        );
        assert_eq!(r["ip4"]["gateway"], "10.23.0.1");
        assert_eq!(r["ip4"]["routes"], json!([{"dst": "0.0.0.0/0"}]));
        assert!(r["ip6"]["ip"].as_str().unwrap().ends_with("/64"), "{r}");
        assert_eq!(
            r["ip6"]["routes"],
            json!([{"dst": "fd00::/8", "gw": "fd00:23::1"}])
        );
        assert_eq!(r["dns"], json!({}));
        call("DEL", &id, "eth0", &[], &conf.to_string()).quiet();
    }
    // Two range sets of one family have no place in ip4/ip6: refused, naming cniVersion.
    let two_v4 = s.conf(
        "0.2.0",
        json!({"ranges": [[{"subnet": "10.24.0.0/24"}], [{"subnet": "10.25.0.0/24"}]]}),
    );
    let d = call("ADD", "old-x", "eth0", &[], &two_v4).err(7);
    assert!(d.contains("cniVersion"), "{d}");
    // CHECK needs 0.4.0: the message is a sentence naming both versions.
    let out = call(
        "CHECK",
        "old-0",
        "eth0",
        &[],
        &s.conf("0.2.0", ipam.clone()),
    );
    let d = out.err(1);
    assert!(d.contains("CHECK needs cniVersion 0.4.0 or later"), "{d}");
    assert_eq!(out.json()["cniVersion"], "0.2.0");
}

#[test]
fn del_never_fails_over_the_version() {
    let s = Scratch::new();
    let conf = s.conf("1.0.0", small_range());
    let ip = call("ADD", "v1", "eth0", &[], &conf).ip();
    for version in ["9.9.9", "", "0.1.0"] {
        call("DEL", "v1", "eth0", &[], &s.conf(version, small_range())).quiet();
    }
    // The first DEL freed it; the address is free for the next container.
    let again = call(
        "ADD",
        "v2",
        "eth0",
        &[("CNI_ARGS", &format!("IP={ip}"))],
        &conf,
    );
    assert_eq!(again.ip(), ip);
}

#[test]
fn env_errors_are_code_4_and_write_nothing() {
    let s = Scratch::new();
    let conf = s.conf("1.0.0", small_range());
    assert!(call("ADD", "", "eth0", &[], &conf)
        .err(4)
        .contains("CNI_CONTAINERID"));
    assert!(call("ADD", "../../etc", "eth0", &[], &conf)
        .err(4)
        .contains("CNI_CONTAINERID"));
    assert!(call("ADD", "c1", "eth0/x", &[], &conf)
        .err(4)
        .contains("CNI_IFNAME"));
    assert!(call("ADD", "c1", "", &[], &conf)
        .err(4)
        .contains("CNI_IFNAME"));
    assert!(call("BOGUS", "c1", "eth0", &[], &conf)
        .err(4)
        .contains("CNI_COMMAND"));
    assert!(
        call("ADD", "c1", "eth0", &[("CNI_ARGS", "IP=1.2.3")], &conf)
            .err(4)
            .contains("1.2.3")
    );
    assert!(!s.data_dir().exists(), "a refused call created the store");
}

#[test]
fn config_errors_name_field_and_value() {
    let s = Scratch::new();
    let bad = s.conf("1.0.0", json!({"subnet": "10.60.0.1/24"}));
    let d = call("ADD", "c1", "eth0", &[], &bad).err(7);
    assert!(d.contains("subnet") && d.contains("10.60.0.1/24"), "{d}");
    let d = call(
        "ADD",
        "c1",
        "eth0",
        &[],
        "{\"cniVersion\": \"1.0.0\",\n  \"name\": }",
    )
    .err(6);
    assert!(d.contains("line 2") && d.contains("column"), "{d}");
    let d = call("ADD", "c1", "eth0", &[], &s.conf("0.5.0", small_range())).err(1);
    assert!(d.contains("0.5.0") && d.contains("1.1.0"), "{d}");
    call("ADD", "c1", "eth0", &[], "").err(6);
    assert!(!s.data_dir().exists(), "a refused call created the store");
}

#[test]
fn check_judges_only_the_addresses_kube_ipam_holds() {
    let s = Scratch::new();
    let conf = s.conf("1.0.0", small_range());
    let r = call("ADD", "k1", "eth0", &[], &conf).ok();
    let with_prev = |prev: Value| {
        let mut v: Value = serde_json::from_str(&conf).unwrap();
        v["prevResult"] = prev;
        v.to_string()
    };
    // The chain's result also lists an address another plugin added, and interfaces.
    let mut prev = r.clone();
    prev["ips"]
        .as_array_mut()
        .unwrap()
        .push(json!({"address": "fd00:99::5/64", "interface": 0}));
    prev["interfaces"] = json!([{"name": "eth0", "sandbox": "/var/run/netns/test"}]);
    call("CHECK", "k1", "eth0", &[], &with_prev(prev)).quiet();
    // prevResult without our address: a mismatch naming it.
    let ours = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let d = call(
        "CHECK",
        "k1",
        "eth0",
        &[],
        &with_prev(json!({"cniVersion": "1.0.0", "ips": [{"address": "fd00:99::5/64"}]})),
    )
    .err(102);
    assert!(d.contains(&ours), "{d}");
}

#[test]
fn routes_keep_their_1_1_0_fields_for_1_1_0_callers() {
    let s = Scratch::new();
    let ipam = json!({"subnet": "10.26.0.0/24", "routes": [
        {"dst": "10.0.0.0/8", "gw": "10.26.0.1", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100, "scope": 253}
    ]});
    let r = call("ADD", "r1", "eth0", &[], &s.conf("1.1.0", ipam.clone())).ok();
    assert_eq!(
        r["routes"],
        json!([{"dst": "10.0.0.0/8", "gw": "10.26.0.1", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100, "scope": 253}])
    );
    // Older callers do not know these fields.
    let r = call("ADD", "r2", "eth0", &[], &s.conf("1.0.0", ipam.clone())).ok();
    assert_eq!(
        r["routes"],
        json!([{"dst": "10.0.0.0/8", "gw": "10.26.0.1"}])
    );
    let mut bad = ipam;
    bad["routes"][0]["scope"] = json!(300);
    let d = call("ADD", "r3", "eth0", &[], &s.conf("1.1.0", bad)).err(7);
    assert!(d.contains("routes[0].scope") && d.contains("300"), "{d}");
}

#[test]
fn a_refused_add_writes_nothing() {
    let s = Scratch::new();
    let conf = s.conf(
        "1.0.0",
        json!({"subnet": "10.27.0.0/29", "resolvConf": s.path().join("missing-resolv.conf")}),
    );
    // Many times: were anything claimed before the refusal, the /29 would run out.
    for i in 0..8 {
        let d = call("ADD", &format!("w{i}"), "eth0", &[], &conf).err(5);
        assert!(d.contains("missing-resolv.conf"), "{d}");
    }
    let file = s.path().join("net.conf");
    std::fs::write(&file, &conf).unwrap();
    assert!(support::held(&file).is_empty());
}

#[test]
fn a_pod_name_that_is_no_kubernetes_name_is_a_call_without_a_pod() {
    let s = Scratch::new();
    let conf = s.conf(
        "1.0.0",
        json!({"subnet": "10.28.0.0/24", "stickyIPs": true}),
    );
    let args = [("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=My_Web")];
    let ip = call("ADD", "p1", "eth0", &args, &conf).ip();
    let log = std::fs::read_to_string(s.log_file()).unwrap();
    assert!(
        log.contains("WARN") && log.contains("My_Web") && log.contains("no Kubernetes pod"),
        "{log}"
    );
    call("DEL", "p1", "eth0", &args, &conf).quiet();
    // No pod, so no sticky binding: the address went back to the pool.
    let file = s.path().join("net.conf");
    std::fs::write(&file, &conf).unwrap();
    assert!(support::held(&file).is_empty(), "{ip} is still held");
}

#[test]
fn error_details_do_not_repeat_the_class() {
    let s = Scratch::new();
    let conf = s.conf("1.0.0", json!({"subnet": "10.29.0.0/29"}));
    let held = call("ADD", "d1", "eth0", &[], &conf).ip();
    let out = call(
        "ADD",
        "d2",
        "eth0",
        &[("CNI_ARGS", &format!("IP={held}"))],
        &conf,
    );
    out.err(11);
    let v = out.json();
    assert_eq!(v["msg"], "try again later");
    let details = v["details"].as_str().unwrap();
    assert!(!details.starts_with("try again later"), "{details}");
    assert!(details.contains(&held), "{details}");
    let out = call(
        "ADD",
        "d3",
        "eth0",
        &[],
        &s.conf("1.0.0", json!({"subnet": "10.29.0.1/29"})),
    );
    out.err(7);
    let details = out.json()["details"].as_str().unwrap().to_owned();
    assert!(details.starts_with("ipam.subnet = "), "{details}");
}
