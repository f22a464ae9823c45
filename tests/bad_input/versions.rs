//! Versions kube-ipam does not speak, and verbs a version lacks: error 1.

use serde_json::{json, Value};

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
    c
}
