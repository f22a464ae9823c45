//! Malformed input of every kind through the real binary, table driven: bad environment, stdin
//! that is not JSON, invalid configs, unsupported versions and refused address requests.
//!
//! Every case must give the spec's error JSON (and nothing else) on stdout with the right code,
//! a non-zero exit, details that name the field or value, no panic, and no change to the store.
//! The store is one embedded store that holds two attachments before the first bad call; after
//! the last one, both are still held exactly as before, and a range of five dynamic addresses
//! has exactly three left.

mod support;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::{Out, Scratch};

/// The network every case points at: 10.50.0.0/28 with gateway .1, five dynamic addresses
/// (.2 to .6) and a fixed zone (.10 to .12).
fn good_ipam() -> Value {
    json!({
        "subnet": "10.50.0.0/28",
        "gateway": "10.50.0.1",
        "rangeStart": "10.50.0.2",
        "rangeEnd": "10.50.0.6",
        "fixedStart": "10.50.0.10",
        "fixedEnd": "10.50.0.12",
    })
}

/// The two attachments that hold an address before the bad calls.
const HELD: [&str; 2] = ["good-a", "good-b"];

/// One malformed call and what it must be answered with.
struct Case {
    name: String,
    /// The whole environment of the call (the binary runs with a cleared environment).
    vars: Vec<(OsString, OsString)>,
    stdin: Vec<u8>,
    code: u64,
    /// Each must appear in `details`.
    details: Vec<String>,
}

impl Case {
    /// `ADD` of the already held attachment `good-a`: a call wrongly accepted returns what it
    /// holds instead of taking a new address, so the final count still tells refusals apart.
    fn new(name: impl Into<String>, code: u64, stdin: impl Into<Vec<u8>>) -> Case {
        let vars = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", HELD[0]),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/var/run/netns/test"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        Case {
            name: name.into(),
            vars,
            stdin: stdin.into(),
            code,
            details: Vec::new(),
        }
    }

    fn set(mut self, key: &str, value: impl AsRef<OsStr>) -> Case {
        self = self.unset(key);
        self.vars.push((key.into(), value.as_ref().to_owned()));
        self
    }

    fn unset(mut self, key: &str) -> Case {
        self.vars.retain(|(k, _)| k != key);
        self
    }

    fn cmd(self, command: &str) -> Case {
        self.set("CNI_COMMAND", command)
    }

    fn id(self, id: &str) -> Case {
        self.set("CNI_CONTAINERID", id)
    }

    fn ifname(self, ifname: &str) -> Case {
        self.set("CNI_IFNAME", ifname)
    }

    fn args(self, args: &str) -> Case {
        self.set("CNI_ARGS", args)
    }

    /// Raw bytes for a variable, e.g. invalid UTF-8.
    fn set_bytes(self, key: &str, value: &[u8]) -> Case {
        self.set(key, OsStr::from_bytes(value))
    }

    fn details(mut self, parts: &[&str]) -> Case {
        self.details.extend(parts.iter().map(|p| p.to_string()));
        self
    }

    fn run(&self) -> Out {
        let mut cmd = Command::new(support::BIN);
        cmd.env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        support::run(cmd, &self.stdin)
    }

    /// Everything wrong with the answer, empty when it is right.
    fn problems(&self, out: &Out) -> Vec<String> {
        let mut p = Vec::new();
        if out.stderr.contains("panicked") {
            p.push(format!("panicked: {}", out.stderr));
        }
        if out.code == 0 {
            p.push("exit code 0".to_owned());
        }
        // Nothing but the one JSON object, on one line.
        let body = out.stdout.strip_suffix('\n').unwrap_or(&out.stdout);
        if body.contains('\n') || body.is_empty() {
            p.push("stdout is not exactly one line".to_owned());
        }
        let v: Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => {
                p.push(format!("stdout is not JSON ({e})"));
                return p;
            }
        };
        if v["code"] != json!(self.code) {
            p.push(format!("code {} instead of {}", v["code"], self.code));
        }
        if !v["msg"].is_string() || !v["cniVersion"].is_string() {
            p.push("msg or cniVersion missing".to_owned());
        }
        let details = v["details"].as_str().unwrap_or_default();
        for part in &self.details {
            if !details.contains(part.as_str()) {
                p.push(format!("details lack {part:?}"));
            }
        }
        p
    }
}

