//! Every way a network config can be wrong, each checked for its CNI code and for a message
//! that names the key path and the value, so that the user can find the line to fix.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::{check, parse};
use crate::error::{code, Error};

/// A valid single-range config with `ipam` keys replaced or added (`null` removes a key).
fn conf(ipam: Value) -> Vec<u8> {
    let mut base = json!({
        "type": "kube-ipam",
        "subnet": "10.188.0.0/16",
        "rangeStart": "10.188.1.0",
        "rangeEnd": "10.188.255.254",
        "gateway": "10.188.0.1",
    });
    merge(&mut base, ipam);
    json!({"cniVersion": "1.0.0", "name": "net", "type": "bridge", "ipam": base})
        .to_string()
        .into_bytes()
}

/// A config with the given `ranges` and no single-range keys.
fn ranges(ranges: Value) -> Vec<u8> {
    conf(
        json!({"subnet": null, "rangeStart": null, "rangeEnd": null, "gateway": null, "ranges": ranges}),
    )
}

fn merge(base: &mut Value, over: Value) {
    if let (Some(b), Value::Object(o)) = (base.as_object_mut(), over) {
        for (k, v) in o {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
}

fn top(over: Value) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(&conf(json!({}))).expect("json");
    merge(&mut doc, over);
    doc.to_string().into_bytes()
}

/// Asserts the config is rejected with `code`, naming `field` and `value`; returns the message.
#[track_caller]
fn rejected(stdin: &[u8], code: u32, field: &str, value: &str) -> String {
    let err = match parse(stdin) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert_eq!(err.code(), code, "{msg}");
    assert!(msg.contains(field), "message does not name {field}: {msg}");
    assert!(msg.contains(value), "message does not quote {value}: {msg}");
    if let Error::InvalidConfig { field: f, .. } = &err {
        assert_eq!(f, field, "{msg}");
    }
    // check() agrees and reports it too.
    assert!(
        check(stdin).iter().any(|e| e.to_string() == msg),
        "check() misses {msg}"
    );
    msg
}

#[track_caller]
fn invalid(stdin: &[u8], field: &str, value: &str) -> String {
    rejected(stdin, code::INVALID_CONFIG, field, value)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

// --- decoding -------------------------------------------------------------------------------

#[test]
fn malformed_json_is_decode_error_with_line_and_column() {
    let msg = rejected(
        b"{\"cniVersion\": \"1.0.0\",\n  \"name\": }",
        code::DECODE,
        "line 2 column",
        "network config",
    );
    assert!(msg.contains("line 2 column 11"), "{msg}");
}

#[test]
fn empty_and_blank_stdin_are_decode_errors() {
    rejected(b"", code::DECODE, "network config", "empty");
    rejected(b" \n\t", code::DECODE, "network config", "empty");
}

#[test]
fn non_utf8_is_decode_error() {
    rejected(b"{\"name\": \"\xff\"}", code::DECODE, "UTF-8", "offset 10");
}

#[test]
fn non_object_is_decode_error() {
    rejected(b"[1, 2]", code::DECODE, "JSON object", "array");
    rejected(b"null", code::DECODE, "JSON object", "null");
}

#[test]
fn byte_order_mark_is_ignored() {
    let mut stdin = "\u{feff}".as_bytes().to_vec();
    stdin.extend(conf(json!({})));
    assert!(parse(&stdin).is_ok());
}

// --- wrong types name the key path ------------------------------------------------------------

#[test]
fn wrong_types_name_the_key_path_and_value() {
    invalid(&conf(json!({"subnet": 5})), "ipam.subnet", "5");
    invalid(
        &conf(json!({"stickyIPs": "yes"})),
        "ipam.stickyIPs",
        "\"yes\"",
    );
    invalid(
        &conf(json!({"routes": {"dst": "0.0.0.0/0"}})),
        "ipam.routes",
        "dst",
    );
    invalid(
        &conf(json!({"etcdConfig": {"etcdURL": "http://a:2379", "dialTimeout": "3"}})),
        "ipam.etcdConfig.dialTimeout",
        "\"3\"",
    );
    invalid(
        &ranges(
            json!([[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24", "rangeStart": true}]]),
        ),
        "ipam.ranges[1][0].rangeStart",
        "true",
    );
    invalid(
        &ranges(json!("10.0.0.0/24")),
        "ipam.ranges",
        "\"10.0.0.0/24\"",
    );
    invalid(&top(json!({"name": ["a"]})), "name", "[\"a\"]");
    invalid(&top(json!({"ipam": "kube-ipam"})), "ipam", "\"kube-ipam\"");
    invalid(
        &top(json!({"runtimeConfig": {"ips": "10.0.0.1"}})),
        "runtimeConfig.ips",
        "10.0.0.1",
    );
    invalid(
        &top(json!({"cni.dev/valid-attachments": [{"containerID": 7, "ifname": "eth0"}]})),
        "cni.dev/valid-attachments[0].containerID",
        "7",
    );
}

#[test]
fn null_means_unset() {
    let c = parse(&conf(
        json!({"resolvConf": Value::Null, "logLevel": Value::Null}),
    ))
    .expect("valid");
    assert_eq!(c.ipam.log.level, "info");
    let mut doc: Value = serde_json::from_slice(&conf(json!({}))).expect("json");
    doc["ipam"]["dataDir"] = Value::Null;
    doc["prevResult"] = Value::Null;
    let c = parse(doc.to_string().as_bytes()).expect("valid");
    assert_eq!(
        c.ipam.data_dir,
        std::path::PathBuf::from(super::DEFAULT_DATA_DIR)
    );
    assert_eq!(c.prev_result, None);
}

// --- top level ------------------------------------------------------------------------------

#[test]
fn absent_or_empty_cni_version_is_0_1_0() {
    for v in [json!(null), json!("")] {
        let c = parse(&top(json!({ "cniVersion": v }))).unwrap();
        assert_eq!(c.cni_version, "0.1.0");
    }
    let mut doc: serde_json::Value = serde_json::from_slice(&top(json!({}))).unwrap();
    doc.as_object_mut().unwrap().remove("cniVersion");
    let c = parse(&serde_json::to_vec(&doc).unwrap()).unwrap();
    assert_eq!(c.cni_version, "0.1.0");
}

#[test]
fn name_is_required_and_limited_to_key_safe_characters() {
    invalid(&top(json!({"name": null})), "name", "(none)");
    let msg = invalid(&top(json!({"name": "k8s/pod net"})), "name", "k8s/pod net");
    assert!(msg.contains("[A-Za-z0-9_.-]"), "{msg}");
    invalid(&top(json!({"name": ".."})), "name", "\"..\"");
    // As libcni and host-local: the first character is a letter or a digit.
    for bad in ["-net", "_net", ".net"] {
        let msg = invalid(&top(json!({ "name": bad })), "name", bad);
        assert!(msg.contains("start with a letter or digit"), "{msg}");
    }
    assert!(parse(&top(json!({"name": "k8s-pod_network.v2"}))).is_ok());
}

#[test]
fn ipam_block_and_its_type_are_required() {
    invalid(&top(json!({"ipam": null})), "ipam", "(none)");
    invalid(&conf(json!({"type": null})), "ipam.type", "(none)");
}

// --- ranges ---------------------------------------------------------------------------------

#[test]
fn malformed_addresses_and_cidrs() {
    invalid(
        &conf(json!({"subnet": "10.188.0.0"})),
        "ipam.subnet",
        "10.188.0.0",
    );
    invalid(
        &conf(json!({"subnet": "10.188.0.0/33"})),
        "ipam.subnet",
        "10.188.0.0/33",
    );
    invalid(
        &conf(json!({"rangeStart": "10.188.1.x"})),
        "ipam.rangeStart",
        "10.188.1.x",
    );
    invalid(
        &conf(json!({"rangeEnd": "10.188.255.256"})),
        "ipam.rangeEnd",
        "10.188.255.256",
    );
    invalid(&conf(json!({"gateway": "gw"})), "ipam.gateway", "gw");
    invalid(
        &conf(json!({"fixedStart": "10.188.0.10", "fixedEnd": "10.188.0"})),
        "ipam.fixedEnd",
        "10.188.0",
    );
    invalid(
        &ranges(json!([[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/200"}]])),
        "ipam.ranges[1][0].subnet",
        "fd00::/200",
    );
}

#[test]
fn host_bits_in_subnet_are_rejected_with_a_suggestion() {
    let msg = invalid(
        &conf(json!({"subnet": "10.188.0.1/16"})),
        "ipam.subnet",
        "10.188.0.1/16",
    );
    assert!(
        msg.contains("10.188.0.1/16 has host bits set; did you mean 10.188.0.0/16"),
        "{msg}"
    );
    let msg = invalid(
        &ranges(json!([[{"subnet": "fd00::1/64"}]])),
        "ipam.ranges[0][0].subnet",
        "fd00::1/64",
    );
    assert!(msg.contains("did you mean fd00::/64"), "{msg}");
}

#[test]
fn subnets_too_small_to_allocate_from() {
    let only = |s: &str| ranges(json!([[{"subnet": s}]]));
    invalid(
        &only("10.0.0.0/31"),
        "ipam.ranges[0][0].subnet",
        "10.0.0.0/31",
    );
    invalid(
        &only("10.0.0.5/32"),
        "ipam.ranges[0][0].subnet",
        "10.0.0.5/32",
    );
    invalid(
        &only("fd00::/127"),
        "ipam.ranges[0][0].subnet",
        "fd00::/127",
    );
    let c = parse(&only("10.0.0.0/30")).expect("a /30 has two hosts");
    let r = &c.ipam.range_sets[0].ranges[0];
    assert_eq!(
        (r.range_start, r.range_end),
        (ip("10.0.0.1"), ip("10.0.0.2"))
    );
}

#[test]
fn addresses_outside_their_subnet() {
    for key in ["rangeStart", "rangeEnd", "gateway"] {
        let msg = invalid(
            &conf(json!({key: "10.189.0.5"})),
            &format!("ipam.{key}"),
            "10.189.0.5",
        );
        assert!(msg.contains("outside subnet 10.188.0.0/16"), "{msg}");
    }
    invalid(
        &conf(json!({"fixedStart": "10.187.0.10", "fixedEnd": "10.188.0.20"})),
        "ipam.fixedStart",
        "10.187.0.10",
    );
    invalid(
        &conf(json!({"fixedStart": "10.188.0.10", "fixedEnd": "10.189.0.20"})),
        "ipam.fixedEnd",
        "10.189.0.20",
    );
    invalid(
        &ranges(json!([[{"subnet": "fd00::/64", "rangeStart": "10.0.0.1"}]])),
        "ipam.ranges[0][0].rangeStart",
        "10.0.0.1",
    );
}

#[test]
fn network_and_broadcast_addresses_are_not_range_bounds() {
    let msg = invalid(
        &conf(json!({"rangeStart": "10.188.0.0"})),
        "ipam.rangeStart",
        "10.188.0.0",
    );
    assert!(msg.contains("network address"), "{msg}");
    let msg = invalid(
        &conf(json!({"rangeEnd": "10.188.255.255"})),
        "ipam.rangeEnd",
        "10.188.255.255",
    );
    assert!(msg.contains("broadcast address"), "{msg}");
}

#[test]
fn start_after_end() {
    let msg = invalid(
        &conf(json!({"rangeStart": "10.188.2.0", "rangeEnd": "10.188.1.0"})),
        "ipam.rangeStart",
        "10.188.2.0",
    );
    assert!(msg.contains("after rangeEnd 10.188.1.0"), "{msg}");
    let msg = invalid(
        &conf(json!({"fixedStart": "10.188.0.200", "fixedEnd": "10.188.0.100"})),
        "ipam.fixedStart",
        "10.188.0.200",
    );
    assert!(msg.contains("after fixedEnd 10.188.0.100"), "{msg}");
}

#[test]
fn fixed_zone_needs_both_ends() {
    invalid(
        &conf(json!({"fixedStart": "10.188.0.10"})),
        "ipam.fixedEnd",
        "(none)",
    );
    invalid(
        &conf(json!({"fixedEnd": "10.188.0.10"})),
        "ipam.fixedStart",
        "(none)",
    );
    invalid(
        &ranges(
            json!([[{"subnet": "10.0.0.0/16", "rangeStart": "10.0.1.0", "fixedEnd": "10.0.0.9"}]]),
        ),
        "ipam.ranges[0][0].fixedStart",
        "(none)",
    );
}

#[test]
fn fixed_zone_must_not_overlap_the_dynamic_range() {
    let msg = invalid(
        &conf(json!({"fixedStart": "10.188.0.10", "fixedEnd": "10.188.1.5"})),
        "ipam.fixedStart",
        "10.188.0.10-10.188.1.5",
    );
    assert!(msg.contains("10.188.1.0-10.188.255.254"), "{msg}");
    // With the dynamic range left to its default it covers the whole subnet: say so.
    let msg = invalid(
        &conf(
            json!({"rangeStart": null, "rangeEnd": null, "fixedStart": "10.188.0.10", "fixedEnd": "10.188.0.255"}),
        ),
        "ipam.fixedStart",
        "10.188.0.10-10.188.0.255",
    );
    assert!(msg.contains("defaults to the whole subnet"), "{msg}");
    // Touching is fine.
    let c = parse(&conf(
        json!({"fixedStart": "10.188.0.2", "fixedEnd": "10.188.0.255"}),
    ))
    .expect("adjacent zones");
    assert_eq!(
        c.ipam.range_sets[0].ranges[0].fixed,
        Some((ip("10.188.0.2"), ip("10.188.0.255")))
    );
}

#[test]
fn overlapping_dynamic_ranges_across_sets() {
    let msg = invalid(
        &ranges(json!([
            [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.20"}],
            [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.15", "rangeEnd": "10.0.0.30"}]
        ])),
        "ipam.ranges[1][0].rangeStart",
        "10.0.0.15-10.0.0.30",
    );
    assert!(
        msg.contains("ipam.ranges[0][0]") && msg.contains("10.0.0.10-10.0.0.20"),
        "{msg}"
    );
    // Same subnet, disjoint spans, different sets: allowed.
    assert!(parse(&ranges(json!([
        [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.20"}],
        [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.21", "rangeEnd": "10.0.0.30"}]
    ])))
    .is_ok());
}

#[test]
fn ranges_of_one_set_must_not_share_a_subnet() {
    let msg = invalid(
        &ranges(json!([[
            {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.20"},
            {"subnet": "10.0.0.0/25", "rangeStart": "10.0.0.100", "rangeEnd": "10.0.0.110"}
        ]])),
        "ipam.ranges[0][1].subnet",
        "10.0.0.0/25",
    );
    assert!(
        msg.contains("10.0.0.0/24") && msg.contains("ipam.ranges[0][0]"),
        "{msg}"
    );
}

#[test]
fn fixed_zone_must_not_overlap_another_range() {
    invalid(
        &ranges(json!([
            [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.10", "rangeEnd": "10.0.0.20"}],
            [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.100", "rangeEnd": "10.0.0.200",
              "fixedStart": "10.0.0.5", "fixedEnd": "10.0.0.12"}]
        ])),
        "ipam.ranges[1][0].fixedStart",
        "10.0.0.5-10.0.0.12",
    );
}

#[test]
fn one_range_set_holds_one_family() {
    let msg = invalid(
        &ranges(json!([[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]])),
        "ipam.ranges[0][1].subnet",
        "fd00::/64",
    );
    assert!(msg.contains("IPv6") && msg.contains("IPv4"), "{msg}");
}

#[test]
fn single_range_keys_come_first_then_ranges_as_in_host_local() {
    let c = parse(&conf(json!({"ranges": [[{"subnet": "10.1.0.0/24"}]]}))).unwrap();
    let subnets: Vec<String> = c
        .ipam
        .range_sets
        .iter()
        .map(|s| s.ranges[0].subnet.to_string())
        .collect();
    assert_eq!(subnets, ["10.188.0.0/16", "10.1.0.0/24"]);
    // Overlapping sets are refused, whatever form each came in.
    invalid(
        &conf(json!({"ranges": [[{"subnet": "10.188.5.0/24"}]]})),
        "ipam.ranges[0][0].rangeStart",
        "10.188.5",
    );
}

#[test]
fn ip_ranges_capability_comes_before_the_configured_ranges() {
    let stdin = top(json!({
        "runtimeConfig": {"ipRanges": [[{"subnet": "10.7.0.0/24", "rangeStart": "10.7.0.10"}]]}
    }));
    let c = parse(&stdin).unwrap();
    let first = &c.ipam.range_sets[0].ranges[0];
    assert_eq!(first.subnet.to_string(), "10.7.0.0/24");
    assert_eq!(first.range_start, ip("10.7.0.10"));
    assert_eq!(c.ipam.range_sets.len(), 2);
    invalid(
        &top(json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.7.0.1/24"}]]}})),
        "runtimeConfig.ipRanges[0][0].subnet",
        "10.7.0.1/24",
    );
}

#[test]
fn some_range_is_required() {
    invalid(
        &conf(json!({"subnet": null, "rangeStart": null, "rangeEnd": null, "gateway": null})),
        "ipam.subnet",
        "(none)",
    );
    invalid(
        &conf(
            json!({"subnet": null, "rangeStart": null, "rangeEnd": null, "gateway": null, "ranges": []}),
        ),
        "ipam.subnet",
        "(none)",
    );
    invalid(&conf(json!({"subnet": null})), "ipam.subnet", "(none)");
    invalid(&ranges(json!([[]])), "ipam.ranges[0]", "[]");
    invalid(
        &ranges(json!([[{"rangeStart": "10.0.0.5"}]])),
        "ipam.ranges[0][0].subnet",
        "(none)",
    );
}

// --- routes ---------------------------------------------------------------------------------

#[test]
fn routes_need_a_cidr_and_an_address() {
    invalid(
        &conf(json!({"routes": [{"dst": "0.0.0.0/0"}, {"dst": "default"}]})),
        "ipam.routes[1].dst",
        "default",
    );
    invalid(
        &conf(json!({"routes": [{"gw": "10.188.0.1"}]})),
        "ipam.routes[0].dst",
        "(none)",
    );
    invalid(
        &conf(json!({"routes": [{"dst": "0.0.0.0/0", "gw": "10.188.0.300"}]})),
        "ipam.routes[0].gw",
        "10.188.0.300",
    );
    invalid(
        &conf(json!({"routes": [{"dst": "10.1.2.3/8"}]})),
        "ipam.routes[0].dst",
        "did you mean 10.0.0.0/8",
    );
    invalid(
        &conf(json!({"routes": [{"dst": "::/0", "gw": "10.188.0.1"}]})),
        "ipam.routes[0].gw",
        "10.188.0.1",
    );
}

// --- etcd -----------------------------------------------------------------------------------

fn etcd(e: Value) -> Vec<u8> {
    conf(json!({"etcdConfig": e}))
}

#[test]
fn etcd_urls_must_be_http_or_https() {
    let msg = invalid(
        &etcd(json!({"etcdURL": "https://a:2379,ftp://b:2379"})),
        "ipam.etcdConfig.etcdURL",
        "ftp://b:2379",
    );
    assert!(msg.contains("http"), "{msg}");
    invalid(
        &etcd(json!({"etcdURL": "192.168.1.50:2379"})),
        "ipam.etcdConfig.etcdURL",
        "192.168.1.50:2379",
    );
    invalid(
        &etcd(json!({"etcdURL": "https://"})),
        "ipam.etcdConfig.etcdURL",
        "https://",
    );
    invalid(
        &etcd(json!({"etcdURL": "https://a:2379,,https://b:2379"})),
        "ipam.etcdConfig.etcdURL",
        "https://a:2379,,https://b:2379",
    );
    invalid(
        &etcd(json!({"etcdURL": "https://a:2379,"})),
        "ipam.etcdConfig.etcdURL",
        "https://a:2379,",
    );
    invalid(
        &etcd(json!({"etcdCertFile": "/c.pem"})),
        "ipam.etcdConfig.etcdURL",
        "(none)",
    );
}

#[test]
fn etcd_client_cert_and_key_come_together() {
    invalid(
        &etcd(json!({"etcdURL": "https://a:2379", "etcdCertFile": "/etc/ssl/etcd.pem"})),
        "ipam.etcdConfig.etcdKeyFile",
        "/etc/ssl/etcd.pem",
    );
    invalid(
        &etcd(json!({"etcdURL": "https://a:2379", "etcdKeyFile": "/etc/ssl/etcd-key.pem"})),
        "ipam.etcdConfig.etcdCertFile",
        "/etc/ssl/etcd-key.pem",
    );
}

#[test]
fn etcd_ca_spellings() {
    let c = parse(&etcd(
        json!({"etcdURL": "https://a:2379", "etcdTrustedCAFile": "/ca.pem"}),
    ))
    .expect("alias");
    assert_eq!(c.ipam.etcd.and_then(|e| e.ca_file), Some("/ca.pem".into()));
    assert!(parse(&etcd(
        json!({"etcdURL": "https://a:2379", "etcdTrustedCAFile": "/ca.pem", "etcdTrustedCAFileFile": "/ca.pem"})
    ))
    .is_ok());
    invalid(
        &etcd(
            json!({"etcdURL": "https://a:2379", "etcdTrustedCAFile": "/b.pem", "etcdTrustedCAFileFile": "/a.pem"}),
        ),
        "ipam.etcdConfig.etcdTrustedCAFile",
        "/b.pem",
    );
}

#[test]
fn etcd_timeouts_are_positive_seconds() {
    invalid(
        &etcd(json!({"etcdURL": "http://a:2379", "dialTimeout": 0})),
        "ipam.etcdConfig.dialTimeout",
        "0",
    );
    invalid(
        &etcd(json!({"etcdURL": "http://a:2379", "requestTimeout": -1})),
        "ipam.etcdConfig.requestTimeout",
        "-1",
    );
    invalid(
        &etcd(json!({"etcdURL": "http://a:2379", "requestTimeout": 1e9})),
        "ipam.etcdConfig.requestTimeout",
        "1000000000",
    );
}

// --- our own keys ---------------------------------------------------------------------------

#[test]
fn log_level_key_prefix_and_paths() {
    invalid(
        &conf(json!({"logLevel": "verbose"})),
        "ipam.logLevel",
        "verbose",
    );
    invalid(
        &conf(json!({"keyPrefix": "kube-ipam"})),
        "ipam.keyPrefix",
        "kube-ipam",
    );
    invalid(
        &conf(json!({"dataDir": "var/lib/x"})),
        "ipam.dataDir",
        "var/lib/x",
    );
    invalid(
        &conf(json!({"logFile": "ipam.log"})),
        "ipam.logFile",
        "ipam.log",
    );
    let c = parse(&conf(
        json!({"logLevel": "Trace", "keyPrefix": "/a/b", "stickyIPs": true}),
    ))
    .expect("valid");
    assert_eq!(c.ipam.log.level, "trace");
    assert_eq!(c.ipam.key_prefix, "/a/b");
    assert!(c.ipam.sticky_ips);
}

// --- requested IPs and GC -------------------------------------------------------------------

#[test]
fn requested_ips_parse_with_and_without_prefix() {
    let c = parse(&top(json!({
        "runtimeConfig": {"ips": ["10.188.0.20/16", "fd00::5"]},
        "args": {"cni": {"ips": ["10.188.0.21"]}}
    })))
    .expect("valid");
    assert_eq!(c.runtime_ips.len(), 2);
    assert_eq!(c.runtime_ips[0].address, ip("10.188.0.20"));
    assert_eq!(c.runtime_ips[0].prefix_len, Some(16));
    assert_eq!(c.runtime_ips[1].prefix_len, None);
    assert_eq!(c.args_ips[0].address, ip("10.188.0.21"));

    invalid(
        &top(json!({"runtimeConfig": {"ips": ["10.188.0.300"]}})),
        "runtimeConfig.ips[0]",
        "10.188.0.300",
    );
    invalid(
        &top(json!({"runtimeConfig": {"ips": ["10.0.0.1", "10.0.0.2/33"]}})),
        "runtimeConfig.ips[1]",
        "10.0.0.2/33",
    );
    invalid(
        &top(json!({"args": {"cni": {"ips": ["fd00::1/129"]}}})),
        "args.cni.ips[0]",
        "fd00::1/129",
    );
}

#[test]
fn gc_attachment_lists() {
    let att = |id: &str| json!([{"containerID": id, "ifname": "eth0"}]);
    let c = parse(&top(json!({"cni.dev/attachments": att("old")}))).expect("valid");
    let list = c.valid_attachments.expect("older key read");
    assert_eq!(list[0].container_id, "old");

    let c = parse(&top(
        json!({"cni.dev/attachments": att("old"), "cni.dev/valid-attachments": att("new")}),
    ))
    .expect("valid");
    assert_eq!(c.valid_attachments.expect("list")[0].container_id, "new");

    // The older list is not even read when the newer is there.
    assert!(parse(&top(
        json!({"cni.dev/attachments": "junk", "cni.dev/valid-attachments": []})
    ))
    .is_ok());

    let c = parse(&top(json!({"cni.dev/valid-attachments": []}))).expect("valid");
    assert_eq!(
        c.valid_attachments,
        Some(vec![]),
        "empty list: release everything"
    );
    let c = parse(&top(json!({}))).expect("valid");
    assert_eq!(c.valid_attachments, None, "no list: release nothing");

    invalid(
        &top(json!({"cni.dev/valid-attachments": [{"containerID": "c1"}]})),
        "cni.dev/valid-attachments[0].ifname",
        "(none)",
    );
}

// --- check ----------------------------------------------------------------------------------

#[test]
fn check_reports_every_problem() {
    let stdin = top(json!({
        "name": "bad/name",
        "ipam": {
            "type": "kube-ipam",
            "subnet": "10.0.0.1/24",
            "routes": [{"dst": "x"}],
            "etcdConfig": {"etcdURL": "tcp://a:1"},
            "logLevel": "chatty"
        },
        "runtimeConfig": {"ips": ["nope"]}
    }));
    let errs = check(&stdin);
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 6, "{text:#?}");
    assert!(errs.iter().all(|e| e.code() == code::INVALID_CONFIG));
    for needle in [
        "bad/name",
        "10.0.0.1/24",
        "routes[0].dst",
        "tcp://a:1",
        "chatty",
        "runtimeConfig.ips[0]",
    ] {
        assert!(
            text.iter().any(|t| t.contains(needle)),
            "{needle}: {text:#?}"
        );
    }
    assert!(check(&conf(json!({}))).is_empty());
}

#[test]
fn check_of_undecodable_input_is_one_decode_error() {
    let errs = check(b"{");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].code(), code::DECODE);
}

// --- excluded addresses ----------------------------------------------------------------------

#[test]
fn exclude_takes_addresses_and_cidrs_inside_the_subnet() {
    let c = parse(&conf(
        json!({"exclude": ["10.188.1.7", "10.188.2.0/24", " 10.188.3.3 "]}),
    ))
    .expect("valid");
    assert_eq!(
        c.ipam.range_sets[0].ranges[0].exclude,
        vec![
            (ip("10.188.1.7"), ip("10.188.1.7")),
            (ip("10.188.2.0"), ip("10.188.2.255")),
            (ip("10.188.3.3"), ip("10.188.3.3")),
        ]
    );
    let c = parse(&conf(
        json!({"subnet": Value::Null, "rangeStart": Value::Null,
        "rangeEnd": Value::Null, "gateway": Value::Null,
        "ranges": [[{"subnet": "fd00::/64", "exclude": ["fd00::100/120"]}]]}),
    ))
    .expect("valid");
    assert_eq!(
        c.ipam.range_sets[0].ranges[0].exclude,
        vec![(ip("fd00::100"), ip("fd00::1ff"))]
    );
}

#[test]
fn exclude_outside_the_subnet_or_malformed_is_refused() {
    invalid(
        &conf(json!({"exclude": ["10.189.0.1"]})),
        "ipam.exclude[0]",
        "10.189.0.1",
    );
    invalid(
        &conf(json!({"exclude": ["10.188.0.0/15"]})),
        "ipam.exclude[0]",
        "10.188.0.0/15",
    );
    invalid(
        &conf(json!({"exclude": ["10.188.1.1/16"]})),
        "ipam.exclude[0]",
        "10.188.1.1/16",
    );
    invalid(
        &conf(json!({"exclude": ["x", "10.188.0.5"]})),
        "ipam.exclude[0]",
        "x",
    );
    invalid(
        &conf(json!({"subnet": Value::Null, "rangeStart": Value::Null,
            "rangeEnd": Value::Null, "gateway": Value::Null, "exclude": ["10.1.0.1"],
            "ranges": [[{"subnet": "10.1.0.0/24"}]]})),
        "ipam.exclude",
        "10.1.0.1",
    );
    invalid(
        &conf(json!({"subnet": Value::Null, "rangeStart": Value::Null,
            "rangeEnd": Value::Null, "gateway": Value::Null,
            "ranges": [[{"subnet": "10.1.0.0/24", "exclude": ["10.2.0.1"]}]]})),
        "ipam.ranges[0][0].exclude[0]",
        "10.2.0.1",
    );
}
