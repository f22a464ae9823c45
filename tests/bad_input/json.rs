//! Stdin that is not one JSON object: error 6 naming where.

use serde_json::{json, Value};

use super::case::*;
use super::support::Scratch;

pub fn cases(s: &Scratch, _prev: &[Value]) -> Vec<Case> {
    let good = s.conf("1.0.0", good_ipam());
    let mut c = Vec::new();
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
    c
}
