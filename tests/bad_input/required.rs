//! Missing or empty required keys, and names that could climb out of the store.

use serde_json::{json, Value};

use super::case::*;
use super::support::Scratch;

pub fn cases(s: &Scratch, _prev: &[Value]) -> Vec<Case> {
    let mut c = Vec::new();
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
    c
}
