//! Addresses asked for by name that cannot be given: error 7.

use serde_json::{json, Value};

use super::case::*;
use super::support::Scratch;

pub fn cases(s: &Scratch, prev: &[Value]) -> Vec<Case> {
    let good = s.conf("1.0.0", good_ipam());
    let mut c = Vec::new();
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
    c
}
