//! Values of the wrong type: error 7 naming the key path.

use serde_json::{json, Value};

use super::case::*;
use super::support::Scratch;

pub fn cases(s: &Scratch, _prev: &[Value]) -> Vec<Case> {
    let mut c = Vec::new();
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
    c
}