/// The good config with `over` merged into its `ipam` block.
fn ipam_over(s: &Scratch, version: &str, over: Value) -> String {
    let mut ipam = good_ipam();
    support::merge(&mut ipam, over);
    s.conf(version, ipam)
}

/// The good config, changed at the top level by `f`.
fn top(s: &Scratch, version: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&s.conf(version, good_ipam())).unwrap();
    f(&mut v);
    v.to_string()
}

/// A config on the same store with `ranges` instead of the single-range keys.
fn ranges(s: &Scratch, ranges: Value) -> String {
    s.conf("1.0.0", json!({ "ranges": ranges }))
}

const MB: usize = 1 << 20;

fn cases(s: &Scratch, prev: &[Value]) -> Vec<Case> {
    let good = s.conf("1.0.0", good_ipam());
    let good_v: Value = serde_json::from_str(&good).unwrap();
    let with_prev = |version: &str| {
        top(s, version, |v| {
            v["prevResult"] = prev[0].clone();
        })
    };
    let mut c = Vec::new();

    // --- stdin that is not a JSON object: 6 -------------------------------------------------
    c.push(Case::new("empty stdin", 6, "").details(&["empty"]));
    c.push(Case::new("whitespace-only stdin", 6, " \n\t\r\n ").details(&["empty"]));
    c.push(
        Case::new(
            "truncated object",
            6,
            "{\"cniVersion\": \"1.0.0\",\n \"name\":",
        )
        .details(&["line 2", "column"]),
    );
    c.push(Case::new("trailing garbage", 6, format!("{good}x")).details(&["trailing"]));
    c.push(Case::new("two objects", 6, format!("{good}\n{good}")).details(&["line 2"]));
    c.push(Case::new("top-level array", 6, "[1, 2]").details(&["array"]));
    c.push(Case::new("top-level string", 6, "\"ADD\"").details(&["string"]));
    c.push(Case::new("top-level null", 6, "null").details(&["null"]));
    c.push(Case::new("single quotes", 6, "{'cniVersion': '1.0.0'}").details(&["line 1"]));
    c.push(Case::new("trailing comma", 6, "{\"cniVersion\": \"1.0.0\",}").details(&["column"]));
    c.push(Case::new("comment", 6, format!("// network\n{good}")).details(&["line 1", "column 1"]));
    c.push(Case::new("NUL byte", 6, &b"\0"[..]));
    c.push(
        Case::new(
            "number beyond f64",
            6,
            r#"{"cniVersion": "1.0.0", "name": "testnet", "ipam": {"logMaxSize": 1e400}}"#,
        )
        .details(&["number out of range"]),
    );
    c.push(Case::new("nesting 100k deep", 6, "[".repeat(100_000)).details(&["recursion limit"]));
    {
        // Invalid UTF-8 inside a string value of an otherwise good config.
        let mut bytes = good.clone().into_bytes();
        let at = good.find("testnet").unwrap();
        bytes[at] = 0xff;
        c.push(Case::new("non-UTF-8 byte in a string", 6, bytes).details(&["UTF-8"]));
        c.push(Case::new("lone 0xC0 0x80", 6, &b"\xc0\x80"[..]).details(&["UTF-8"]));
    }
    c.push(
        Case::new(
            "10 MB: JSON prefix and an unterminated string",
            6,
            format!(
                r#"{{"cniVersion":"1.0.0","name":"testnet","ipam":{{"type":"kube-ipam","subnet":"{}"#,
                "A".repeat(10 * MB)
            ),
        )
        .details(&["EOF"]),
    );
    c.push(
        Case::new(
            "10 MB subnet in complete JSON",
            7,
            ipam_over(s, "1.0.0", json!({"subnet": "A".repeat(10 * MB)})),
        )
        .details(&["ipam.subnet", "is not a CIDR"]),
    );
    c.push(
        Case::new("10 MB of ASCII garbage", 6, "garbage ".repeat(10 * MB / 8))
            .details(&["line 1", "column 1"]),
    );
    c.push(
        Case::new(
            "10 MB of binary garbage",
            6,
            (0..10 * MB)
                .map(|i| (i * 7 % 256) as u8)
                .collect::<Vec<u8>>(),
        )
        .details(&["UTF-8"]),
    );
    c.push(
        Case::new("17 MB: larger than the limit", 6, "{".repeat(17 * MB)).details(&["larger than"]),
    );

    // --- wrong types: 7 naming the key path -------------------------------------------------
    for (key, value) in [
        ("subnet", json!(10)),
        ("subnet", json!(["10.50.0.0/28"])),
        ("rangeStart", json!({"ip": "10.50.0.2"})),
        ("rangeEnd", json!(true)),
        ("routes", json!("0.0.0.0/0")),
        ("routes", json!({"dst": "0.0.0.0/0"})),
        ("etcdConfig", json!("http://127.0.0.1:2379")),
        ("etcdConfig", json!(["http://127.0.0.1:2379"])),
        ("ranges", json!({"subnet": "10.50.0.0/28"})),
        ("logMaxSize", json!("10")),
        ("logMaxSize", json!(-1)),
        ("logMaxSize", json!(1e30)),
        ("stickyIPs", json!("yes")),
        ("dataDir", json!(7)),
    ] {
        c.push(
            Case::new(
                format!("ipam.{key} = {value}"),
                7,
                ipam_over(s, "1.0.0", json!({ key: value })),
            )
            .details(&[&format!("ipam.{key}")]),
        );
    }
    c.push(
        Case::new(
            "ranges as a flat list",
            7,
            ranges(s, json!([{"subnet": "10.50.0.0/28"}])),
        )
        .details(&["ipam.ranges[0]"]),
    );
    c.push(
        Case::new(
            "route dst as a number",
            7,
            ipam_over(s, "1.0.0", json!({"routes": [{"dst": 0}]})),
        )
        .details(&["ipam.routes[0].dst"]),
    );
    c.push(
        Case::new(
            "ipam as a string",
            7,
            top(s, "1.0.0", |v| v["ipam"] = json!("kube-ipam")),
        )
        .details(&["ipam"]),
    );
    c.push(
        Case::new(
            "runtimeConfig.ips as a string",
            7,
            top(s, "1.0.0", |v| {
                v["runtimeConfig"] = json!({"ips": "10.50.0.10"})
            }),
        )
        .details(&["runtimeConfig.ips"]),
    );
    c.push(
        Case::new(
            "ipam.logMaxSize = u64::MAX",
            7,
            ipam_over(s, "1.0.0", json!({"logMaxSize": u64::MAX})),
        )
        .details(&["ipam.logMaxSize", "18446744073709551615"]),
    );
    c.push(
        Case::new(
            "etcd dialTimeout 1e308",
            7,
            ipam_over(
                s,
                "1.0.0",
                json!({"etcdConfig": {"etcdURL": "http://127.0.0.1:9", "dialTimeout": 1e308}}),
            ),
        )
        .details(&["ipam.etcdConfig.dialTimeout"]),
    );

    // --- missing or empty required keys ----------------------------------------------------
    // An absent or empty cniVersion is 0.1.0, as in libcni (tests/cni_protocol.rs).
    for key in ["name", "ipam"] {
        let stdin = top(s, "1.0.0", |v| {
            v.as_object_mut().unwrap().remove(key);
        });
        c.push(Case::new(format!("no {key}"), 7, stdin).details(&[key]));
    }
    c.push(
        Case::new(
            "cniVersion a number",
            7,
            top(s, "1.0.0", |v| v["cniVersion"] = json!(1.0)),
        )
        .details(&["cniVersion"]),
    );
    c.push(
        Case::new(
            "ipam.type empty",
            7,
            ipam_over(s, "1.0.0", json!({"type": ""})),
        )
        .details(&["ipam.type"]),
    );
    c.push(
        Case::new("no subnet nor ranges", 7, s.conf("1.0.0", json!({}))).details(&["ipam.subnet"]),
    );

    // --- addresses and ranges that cannot work ---------------------------------------------
    for (name, over, details) in [
        (
            "subnet without prefix",
            json!({"subnet": "10.50.0.0"}),
            vec!["ipam.subnet", "10.50.0.0"],
        ),
        (
            "subnet prefix 99",
            json!({"subnet": "10.50.0.0/99"}),
            vec!["ipam.subnet", "10.50.0.0/99"],
        ),
        (
            "subnet host bits",
            json!({"subnet": "10.50.0.5/28"}),
            vec!["ipam.subnet", "10.50.0.5/28", "host bits"],
        ),
        (
            "subnet /31",
            json!({"subnet": "10.50.0.0/31"}),
            vec!["ipam.subnet", "10.50.0.0/31"],
        ),
        (
            "subnet /32",
            json!({"subnet": "10.50.0.0/32"}),
            vec!["ipam.subnet", "10.50.0.0/32"],
        ),
        (
            "subnet 300.1.1.0/24",
            json!({"subnet": "300.1.1.0/24"}),
            vec!["ipam.subnet", "300.1.1.0/24"],
        ),
        (
            "IPv6 rangeStart in an IPv4 subnet",
            json!({"rangeStart": "fd00::2"}),
            vec!["ipam.rangeStart", "fd00::2"],
        ),
        (
            "IPv4 gateway in an IPv6 subnet",
            json!({"subnet": "fd50::/64", "gateway": "10.50.0.1", "rangeStart": null,
                   "rangeEnd": null, "fixedStart": null, "fixedEnd": null}),
            vec!["ipam.gateway", "10.50.0.1"],
        ),
        (
            "rangeStart after rangeEnd",
            json!({"rangeStart": "10.50.0.6", "rangeEnd": "10.50.0.2"}),
            vec!["ipam.rangeStart", "10.50.0.6"],
        ),
        (
            "rangeEnd is the broadcast address",
            json!({"rangeEnd": "10.50.0.15"}),
            vec!["ipam.rangeEnd", "10.50.0.15"],
        ),
        (
            "rangeStart is the network address",
            json!({"rangeStart": "10.50.0.0"}),
            vec!["ipam.rangeStart", "10.50.0.0"],
        ),
        (
            "rangeStart not an address",
            json!({"rangeStart": "10.50.0.x"}),
            vec!["ipam.rangeStart", "10.50.0.x"],
        ),
        (
            "rangeEnd outside the subnet",
            json!({"rangeEnd": "10.50.1.6"}),
            vec!["ipam.rangeEnd", "10.50.1.6"],
        ),
        (
            "fixed zone overlapping the dynamic range",
            json!({"fixedStart": "10.50.0.5", "fixedEnd": "10.50.0.11"}),
            vec!["ipam.fixedStart", "10.50.0.5-10.50.0.11"],
        ),
        (
            "fixedStart after fixedEnd",
            json!({"fixedStart": "10.50.0.12", "fixedEnd": "10.50.0.10"}),
            vec!["ipam.fixedStart", "10.50.0.12"],
        ),
        (
            "fixedStart without fixedEnd",
            json!({"fixedEnd": ""}),
            vec!["ipam.fixedEnd"],
        ),
        (
            "route dst with host bits",
            json!({"routes": [{"dst": "10.0.0.1/8"}]}),
            vec!["ipam.routes[0].dst", "10.0.0.1/8"],
        ),
        (
            "route gw of the other family",
            json!({"routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}),
            vec!["ipam.routes[0].gw", "fd00::1"],
        ),
        (
            "relative dataDir",
            json!({"dataDir": "data"}),
            vec!["ipam.dataDir", "data"],
        ),
        (
            "traversal dataDir",
            json!({"dataDir": "../../etc"}),
            vec!["ipam.dataDir", "../../etc"],
        ),
        (
            "relative logFile",
            json!({"logFile": "x/../kube-ipam.log"}),
            vec!["ipam.logFile"],
        ),
        (
            "keyPrefix without a slash",
            json!({"keyPrefix": "kube-ipam"}),
            vec!["ipam.keyPrefix", "kube-ipam"],
        ),
        (
            "unknown logLevel",
            json!({"logLevel": "loud"}),
            vec!["ipam.logLevel", "loud"],
        ),
    ] {
        c.push(Case::new(name, 7, ipam_over(s, "1.0.0", over)).details(&details));
    }
    for (name, sets, details) in [
        (
            "mixed families in one range set",
            json!([[{"subnet": "10.50.0.0/28"}, {"subnet": "fd50::/64"}]]),
            vec!["ipam.ranges[0][1].subnet", "fd50::/64", "IPv4"],
        ),
        (
            "empty range set",
            json!([[]]),
            vec!["ipam.ranges[0]", "empty"],
        ),
        (
            "overlapping subnets in one set",
            json!([[{"subnet": "10.50.0.0/24"}, {"subnet": "10.50.0.0/28"}]]),
            vec!["ipam.ranges[0][1].subnet", "10.50.0.0/28"],
        ),
        (
            "two sets sharing addresses",
            json!([[{"subnet": "10.50.0.0/28"}], [{"subnet": "10.50.0.0/28"}]]),
            vec!["ipam.ranges[1][0]"],
        ),
        (
            "range entry without subnet",
            json!([[{"rangeStart": "10.50.0.2"}]]),
            vec!["ipam.ranges[0][0].subnet"],
        ),
        (
            "IPv6 /127 in ranges",
            json!([[{"subnet": "fd50::/127"}]]),
            vec!["ipam.ranges[0][0].subnet", "fd50::/127"],
        ),
    ] {
        c.push(Case::new(name, 7, ranges(s, sets)).details(&details));
    }

    // --- names that could climb out of the store -------------------------------------------
    for name in ["../x", "..", ".", "a/b", "x y", "/etc"] {
        c.push(
            Case::new(
                format!("network name {name:?}"),
                7,
                top(s, "1.0.0", |v| v["name"] = json!(name)),
            )
            .details(&["name", name]),
        );
    }

    // --- etcd -------------------------------------------------------------------------------
    for (name, etcd, details) in [
        (
            "etcd URL ftp://",
            json!({"etcdURL": "ftp://127.0.0.1:2379"}),
            vec!["etcdURL", "ftp://127.0.0.1:2379"],
        ),
        (
            "etcd URL without scheme",
            json!({"etcdURL": "127.0.0.1:2379"}),
            vec!["etcdURL", "127.0.0.1:2379"],
        ),
        (
            "etcd URL without host",
            json!({"etcdURL": "http://"}),
            vec!["etcdURL", "http://"],
        ),
        (
            "etcd URL list with an empty entry",
            json!({"etcdURL": "http://127.0.0.1:9,,http://127.0.0.2:9"}),
            vec!["etcdURL"],
        ),
        ("etcdConfig without URL", json!({}), vec!["etcdURL"]),
        (
            "https etcd without CA",
            json!({"etcdURL": "https://127.0.0.1:9"}),
            vec!["etcdTrustedCAFileFile"],
        ),
        (
            "etcd mixing http and https",
            json!({"etcdURL": "http://127.0.0.1:9,https://127.0.0.2:9",
                   "etcdTrustedCAFileFile": "/nonexistent/ca.pem"}),
            vec!["http://", "https://"],
        ),
        (
            "etcd cert without key",
            json!({"etcdURL": "https://127.0.0.1:9", "etcdCertFile": "/x/c.pem",
                   "etcdTrustedCAFileFile": "/x/ca.pem"}),
            vec!["etcdKeyFile"],
        ),
        (
            "etcd CA under two contradicting keys",
            json!({"etcdURL": "https://127.0.0.1:9", "etcdTrustedCAFileFile": "/x/a.pem",
                   "etcdTrustedCAFile": "/x/b.pem"}),
            vec!["etcdTrustedCAFile", "/x/b.pem"],
        ),
        (
            "etcd requestTimeout 0",
            json!({"etcdURL": "http://127.0.0.1:9", "requestTimeout": 0}),
            vec!["requestTimeout"],
        ),
    ] {
        c.push(
            Case::new(
                name,
                7,
                ipam_over(s, "1.0.0", json!({ "etcdConfig": etcd })),
            )
            .details(&details),
        );
    }

    // --- addresses asked for by name: 7 ----------------------------------------------------
    let held_by = |i: usize| -> String {
        let a = prev[i]["ips"][0]["address"].as_str().unwrap_or_default();
        a.split('/').next().unwrap_or_default().to_owned()
    };
    let (a_ip, b_ip) = (held_by(0), held_by(1));
    // A free dynamic address: good-a asking for it by name is a repeat asking for another.
    let free = (2..=6)
        .map(|n| format!("10.50.0.{n}"))
        .find(|ip| *ip != a_ip && *ip != b_ip)
        .unwrap_or_default();
    c.push(
        Case::new(format!("CNI_ARGS IP={free} for good-a"), 7, good.clone())
            .args(&format!("IP={free}"))
            .details(&["CNI_ARGS IP", &free, &format!("already holds {a_ip}")]),
    );
    c.push(
        Case::new(format!("CNI_ARGS IP={free}/24 for good-a"), 7, good.clone())
            .args(&format!("IP={free}/24"))
            .details(&["CNI_ARGS IP", &free, &format!("already holds {a_ip}")]),
    );
    for (ip, details) in [
        ("10.99.0.5", vec!["CNI_ARGS IP", "10.99.0.5", "not in any"]),
        ("10.50.0.1", vec!["CNI_ARGS IP", "10.50.0.1", "gateway"]),
        ("10.50.0.0", vec!["CNI_ARGS IP", "10.50.0.0", "network"]),
        ("10.50.0.15", vec!["CNI_ARGS IP", "10.50.0.15", "broadcast"]),
        (
            "10.50.0.13",
            vec!["CNI_ARGS IP", "10.50.0.13", "fixed zone"],
        ),
        ("fd50::10", vec!["CNI_ARGS IP", "fd50::10"]),
        ("10.50.0.10,10.50.0.11", vec!["CNI_ARGS IP", "10.50.0.11"]),
    ] {
        c.push(
            Case::new(format!("CNI_ARGS IP={ip}"), 7, good.clone())
                .args(&format!("IP={ip}"))
                .details(&details),
        );
    }
    for (ips, details) in [
        (json!(["10.99.0.5"]), vec!["runtimeConfig.ips", "10.99.0.5"]),
        (
            json!(["10.50.0.4/28"]),
            vec!["runtimeConfig.ips", "10.50.0.4", "second address"],
        ),
        (
            json!(["10.50.0.300"]),
            vec!["runtimeConfig.ips[0]", "10.50.0.300"],
        ),
        (
            json!(["10.50.0.10/33"]),
            vec!["runtimeConfig.ips[0]", "10.50.0.10/33"],
        ),
        (json!([7]), vec!["runtimeConfig.ips"]),
        (
            json!(["10.50.0.10", "10.50.0.11"]),
            vec!["runtimeConfig.ips", "10.50.0.11", "second address"],
        ),
    ] {
        // A good CNI_ARGS IP is there too, and both sources are read together.
        let stdin = top(s, "1.0.0", |v| v["runtimeConfig"] = json!({ "ips": ips }));
        c.push(
            Case::new(format!("runtimeConfig.ips {ips}"), 7, stdin)
                .args("IP=10.50.0.11")
                .details(&details),
        );
    }
    c.push(
        Case::new(
            "args.cni.ips malformed",
            7,
            top(s, "1.0.0", |v| v["args"] = json!({"cni": {"ips": ["x"]}})),
        )
        .details(&["args.cni.ips[0]"]),
    );
    c.push(
        Case::new(
            "fresh container asking for an address another one holds",
            11,
            good.clone(),
        )
        .id("fresh-1")
        .args(&format!("IP={b_ip}"))
        .details(&[b_ip.as_str(), "good-b"]),
    );

    // --- malformed CNI_ARGS: 4 -------------------------------------------------------------
    for (args, value) in [
        ("IP=10.50.0.300", "10.50.0.300"),
        ("IP=10.50.0.10/33", "33"),
        ("IP=10.50.0.10/-1", "-1"),
        ("IP=abc", "abc"),
        ("IP=1.2.3", "1.2.3"),
        ("IgnoreUnknown=1;K8S_POD_NAME", "K8S_POD_NAME"),
        ("IP=10.50.0.10/", "10.50.0.10/"),
    ] {
        c.push(
            Case::new(format!("CNI_ARGS {args:?}"), 4, good.clone())
                .args(args)
                .details(&["CNI_ARGS", value]),
        );
    }

    // --- the environment: 4 ----------------------------------------------------------------
    for command in ["", "add", "BOGUS", "ADD ", "DEL;ADD"] {
        c.push(
            Case::new(format!("CNI_COMMAND {command:?}"), 4, good.clone())
                .cmd(command)
                .details(&["CNI_COMMAND"]),
        );
    }
    for command in ["ADD", "DEL", "CHECK"] {
        for var in ["CNI_CONTAINERID", "CNI_IFNAME"] {
            c.push(
                Case::new(format!("{command} without {var}"), 4, with_prev("1.0.0"))
                    .cmd(command)
                    .unset(var)
                    .details(&[var]),
            );
        }
    }
    for command in ["ADD", "CHECK"] {
        c.push(
            Case::new(
                format!("{command} without CNI_NETNS"),
                4,
                with_prev("1.0.0"),
            )
            .cmd(command)
            .unset("CNI_NETNS")
            .details(&["CNI_NETNS"]),
        );
    }
    let long_id = "a".repeat(1025);
    for id in [
        "../../etc",
        "a/b",
        "-x",
        ".hidden",
        "a b",
        "a\nb",
        "ctr:1",
        "ctr*",
        long_id.as_str(),
    ] {
        for command in ["ADD", "DEL"] {
            c.push(
                Case::new(format!("{command} container id {id:.20?}"), 4, good.clone())
                    .cmd(command)
                    .id(id)
                    .details(&["CNI_CONTAINERID"]),
            );
        }
    }
    for ifname in [
        "../x",
        "a/b",
        "..",
        ".",
        "eth0:1",
        "a b",
        "eth\t0",
        "0123456789abcdef",
    ] {
        for command in ["ADD", "DEL"] {
            c.push(
                Case::new(format!("{command} ifname {ifname:?}"), 4, good.clone())
                    .cmd(command)
                    .ifname(ifname)
                    .details(&["CNI_IFNAME"]),
            );
        }
    }

    // --- versions: 1 -----------------------------------------------------------------------
    for version in ["0.5.0", "9.9.9", "1.0", "1.0.0.0", "v1.0.0", " 1.0.0"] {
        c.push(
            Case::new(
                format!("cniVersion {version:?}"),
                1,
                s.conf(version, good_ipam()),
            )
            .details(&[version]),
        );
    }
    c.push(
        Case::new("CHECK with 0.3.1", 1, with_prev("0.3.1"))
            .cmd("CHECK")
            .details(&["CHECK"]),
    );
    c.push(
        Case::new("CHECK with 0.3.0", 1, with_prev("0.3.0"))
            .cmd("CHECK")
            .details(&["CHECK"]),
    );
    {
        // A GC that would release everything, were it not refused.
        let gc = top(s, "1.0.0", |v| v["cni.dev/valid-attachments"] = json!([]));
        c.push(Case::new("GC with 1.0.0", 1, gc).cmd("GC").details(&["GC"]));
    }
    c.push(
        Case::new("STATUS with 1.0.0", 1, good.clone())
            .cmd("STATUS")
            .details(&["STATUS"]),
    );
    c.push(
        Case::new("STATUS with 0.4.0", 1, s.conf("0.4.0", good_ipam()))
            .cmd("STATUS")
            .details(&["STATUS"]),
    );

    // --- DEL, CHECK and GC of held attachments that must not release anything --------------
    c.push(Case::new("DEL with broken JSON", 6, "{\"cniVersion\":").cmd("DEL"));
    c.push(
        Case::new("DEL with empty stdin", 6, "")
            .cmd("DEL")
            .details(&["empty"]),
    );
    c.push(
        Case::new(
            "DEL with host bits",
            7,
            ipam_over(s, "1.0.0", json!({"subnet": "10.50.0.5/28"})),
        )
        .cmd("DEL")
        .details(&["ipam.subnet"]),
    );
    c.push(
        Case::new(
            "DEL of good-b with a bad name",
            7,
            top(s, "1.0.0", |v| v["name"] = json!("../testnet")),
        )
        .cmd("DEL")
        .id(HELD[1])
        .details(&["name"]),
    );
    for (name, list) in [
        (
            "GC entry without ifname",
            json!([{"containerID": "good-a"}]),
        ),
        ("GC entry without containerID", json!([{"ifname": "eth0"}])),
        ("GC list as a string", json!("good-a")),
        ("GC list of numbers", json!([1, 2])),
    ] {
        let mut v = good_v.clone();
        v["cniVersion"] = json!("1.1.0");
        v["cni.dev/valid-attachments"] = list;
        c.push(
            Case::new(name, 7, v.to_string())
                .cmd("GC")
                .details(&["cni.dev/valid-attachments"]),
        );
    }
    c.push(
        Case::new("CHECK without prevResult", 6, good.clone())
            .cmd("CHECK")
            .details(&["prevResult"]),
    );
    c.push(
        Case::new(
            "CHECK with a prevResult without ips",
            6,
            top(s, "1.0.0", |v| {
                v["prevResult"] = json!({"cniVersion": "1.0.0"})
            }),
        )
        .cmd("CHECK")
        .details(&["prevResult"]),
    );
    c.push(
        Case::new(
            "CHECK with a malformed prevResult address",
            6,
            top(
                s,
                "1.0.0",
                |v| {
                    v["prevResult"] =
                        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.50.0.x/28"}]})
                },
            ),
        )
        .cmd("CHECK")
        .details(&["prevResult", "10.50.0.x/28"]),
    );
    c
}

/// Bytes that are not UTF-8 in the `CNI_*` variables. Linux hands them over as they are; the
/// plugin must refuse them rather than read them with replacement characters, since two
/// different names would then become the same store key.
fn non_utf8_cases(s: &Scratch, _prev: &[Value]) -> Vec<Case> {
    let good = s.conf("1.0.0", good_ipam());
    vec![
        Case::new("CNI_COMMAND non-UTF-8", 4, good.clone())
            .set_bytes("CNI_COMMAND", b"AD\xffD")
            .details(&["CNI_COMMAND"]),
        Case::new("container id non-UTF-8", 4, good.clone())
            .set_bytes("CNI_CONTAINERID", b"good-\xff")
            .details(&["CNI_CONTAINERID"]),
        Case::new("DEL container id non-UTF-8", 4, good.clone())
            .cmd("DEL")
            .set_bytes("CNI_CONTAINERID", b"good-a\xff")
            .details(&["CNI_CONTAINERID"]),
        Case::new("CNI_ARGS IP non-UTF-8", 4, good.clone())
            .set_bytes("CNI_ARGS", b"IP=10.50.0.\xff")
            .details(&["CNI_ARGS"]),
        // Read lossily, every invalid byte sequence would become the same pod name, so
        // distinct pods would share a pod record.
        Case::new("CNI_ARGS pod name non-UTF-8", 4, good.clone())
            .set_bytes(
                "CNI_ARGS",
                b"K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-\xff\xfe",
            )
            .details(&["CNI_ARGS"]),
        // Read lossily, "eth\xff" and "eth\xfe" would map to one owner key and share an
        // address.
        Case::new("ifname non-UTF-8", 4, good.clone())
            .set_bytes("CNI_IFNAME", b"eth\xff")
            .details(&["CNI_IFNAME"]),
    ]
}

/// Sets up the store, runs every case of `build`, then checks the store is as it was.
fn exercise(build: fn(&Scratch, &[Value]) -> Vec<Case>, min_cases: usize) {
    let s = Scratch::new();
    let good = s.conf("1.0.0", good_ipam());

    // The store before: two attachments, three of the five dynamic addresses free.
    let prev: Vec<Value> = HELD
        .iter()
        .map(|id| support::call("ADD", id, "eth0", &[], &good).ok())
        .collect();
    let held_ips: Vec<String> = HELD
        .iter()
        .map(|id| support::call("ADD", id, "eth0", &[], &good).ip())
        .collect();
    assert_ne!(held_ips[0], held_ips[1]);

    let cases = build(&s, &prev);
    assert!(cases.len() >= min_cases, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let out = case.run();
        let problems = case.problems(&out);
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n    stdout: {:.400}\n    stderr: {:.400}",
                case.name,
                problems.join("; "),
                out.stdout,
                out.stderr
            ));
        }
    }

    // The store after: both attachments held as before, ADD still idempotent, and exactly
    // the three free addresses left.
    let mut store = Vec::new();
    for (i, id) in HELD.iter().enumerate() {
        let mut check: Value = serde_json::from_str(&good).unwrap();
        check["prevResult"] = prev[i].clone();
        let out = support::call("CHECK", id, "eth0", &[], &check.to_string());
        if out.code != 0 || !out.stdout.is_empty() {
            store.push(format!("CHECK {id}: {} {}", out.stdout, out.stderr));
        }
        let again = support::call("ADD", id, "eth0", &[], &good);
        if again.code != 0 || again.ip() != held_ips[i] {
            store.push(format!("ADD {id} again: {}", again.stdout));
        }
    }
    let mut fresh = Vec::new();
    for i in 0..3 {
        let out = support::call("ADD", &format!("fill-{i}"), "eth0", &[], &good);
        if out.code == 0 {
            fresh.push(out.ip());
        } else {
            store.push(format!("ADD fill-{i} failed: {}", out.stdout));
        }
    }
    for ip in &fresh {
        if held_ips.contains(ip) {
            store.push(format!("{ip} handed out twice"));
        }
    }
    let last = support::call("ADD", "fill-3", "eth0", &[], &good);
    if last.code == 0 || last.json()["code"] != json!(101) {
        store.push(format!("a sixth address: {}", last.stdout));
    }

    assert!(
        failures.is_empty() && store.is_empty(),
        "{} of {} cases failed:\n{}\nstore changed: {:#?}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        store
    );
    eprintln!("{} malformed calls refused, store unchanged", cases.len());
}

#[test]
fn malformed_input_is_refused_with_the_right_code_and_changes_nothing() {
    exercise(cases, 40);
}

#[test]
fn non_utf8_environment_is_refused_and_changes_nothing() {
    exercise(non_utf8_cases, 6);
}
