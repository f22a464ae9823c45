//! DEL, CHECK and GC of held attachments that must not release anything.

use serde_json::{json, Value};

use super::case::*;
use super::support::Scratch;

pub fn cases(s: &Scratch, _prev: &[Value]) -> Vec<Case> {
    let good = s.conf("1.0.0", good_ipam());
    let good_v: Value = serde_json::from_str(&good).unwrap();
    let mut c = Vec::new();
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
