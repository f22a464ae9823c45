//! The network config as users write it: the original plugin's examples, Multus and conflist
//! files, dual stack, defaults, and files with several mistakes at once.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use kube_ipam::config::{self, NetConf, Range, RequestedIp, Route};
use kube_ipam::error::code;
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).expect("fixture is JSON")
}

fn parse_fixture(name: &str) -> NetConf {
    config::parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What the CLI does with a file: find our plugin's config, then parse it.
fn locate_and_parse(name: &str) -> NetConf {
    let found = config::locate(&fixture_json(name)).unwrap_or_else(|| panic!("{name}: not found"));
    config::parse(found.to_string().as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("cidr")
}

fn path(s: &str) -> Option<PathBuf> {
    Some(PathBuf::from(s))
}

#[test]
fn original_single_range_with_etcd() {
    let c = parse_fixture("single-range-etcd.conf");
    assert_eq!(c.cni_version, "0.3.1");
    assert_eq!(c.name, "k8s-pod-network");
    assert_eq!(c.plugin_type, "macvlan");
    assert!(c.runtime_ips.is_empty() && c.args_ips.is_empty());
    assert_eq!(c.prev_result, None);
    assert_eq!(c.valid_attachments, None);

    let ipam = &c.ipam;
    assert_eq!(ipam.ipam_type, "kube-ipam");
    assert_eq!(ipam.range_sets.len(), 1);
    assert_eq!(
        ipam.range_sets[0].ranges,
        vec![Range {
            subnet: net("10.188.0.0/16"),
            range_start: ip("10.188.0.10"),
            range_end: ip("10.188.0.200"),
            gateway: Some(ip("10.188.0.1")),
            fixed: None,
            exclude: vec![],
        }]
    );
    assert_eq!(
        ipam.routes,
        vec![Route {
            dst: net("0.0.0.0/0"),
            gw: None,
            attrs: Default::default()
        }]
    );
    assert_eq!(ipam.resolv_conf, path("/etc/resolv.conf"));
    assert_eq!(ipam.kube_config, None);
    let etcd = ipam.etcd.as_ref().expect("etcd config");
    assert_eq!(etcd.endpoints, vec!["https://192.168.1.50:2379"]);
    assert_eq!(etcd.cert_file, path("/etc/kubernetes/ssl/etcd.pem"));
    assert_eq!(etcd.key_file, path("/etc/kubernetes/ssl/etcd-key.pem"));
    assert_eq!(etcd.ca_file, path("/etc/kubernetes/ssl/ca.pem"));
    assert_eq!(etcd.connect_timeout, config::DEFAULT_DIAL_TIMEOUT);
    assert_eq!(etcd.request_timeout, config::DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(ipam.data_dir, PathBuf::from(config::DEFAULT_DATA_DIR));
    assert_eq!(ipam.log.file, PathBuf::from(config::DEFAULT_LOG_FILE));
    assert_eq!(ipam.log.level, "info");
    assert!(!ipam.sticky_ips);
    assert_eq!(ipam.key_prefix, "/kube-ipam");
    assert!(config::check(&fixture("single-range-etcd.conf")).is_empty());
}

#[test]
fn original_fixed_zone_with_three_etcd_endpoints() {
    let c = parse_fixture("fixed-zone-etcd.conf");
    assert_eq!(
        c.ipam.range_sets[0].ranges,
        vec![Range {
            subnet: net("10.188.0.0/16"),
            range_start: ip("10.188.1.0"),
            range_end: ip("10.188.255.254"),
            gateway: Some(ip("10.188.0.1")),
            fixed: Some((ip("10.188.0.10"), ip("10.188.0.255"))),
            exclude: vec![],
        }]
    );
    let etcd = c.ipam.etcd.as_ref().expect("etcd config");
    assert_eq!(
        etcd.endpoints,
        vec![
            "https://192.168.1.50:2379",
            "https://192.168.1.51:2379",
            "https://192.168.1.52:2379"
        ]
    );
    assert_eq!(etcd.ca_file, path("/etc/kubernetes/ssl/ca.pem"));
    assert_eq!(
        c.ipam.kube_config,
        path("/etc/kubernetes/pki/kubectl.kubeconfig")
    );
}

#[test]
fn multus_delegate_with_kubeconfig_at_ipam_level() {
    let found = config::locate(&fixture_json("multus-delegates.conf")).expect("delegate found");
    assert_eq!(found["name"], "k8s-pod-network");
    assert_eq!(found["type"], "macvlan");
    let c = config::parse(found.to_string().as_bytes()).expect("delegate parses");
    assert_eq!(
        c.ipam.kube_config,
        path("/etc/kubernetes/pki/kubectl.kubeconfig")
    );
    assert_eq!(c.name, "k8s-pod-network");
    assert_eq!(
        c.ipam.range_sets[0].ranges[0].fixed,
        Some((ip("10.188.0.10"), ip("10.188.0.255")))
    );
    assert_eq!(
        c.ipam.etcd.as_ref().map(|e| e.endpoints.len()),
        Some(3),
        "etcd endpoints"
    );
}

#[test]
fn multus_conflist_with_nested_conflist_delegates() {
    let found = config::locate(&fixture_json("multus-nested.conflist")).expect("found");
    // The delegate list's own name and version, not Multus's.
    assert_eq!(found["name"], "storage-net");
    assert_eq!(found["cniVersion"], "1.0.0");
    assert_eq!(found["type"], "bridge");
    let c = locate_and_parse("multus-nested.conflist");
    assert_eq!(c.ipam.range_sets[0].ranges[0].subnet, net("10.200.0.0/24"));
}

#[test]
fn dual_stack_range_sets() {
    let c = parse_fixture("dual-stack.conf");
    let sets = &c.ipam.range_sets;
    assert_eq!(sets.len(), 3);
    assert_eq!(
        sets[0].ranges,
        vec![
            Range {
                subnet: net("10.10.0.0/24"),
                range_start: ip("10.10.0.100"),
                range_end: ip("10.10.0.200"),
                gateway: Some(ip("10.10.0.254")),
                fixed: None,
                exclude: vec![],
            },
            Range {
                subnet: net("10.10.1.0/24"),
                range_start: ip("10.10.1.1"),
                range_end: ip("10.10.1.254"),
                gateway: Some(ip("10.10.1.1")),
                fixed: None,
                exclude: vec![],
            },
        ]
    );
    assert_eq!(
        sets[1].ranges,
        vec![Range {
            subnet: net("fd00:10::/64"),
            range_start: ip("fd00:10::100"),
            range_end: ip("fd00:10::1ff"),
            gateway: Some(ip("fd00:10::1")),
            fixed: Some((ip("fd00:10::10"), ip("fd00:10::20"))),
            exclude: vec![],
        }]
    );
    // IPv6 has no broadcast: the default range runs to the last address.
    assert_eq!(
        sets[2].ranges,
        vec![Range {
            subnet: net("fd00:20::/120"),
            range_start: ip("fd00:20::1"),
            range_end: ip("fd00:20::ff"),
            gateway: Some(ip("fd00:20::1")),
            fixed: None,
            exclude: vec![],
        }]
    );
    assert_eq!(
        c.ipam.routes,
        vec![
            Route {
                dst: net("0.0.0.0/0"),
                gw: None,
                attrs: Default::default()
            },
            Route {
                dst: net("::/0"),
                gw: Some(ip("fd00:10::1")),
                attrs: Default::default()
            },
            Route {
                dst: net("192.168.0.0/16"),
                gw: Some(ip("10.10.0.254")),
                attrs: Default::default()
            },
        ]
    );
    assert_eq!(c.ipam.etcd, None, "no etcdConfig: embedded store");
}

#[test]
fn conflist_carries_list_name_and_version_into_the_plugin() {
    let found = config::locate(&fixture_json("bridge.conflist")).expect("found");
    assert_eq!(found["name"], "pods");
    assert_eq!(found["cniVersion"], "1.1.0");
    assert_eq!(found["type"], "bridge");
    assert!(found.get("plugins").is_none());
    let c = locate_and_parse("bridge.conflist");
    assert_eq!(c.name, "pods");
    assert_eq!(c.cni_version, "1.1.0");
    assert!(c.ipam.sticky_ips);
    assert_eq!(c.ipam.range_sets[0].ranges[0].subnet, net("10.244.0.0/16"));
}

#[test]
fn locate_finds_plain_config_and_nothing_elsewhere() {
    let plain = fixture_json("defaults.conf");
    assert_eq!(config::locate(&plain), Some(plain.clone()));
    let other = serde_json::json!({
        "cniVersion": "1.0.0", "name": "x",
        "plugins": [{"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"}}],
        "delegates": [{"type": "flannel"}, 5, "text"]
    });
    assert_eq!(config::locate(&other), None);
    assert_eq!(config::locate(&serde_json::json!([1, 2])), None);
}

#[test]
fn host_local_defaults_and_our_defaults() {
    let c = parse_fixture("defaults.conf");
    assert_eq!(
        c.ipam.range_sets[0].ranges,
        vec![Range {
            subnet: net("10.22.0.0/24"),
            range_start: ip("10.22.0.1"),
            range_end: ip("10.22.0.254"),
            gateway: Some(ip("10.22.0.1")),
            fixed: None,
            exclude: vec![],
        }]
    );
    assert_eq!(c.ipam.data_dir, PathBuf::from("/var/lib/cni/kube-ipam"));
    assert_eq!(c.ipam.log.file, PathBuf::from("/var/log/kube-ipam.log"));
    assert_eq!(c.ipam.log.level, "info");
    assert_eq!(c.ipam.key_prefix, "/kube-ipam");
    assert!(!c.ipam.sticky_ips);
    assert_eq!(c.ipam.etcd, None);
    assert_eq!(c.ipam.kube_config, None);
    assert_eq!(c.ipam.resolv_conf, None);
    assert!(c.ipam.routes.is_empty());
}

#[test]
fn kubeconfig_inside_etcd_config() {
    let c = parse_fixture("kubeconfig-in-etcd.conf");
    assert_eq!(
        c.ipam.kube_config,
        path("/etc/kubernetes/kubelet.kubeconfig")
    );
    let etcd = c.ipam.etcd.as_ref().expect("etcd");
    assert_eq!(
        etcd.endpoints,
        vec!["http://127.0.0.1:2379", "http://127.0.0.2:2379"]
    );
    assert_eq!(
        etcd.ca_file,
        path("/etc/etcd/ca.pem"),
        "etcdTrustedCAFile alias"
    );
    assert_eq!(etcd.cert_file, None);
    assert_eq!(etcd.connect_timeout, Duration::from_secs(2));
    assert_eq!(etcd.request_timeout, Duration::from_millis(7500));

    // The ipam-level key wins over the one inside etcdConfig.
    let mut doc = fixture_json("kubeconfig-in-etcd.conf");
    doc["ipam"]["kubeConfig"] = "/root/.kube/config".into();
    let c = config::parse(doc.to_string().as_bytes()).expect("parses");
    assert_eq!(c.ipam.kube_config, path("/root/.kube/config"));
}

#[test]
fn unknown_keys_are_tolerated_everywhere() {
    let c = parse_fixture("unknown-keys.conf");
    assert_eq!(c.name, "tolerant.net_1");
    assert_eq!(
        c.runtime_ips,
        vec![
            RequestedIp {
                address: ip("10.30.0.20"),
                prefix_len: Some(24)
            },
            RequestedIp {
                address: ip("fd30::20"),
                prefix_len: None
            },
        ]
    );
    assert_eq!(
        c.args_ips,
        vec![RequestedIp {
            address: ip("10.30.0.21"),
            prefix_len: None
        }]
    );
    let gc = c.valid_attachments.as_ref().expect("attachments");
    assert_eq!(gc.len(), 1);
    assert_eq!(
        (gc[0].container_id.as_str(), gc[0].ifname.as_str()),
        ("c1", "eth0")
    );
    let prev = c.prev_result.as_ref().expect("prevResult kept");
    assert_eq!(prev["ips"][0]["address"], "10.30.0.20/24");
    assert!(prev["extra"].is_null(), "prevResult kept as written");
    assert_eq!(c.ipam.range_sets.len(), 2);
    assert_eq!(
        c.ipam.range_sets[0].ranges[0].gateway,
        Some(ip("10.30.0.1")),
        "an empty gateway string means unset, as in Go"
    );
    assert_eq!(c.ipam.log.level, "debug");
    assert_eq!(c.ipam.key_prefix, "/clusters/a");
    assert_eq!(c.ipam.data_dir, PathBuf::from("/var/lib/kube-ipam-test"));
    assert_eq!(c.ipam.log.file, PathBuf::from("/tmp/kube-ipam-test.log"));
    let etcd = c.ipam.etcd.as_ref().expect("etcd");
    assert_eq!(
        (etcd.cert_file.as_ref(), etcd.key_file.as_ref()),
        (None, None)
    );
}

#[test]
fn check_lists_every_problem_of_a_file() {
    let errs = config::check(&fixture("many-problems.conf"));
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        errs.iter().all(|e| e.code() == code::INVALID_CONFIG),
        "{text:#?}"
    );
    let expect = [
        ("name", "bad name"),
        ("ipam.ranges[0][0].subnet", "did you mean 10.1.0.0/24"),
        ("ipam.ranges[0][1].rangeStart", "10.2.0.50"),
        ("ipam.ranges[0][2].subnet", "fd00::/64"),
        ("ipam.ranges[1][0].fixedEnd", "required"),
        ("ipam.routes[0].dst", "default"),
        ("ipam.etcdConfig.etcdURL", "etcd.local:2379"),
        ("ipam.logLevel", "loud"),
        ("ipam.keyPrefix", "kube-ipam"),
    ];
    for (field, value) in expect {
        assert!(
            text.iter().any(|t| t.contains(field) && t.contains(value)),
            "no error naming {field} and {value}: {text:#?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{text:#?}");
    // parse reports the first of them.
    let first = config::parse(&fixture("many-problems.conf")).expect_err("invalid");
    assert_eq!(first.to_string(), text[0]);
}

#[test]
fn every_fixture_passes_check_except_the_broken_one() {
    for name in [
        "single-range-etcd.conf",
        "fixed-zone-etcd.conf",
        "dual-stack.conf",
        "defaults.conf",
        "kubeconfig-in-etcd.conf",
        "unknown-keys.conf",
    ] {
        let errs = config::check(&fixture(name));
        assert!(errs.is_empty(), "{name}: {errs:?}");
    }
    for name in [
        "multus-delegates.conf",
        "multus-nested.conflist",
        "bridge.conflist",
    ] {
        let found = config::locate(&fixture_json(name)).expect("found");
        let errs = config::check(found.to_string().as_bytes());
        assert!(errs.is_empty(), "{name}: {errs:?}");
    }
}
