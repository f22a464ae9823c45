//! The environment of the call: malformed `CNI_*` variables and CNI_ARGS, error 4.

use serde_json::Value;

use super::case::*;
use super::support::Scratch;

pub fn cases(s: &Scratch, prev: &[Value]) -> Vec<Case> {
    let good = s.conf("1.0.0", good_ipam());
    let with_prev = |version: &str| {
        top(s, version, |v| {
            v["prevResult"] = prev[0].clone();
        })
    };
    let mut c = Vec::new();
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
    c
}

/// Bytes that are not UTF-8 in the `CNI_*` variables. Linux hands them over as they are; the
/// plugin must refuse them rather than read them with replacement characters, since two
/// different names would then become the same store key.
pub fn non_utf8_cases(s: &Scratch, _prev: &[Value]) -> Vec<Case> {
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
